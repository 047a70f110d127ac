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
from flows._training import (
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
from pipeline.evaluation.wald import FUSION_INPUT, RGB_INPUT
from pipeline.geo.bands import SCALE
from pipeline.inputs.catalog import is_demo_catalog
from pipeline.models import FUSION_MODELS, RGB_MODELS, get_fusion_model, get_rgb_model
from pipeline.models.published import default_weights, describe, name_of, names

#: The models benchmarked by default: every registered one, each stage's bicubic baseline
#: first (the learned ones run with their shipped demo weights on the demo, and download the
#: published ones for other data).
DEFAULT_RGB_MODELS = ("bicubic", "difffusr")
DEFAULT_FUSION_MODELS = ("bicubic", "gram-schmidt", "difffusr-fusion")
#: The learned models and the options the command line gives them.
LEARNED_RGB, LEARNED_FUSION = "difffusr", "difffusr-fusion"
#: The learned RGB model's row without its radiometric guarantee (``consistent=False``).
NO_GUARANTEE = f"{LEARNED_RGB}, no guarantee"
#: The model attributes that identify a learned model's numbers, besides its weights.
DESCRIBED = ("steps", "seed", "window", "consistent")
#: Options that choose the catalog data, refused with --scenes.
CATALOG_OPTIONS = ("stac", "collection", "aoi", "start", "end")


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m flows.benchmark",
        description="Score super-resolution models by the Wald protocol: tables and figures.",
    )
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
    models = p.add_argument_group("models")
    models.add_argument(
        "--rgb-models",
        nargs="*",
        default=list(DEFAULT_RGB_MODELS),
        choices=sorted(RGB_MODELS),
        metavar="MODEL",
        help=f"RGB ×4 models, from {', '.join(sorted(RGB_MODELS))}; none to "
        f"skip the stage (default: {' '.join(DEFAULT_RGB_MODELS)})",
    )
    models.add_argument(
        "--fusion-models",
        nargs="*",
        default=list(DEFAULT_FUSION_MODELS),
        choices=sorted(FUSION_MODELS),
        metavar="MODEL",
        help=f"fusion models, from {', '.join(sorted(FUSION_MODELS))}; none to "
        f"skip the stage (default: {' '.join(DEFAULT_FUSION_MODELS)})",
    )
    models.add_argument(
        "--weights",
        help=f"{LEARNED_RGB} weights: a file, or one of "
        f"{', '.join(names(LEARNED_RGB))} (default: demo on the demo, else "
        f"{default_weights(LEARNED_RGB, False)})",
    )
    models.add_argument(
        "--fusion-weights",
        help=f"{LEARNED_FUSION} weights: a file, or one of "
        f"{', '.join(names(LEARNED_FUSION))} (default: demo on the demo, else "
        f"{default_weights(LEARNED_FUSION, False)})",
    )
    models.add_argument("--steps", type=positive, help=f"DDIM steps of {LEARNED_RGB} (default: 20)")
    models.add_argument(
        "--seed",
        type=int,
        default=0,
        help=f"noise seed of {LEARNED_RGB} and of the --max-images draw (default: 0)",
    )
    models.add_argument(
        "--no-rgb-consistency",
        action="store_true",
        help=f"score "
        f"{LEARNED_RGB} without its radiometric guarantee only (default: with "
        f"and without, rows {LEARNED_RGB} and '{NO_GUARANTEE}')",
    )
    add_runtime_options(p)
    p.add_argument(
        "--out",
        help="output folder (default: output/benchmark-<aoi>-<start>-<end>, "
        "or output/benchmark-scenes)",
    )
    return p


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
        name: _build(get_fusion_model, name, _fusion_options(args, name, device))
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
        given = [f"--{k}" for k in CATALOG_OPTIONS if getattr(args, k) is not None]
        if given:
            raise UserError(f"--scenes replaces {', '.join(given)}: give one or the other")
        data = scene_patches(args.scenes, patch=args.patch, held_out=0)
        stem = "benchmark-scenes"
    else:
        query = sentinel_query(args)
        data = stac_patches(
            query.stac,
            query.aoi,
            query.start,
            query.end,
            patch=args.patch,
            held_out=args.test_fraction,
            collection=args.collection,
            max_cloud=args.max_cloud,
            label=query.describe()["stac"],
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
    """(row label, model options) of an RGB model: the learned one with and without its
    radiometric guarantee (only without, with --no-rgb-consistency)."""
    if name != LEARNED_RGB:
        return [(name, {})]
    weights = args.weights or default_weights(LEARNED_RGB, _demo_data(args))
    steps = {"steps": args.steps} if args.steps else {}
    options = {"weights": weights, "seed": args.seed, "device": device, **steps}
    rows = [] if args.no_rgb_consistency else [(name, {**options, "consistent": True})]
    return [*rows, (NO_GUARANTEE, {**options, "consistent": False})]


def _fusion_options(args: argparse.Namespace, name: str, device: str) -> dict:
    if name != LEARNED_FUSION:
        return {}
    weights = args.fusion_weights or default_weights(LEARNED_FUSION, _demo_data(args))
    return {"weights": weights, "device": device}


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
