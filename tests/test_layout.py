"""The layout's rules, read from the source: each room of the pipeline imports only the rooms
before it on the data's path, nothing imports a command-line module, and no function outside
the tests grows past 60 lines. docs/layout.md explains the rooms; this table is what is checked."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Modules every room may use: the package, its errors, redaction, network time limits, plain
#: JSON and the demo's paths.
BASE = {"pipeline", "errors", "redact", "network", "plain", "demo"}
_MODELS = {"base", "geo", "inputs", "quality", "models"}
#: The rooms of ``pipeline/`` and those each may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "geo": {"base"},
    "inputs": {"base", "geo"},
    "quality": {"base", "geo"},
    "models": {"base", "geo", "quality"},
    "product": {"base", "geo", "inputs", "quality"},
    "run": _MODELS | {"product"},
    "protocol": _MODELS,
    "train": _MODELS | {"protocol"},
    "evaluation": _MODELS | {"protocol"},
    "explain": _MODELS | {"product"},
}
MAX_FUNCTION_LINES = 60


def sources(*folders: str) -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) of every Python file below the folders."""
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts).removesuffix(".__init__"), path


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def room(module: str) -> str:
    """The room of a ``pipeline`` module."""
    parts = module.split(".")
    return "base" if parts[-1] in BASE and len(parts) <= 2 else parts[1]


def is_cli(module: str) -> bool:
    """``flows.region`` and the like: a module run with ``python -m`` (helpers start with _)."""
    parts = module.split(".")
    return parts[0] == "flows" and len(parts) == 2 and not parts[1].startswith("_")


def is_benchmark(module: str) -> bool:
    """A script under ``benchmarks/`` (its shared helpers start with _)."""
    parts = module.split(".")
    return parts[0] == "benchmarks" and len(parts) == 2 and not parts[1].startswith("_")


def own(module: str) -> set[str]:
    """The modules of this project among those ``module`` names (``from x import y`` names both
    ``x`` and ``x.y``; only the existing ones count)."""
    top = module.split(".")[0]
    if top not in {"pipeline", "flows", "benchmarks"}:
        return set()
    path = ROOT.joinpath(*module.split("."))
    return {module} if path.with_suffix(".py").exists() or path.is_dir() else set()


def test_every_pipeline_module_lives_in_a_room():
    homeless = [m for m, _ in sources("pipeline") if room(m) not in ALLOWED]
    assert not homeless, f"modules outside the rooms of tests/test_layout.py: {homeless}"


def test_rooms_import_only_the_rooms_below_them():
    wrong = []
    for module, path in sources("pipeline"):
        for target in set().union(*map(own, imported(path))):
            if not target.startswith("pipeline"):
                wrong.append(f"{module} imports {target}")
            elif room(target) not in ALLOWED[room(module)] | {room(module)}:
                wrong.append(f"{module} ({room(module)}) imports {target} ({room(target)})")
    assert not wrong, "\n".join(sorted(wrong))


def test_nothing_imports_a_command_line_module_or_another_benchmark():
    wrong = []
    for module, path in sources("pipeline", "flows", "benchmarks"):
        for target in set().union(*map(own, imported(path))):
            if is_cli(target):
                wrong.append(f"{module} imports the command line {target}")
            elif is_benchmark(module) and is_benchmark(target):
                wrong.append(f"{module} imports the benchmark {target}")
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("folder", ["pipeline", "flows", "benchmarks", "examples", "scripts"])
def test_no_function_is_longer_than_sixty_lines(folder):
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)"
        for _, path in sources(folder)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (lines := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES
    ]
    assert not long, "\n".join(long)


def test_the_rules_catch_what_they_forbid(tmp_path):
    """The checks above would see a violation: an upward import and a CLI import."""
    source = tmp_path / "bad.py"
    source.write_text("from pipeline.run.plan import Plan\nimport flows.region\n")
    found = set().union(*map(own, imported(source)))
    assert "pipeline.run.plan" in found and is_cli("flows.region")
    assert room("pipeline.run.plan") not in ALLOWED["geo"]
    assert room("pipeline.errors") == "base" and room("pipeline.geo.grid") == "geo"
