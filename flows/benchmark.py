"""Benchmark registered models by the Wald protocol on a STAC AOI or local scenes.

    python -m flows.benchmark                                  # the demo, every shipped model
    python -m flows.benchmark --steps 5 --rgb-models bicubic difffusr --fusion-models
    python -m flows.benchmark --scenes scene1.tif scene2.tif --out output/bench

Each clear patch of the 10 m composite (or scene) is degraded ×4 and brought back by every
model; the tables (markdown, CSV) give mean ± std over the patches, the figures one patch.
docs/benchmarks.md describes the protocol and the outputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from flows._cli import OneLineErrors, run_command
from flows._models import STAGES, dest, learned, takers
from flows._training import (
    SENTINEL_OPTIONS,
    add_runtime_options,
    add_sentinel_options,
    positive,
    runtime,
    sentinel_query,
)
from pipeline.errors import OutputError, UserError, reason
from pipeline.evaluation.benchmark import run_benchmark
from pipeline.evaluation.data import (
    EvaluationSet,
    check_patch,
    scene_patches,
    stac_patches,
)
from pipeline.evaluation.figures import write_figures
from pipeline.evaluation.report import markdown, summarize, write_csv
from pipeline.geo.bands import SCALE
from pipeline.inputs.catalog import is_demo_catalog
from pipeline.models import Option, get_fusion_model, get_rgb_model
from pipeline.models.base import flag_of
from pipeline.models.published import default_weights, describe, name_of, names
from pipeline.protocol.wald import FUSION_INPUT, RGB_INPUT

#: Each stage's reference model, listed first in the tables.
REFERENCE = "bicubic"
#: What ``--rgb-models`` and ``--fusion-models`` choose from.
STAGE_MODELS = {"rgb": "RGB ×4 models", "fusion": "fusion models"}
#: The model attributes that identify a learned model's numbers, besides its weights.
DESCRIBED = ("steps", "seed", "window", "consistent")


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m flows.benchmark",
        description="Score super-resolution models by the Wald protocol: tables and figures.",
    )
    _add_data(p)
    _add_models(p)
    add_runtime_options(p)
    p.add_argument(
        "--out",
        help="output folder (default: output/benchmark-<aoi>-<start>-<end>, "
        "or output/benchmark-scenes)",
    )
    return p


def _add_data(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data (default: the embedded demo catalog and AOI)")
    add_sentinel_options(data)
    data.add_argument(
        "--scenes",
        nargs="+",
        metavar="TIF",
        help="local GeoTIFFs of the 12 "
        "L2A bands at 10 m in product order, instead of a catalog; scored whole",
    )
    data.add_argument(
        "--patch",
        type=int,
        default=48,
        help="evaluation image side in 10 m pixels, a multiple of 24 (default: 48)",
    )
    data.add_argument(
        "--max-images",
        type=positive,
        metavar="N",
        help="score N patches drawn with --seed (default: all)",
    )


def _add_models(p: argparse.ArgumentParser) -> None:
    """The models of each stage (by default all registered), the learned ones' weights, and
    the sampling of the RGB models that sample."""
    models = p.add_argument_group("models")
    for stage, what in STAGE_MODELS.items():
        choices = sorted(STAGES[stage])
        models.add_argument(
            f"--{stage}-models",
            nargs="*",
            default=default_models(stage),
            choices=choices,
            metavar="MODEL",
            help=f"{what}, from {', '.join(choices)}; none to "
            f"skip the stage (default: {' '.join(default_models(stage))})",
        )
    for _, name in learned():
        models.add_argument(
            flag_of(name),
            help=f"{name} weights: a file, or one of {', '.join(names(name))} (default: demo "
            f"on the demo, else {default_weights(name, False)})",
        )
    steps, option = _sampling("steps")
    models.add_argument("--steps", type=positive, help=f"{steps} (default: {option.default})")
    seed, _ = _sampling("seed")
    models.add_argument(
        "--seed", type=int, default=0, help=f"{seed} and of the --max-images draw (default: 0)"
    )
    guaranteed = takers("rgb", "consistent")
    rows = " and ".join([", ".join(guaranteed), *(f"'{_no_guarantee(n)}'" for n in guaranteed)])
    models.add_argument(
        "--no-rgb-consistency",
        action="store_true",
        help=f"score {', '.join(guaranteed)} without its radiometric guarantee only (default: "
        f"with and without, rows {rows})",
    )


def default_models(stage: str) -> list[str]:
    """Every registered model of ``stage``, its reference first."""
    return sorted(STAGES[stage], key=lambda name: name != REFERENCE)


def _sampling(key: str) -> tuple[str, Option]:
    """An option of the RGB models that sample, as ``what of models``, and the option."""
    models = takers("rgb", key)
    option = STAGES["rgb"][models[0]].option(key)
    return f"{option.help} of {', '.join(models)}", option


def _no_guarantee(name: str) -> str:
    """The row of an RGB model without its radiometric guarantee (``consistent=False``)."""
    return f"{name}, no guarantee"


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parser(), argv, "nothing was written")


def run(args: argparse.Namespace) -> int:
    check_patch(args.patch)
    if not args.rgb_models and not args.fusion_models:
        raise UserError("no model to benchmark: give --rgb-models or --fusion-models")
    device = runtime(args)
    data, out = _data(args)
    rgb = {
        label: _build(get_rgb_model, name, options)
        for name in args.rgb_models
        for label, options in _rgb_rows(args, name, device)
    }
    fusion = {
        name: _build(get_fusion_model, name, _options(args, "fusion", name, device))
        for name in args.fusion_models
    }
    for model in [*rgb.values(), *fusion.values()]:
        for line in describe(model, _demo_data(args)):
            print(line, file=sys.stderr)
    with tqdm(
        total=len(data.patches) * (len(rgb) + len(fusion)),
        unit="run",
        desc="benchmark",
        dynamic_ncols=True,
    ) as bar:
        result = run_benchmark(data, rgb, fusion, bar.update)
    summaries = summarize(result.scores)
    settings = {
        "data": data.source,
        "patch": f"{args.patch} px at 10 m (input {args.patch // SCALE} px at 40 m)",
        "RGB input": RGB_INPUT,
        "fusion input": FUSION_INPUT,
        **{f"model {name}": _describe(model) for name, model in {**rgb, **fusion}.items()},
    }
    report = markdown(result, summaries, data.labels, settings)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "scores.csv", summaries)
        write_csv(out / "per_image.csv", result.scores)
        (out / "benchmark.md").write_text(report)
        figures = write_figures(out, result.example, summaries)
    except OSError as err:
        raise OutputError(f"cannot write {out}: {reason(err)}") from None
    print(report)
    names = ", ".join(p.name for p in figures)
    print(f"wrote {out}: benchmark.md, scores.csv, per_image.csv, {names}")
    return 0


def _data(args: argparse.Namespace) -> tuple[EvaluationSet, Path]:
    """The patches to score and the default output folder's name for them."""
    if args.scenes:
        given = [f"--{k}" for k in SENTINEL_OPTIONS if getattr(args, k) is not None]
        if given:
            raise UserError(f"--scenes replaces {', '.join(given)}: give one or the other")
        data = scene_patches(args.scenes, patch=args.patch, held_out=0)
        stem = "benchmark-scenes"
    else:
        query = sentinel_query(args)
        data = stac_patches(
            *query.where,
            patch=args.patch,
            held_out=query.test_fraction,
            label=query.describe()["stac"],
            **query.filters,
        )
        stem = f"benchmark-{Path(query.aoi_path).stem or 'aoi'}-{query.start}-{query.end}"
    if args.max_images and args.max_images < len(data.patches):
        chosen = np.random.default_rng(args.seed).choice(
            len(data.patches), args.max_images, replace=False
        )
        data = EvaluationSet([data.patches[i] for i in sorted(chosen)], data.labels, data.source)
    return data, Path(args.out or Path("output") / stem)


def _demo_data(args: argparse.Namespace) -> bool:
    """Whether the patches come from the embedded demo, the one place the demo weights fit."""
    return not args.scenes and is_demo_catalog(args.stac)


def _rgb_rows(args: argparse.Namespace, name: str, device: str) -> list[tuple[str, dict]]:
    """(row label, model options) of an RGB model: one with a radiometric guarantee with and
    without it (only without, with --no-rgb-consistency)."""
    options = _options(args, "rgb", name, device)
    if not STAGES["rgb"][name].option("consistent"):
        return [(name, options)]
    rows = [] if args.no_rgb_consistency else [(name, {**options, "consistent": True})]
    return [*rows, (_no_guarantee(name), {**options, "consistent": False})]


def _options(args: argparse.Namespace, stage: str, name: str, device: str) -> dict:
    """What the command gives a model: a learned one its weights and device, a sampling one
    its seed and steps."""
    spec = STAGES[stage][name]
    options = {}
    if spec.learned:
        weights = getattr(args, dest(spec.option("weights")))
        options |= {"weights": weights or default_weights(name, _demo_data(args)), "device": device}
    if spec.option("seed"):
        options["seed"] = args.seed
    if spec.option("steps") and args.steps:
        options["steps"] = args.steps
    return options


def _build(factory: Callable[..., Any], name: str, options: dict) -> Any:
    """A model, with a bad option turned into a one-line user error."""
    try:
        return factory(name, **options)
    except ValueError as err:
        raise UserError(f"model {name}: {reason(err)}") from None


def _describe(model: object) -> str:
    """What identifies a model's numbers: its weights and, for diffusion, its sampling."""
    if not model.weights_sha256:
        return "no weights"
    name = name_of(model.name, getattr(model, "weights", None))
    return ", ".join(
        [f"weights {name + ' ' if name else ''}sha256 {model.weights_sha256[:12]}…"]
        + [f"{k} {getattr(model, k)}" for k in DESCRIBED if hasattr(model, k)]
    )


if __name__ == "__main__":
    sys.exit(main())
