"""Explain a pixel of a product: which input pixels and bands made it (local attribution maps).

    python -m flows.explain --product output/demo-2023-01-01-2023-01-31.zarr --point 500 300

It rebuilds the 10 m input around the point from the items the product records, rebuilds the
product's models from its recipe, and writes one PNG per stage and model and ``explain.json``
(docs/explain.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows._cli import OneLineErrors, run_command
from pipeline.errors import OutputError, UserError, reason
from pipeline.explain.lam import DETECTORS
from pipeline.explain.lam import Path as BlurPath

DEFAULTS = BlurPath()


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m flows.explain",
        description="Local attribution maps of a product's models at a point or window.",
    )
    _add_where(p)
    _add_method(p)
    _add_models(p)
    return p


def _add_where(p: argparse.ArgumentParser) -> None:
    """The product, the pixel or window explained, and where the results go."""
    p.add_argument("--product", required=True, help="the product (path or fsspec URL)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--point",
        type=int,
        nargs=2,
        metavar=("X", "Y"),
        help="a pixel of the 2.5 m grid: column X, row Y",
    )
    where.add_argument(
        "--window",
        type=int,
        nargs=4,
        metavar=("X", "Y", "WIDTH", "HEIGHT"),
        help="a window of the 2.5 m grid from column X, row Y (at most 64 px a side)",
    )
    p.add_argument(
        "--out",
        help="folder for the figures and explain.json (default: ./explain-<product>-<X>-<Y>)",
    )


def _add_method(p: argparse.ArgumentParser) -> None:
    """The path integral of the attribution and what of the window it explains."""
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULTS.steps,
        help=f"steps of the path integral (default: {DEFAULTS.steps})",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=DEFAULTS.sigma,
        help=f"blur of the baseline, in 10 m pixels (default: {DEFAULTS.sigma:g})",
    )
    p.add_argument(
        "--detector",
        choices=DETECTORS,
        default="value",
        help="what of the window is explained: its values, or its edges "
        "(gradient magnitude, as LAM's) (default: value)",
    )
    p.add_argument(
        "--noise-level",
        type=int,
        metavar="T",
        help="explain one denoising step of the diffusion model at timestep T "
        "(0-999) instead of its whole chain, which costs steps times more",
    )
    p.add_argument(
        "--groups",
        type=int,
        nargs="*",
        choices=(10, 20, 60),
        default=[10, 20, 60],
        metavar="M",
        help="fusion groups to explain, by native resolution "
        "(default: 10 20 60; none: the RGB stage only)",
    )


def _add_models(p: argparse.ArgumentParser) -> None:
    """The models explained: the product's own, their weights and device."""
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="skip the baselines (bicubic, Gram-Schmidt) in the learned models' place",
    )
    p.add_argument(
        "--weights",
        help="the RGB model's weights (default: as the product was "
        "made: the demo weights on the demo catalog, else the published default)",
    )
    p.add_argument("--fusion-weights", help="the fusion model's weights (default: likewise)")
    p.add_argument(
        "--device", help="torch device of the learned models (default: cuda when present)"
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parser(), argv, "nothing written")


def run(args: argparse.Namespace) -> int:
    from pipeline.explain.explain import Settings, explain
    from pipeline.explain.figures import write_figures
    from pipeline.explain.report import write_report
    from pipeline.explain.target import Window

    x, y, width, height = args.window or (*args.point, 1, 1)
    try:
        settings = Settings(
            BlurPath(args.steps, args.sigma),
            args.detector,
            args.noise_level,
            tuple(sorted(set(args.groups))),
            not args.no_baselines,
            args.device,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    window = Window(y, x, height, width)
    out = Path(args.out or f"explain-{Path(args.product.rstrip('/')).stem}-{x}-{y}")
    try:
        result = explain(args.product, window, settings, args.weights, args.fusion_weights)
    except ValueError as err:  # an option the model refuses (a noise level out of range)
        raise UserError(reason(err)) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        figures = write_figures(result, out)
        write_report(result, out / "explain.json", figures)
    except OSError as err:
        raise OutputError(f"cannot write {out}: {reason(err)}") from None
    print(f"window:        column {x}, row {y}, {width} x {height} px at 2.5 m")
    print(f"reproduced:    RGB at the window within {result.reproduced:.2g} of the product")
    for stage in result.stages:
        shares = ", ".join(f"{100 * s:.0f} %" for s in stage.shares.values())
        print(
            f"{stage.model:>15} {stage.stage:<13} diffusion index "
            f"{stage.diffusion_index:5.1f}; within 1/2/4 px: {shares}; "
            f"integration error {stage.attribution.error:.1%}; {stage.seconds:.1f} s"
        )
    print(f"output:        {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
