"""Train DiffFuSR's three band-fusion networks by the Wald protocol on Sentinel-2 alone;
see docs/training-fusion.md.

    python -m flows.train_fusion --out runs/fusion-demo --steps 300
    python -m flows.train_fusion --stac https://earth-search.aws.element84.com/v1 \\
        --collection sentinel-2-c1-l2a --aoi area.geojson --start 2024-06-01 --end 2024-08-31 \\
        --out runs/fusion

Without ``--stac`` it trains on the embedded demo catalog. Ctrl-C saves a checkpoint after the
current step; ``--resume`` continues the run exactly.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from flows._cli import OneLineErrors, run_command
from flows._training import (
    add_checks,
    add_preset,
    add_run_options,
    add_runtime_options,
    add_sentinel_options,
    add_setting,
    positive,
    runtime,
    sentinel_query,
    train,
)
from pipeline.errors import UserError
from pipeline.geo.bands import REFLECTANCE_BANDS
from pipeline.geo.grid import LATTICE
from pipeline.inputs.memory import sentinel_composite
from pipeline.models.fusion.network import FUSION_GROUPS_BY_RESOLUTION
from pipeline.train.fusion import (
    PRESETS,
    FusionTrainConfig,
    FusionWaldData,
    NetworkSize,
    open_fusion_run,
    parameter_count,
)

DEFAULTS = FusionTrainConfig()


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m flows.train_fusion",
        description="Train the DiffFuSR band-fusion networks on Sentinel-2 by the Wald protocol.",
    )
    add_run_options(p)
    add_sentinel_options(
        p.add_argument_group("training data (the 12-band clear-sky composite at 10 m)")
    )
    _add_groups(p)
    _add_network(p)
    opt = p.add_argument_group("optimisation")
    add_setting(opt, DEFAULTS, "steps")
    add_setting(opt, DEFAULTS, "batch_size", "windows per group and step")
    add_setting(opt, DEFAULTS, "lr", "Adam step size")
    add_setting(opt, DEFAULTS, "seed")
    add_checks(p, DEFAULTS, "held-out windows per group")
    add_runtime_options(p)
    return p


def _add_groups(p: argparse.ArgumentParser) -> None:
    """Which band groups are trained, their patches and the degradation."""
    d = DEFAULTS
    groups = p.add_argument_group("groups and degradation")
    groups.add_argument(
        "--groups",
        type=int,
        nargs="+",
        choices=sorted(FUSION_GROUPS_BY_RESOLUTION),
        default=list(d.groups),
        metavar="M",
        help="groups to train, by native resolution in metres (default: 10 20 60)",
    )
    for g in FUSION_GROUPS_BY_RESOLUTION.values():
        groups.add_argument(
            f"--patch-{g.resolution}m",
            type=positive,
            default=d.patch(g),
            metavar="PX",
            help=f"patch edge of the {g.resolution} m group on "
            f"its {g.resolution} m grid (default: {d.patch(g)})",
        )
    groups.add_argument(
        "--blur-sigma",
        type=float,
        default=d.blur_sigma,
        metavar="FRACTION",
        help=f"Gaussian σ of the degradation as a fraction of its ratio (default: {d.blur_sigma})",
    )


def _add_network(p: argparse.ArgumentParser) -> None:
    model = add_preset(p, PRESETS)
    model.add_argument("--features", type=positive, help="feature channels (a multiple of 4)")
    model.add_argument("--blocks", type=positive, help="RRDB blocks per branch")
    model.add_argument("--growth", type=positive, help="dense-block growth channels")
    model.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        help="predict a correction of the bilinear upsampling, not the bands "
        "(default: on for small, off for paper, the reference's way)",
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parser(), argv, "the run keeps its last checkpoint")


def run(args: argparse.Namespace) -> int:
    device = runtime(args)
    size, cfg = _settings(args)
    data, description = _data(args, cfg)
    trainer = open_fusion_run(args.out, size, cfg, data, description, args.resume, device)
    print(f"run:        {args.out} (step {trainer.step} of {cfg.steps})")
    print(
        f"networks:   {parameter_count(trainer.net, cfg.selected):,} trained parameters "
        f"({size.features} features, {size.blocks} blocks, growth {size.growth}"
        f"{', residual' if size.residual else ''}), {device}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(
        f"data:       {data.image.shape[2]} × {data.image.shape[1]} px at 10 m, "
        f"validation east of column {data.cut}"
    )
    for g in cfg.selected:
        if not data.has_windows(g, "test"):
            print(
                f"validation: none for the {g.resolution} m group: the held-out part holds no "
                f"clear {cfg.patch(g)} px window of its grid"
            )
    code = train(trainer, cfg.steps, _postfix, _describe)
    if code is not None:
        return code
    weights = trainer.export()
    print(f"weights:    {weights.path} (sha256 {weights.sha256})")
    untrained = [f"{r} m" for r in FUSION_GROUPS_BY_RESOLUTION if r not in cfg.groups]
    if untrained:
        print(f"note:       the {', '.join(untrained)} network(s) keep their initial weights")
    print(
        f"use them:   python -m flows.region --fusion-model difffusr-fusion "
        f"--fusion-weights {weights.path}"
    )
    return 0


def _postfix(record: dict[str, float]) -> dict[str, str]:
    return {k.removeprefix("loss_"): f"{v:.4f}" for k, v in record.items() if k.startswith("loss_")}


def _describe(record: dict[str, float]) -> str:
    scores = [
        f"{r} m {record[f'ergas_{r}m']:.3f} (bilinear {record[f'bilinear_ergas_{r}m']:.3f})"
        for r in FUSION_GROUPS_BY_RESOLUTION
        if f"ergas_{r}m" in record
    ]
    return f"step {record['step']}: ERGAS {', '.join(scores)}"


def _settings(args: argparse.Namespace) -> tuple[NetworkSize, FusionTrainConfig]:
    """(network sizes, training settings) from the preset, the overrides and the defaults."""
    preset = PRESETS[args.preset]
    try:
        size = NetworkSize(
            features=args.features or preset.features,
            blocks=args.blocks or preset.blocks,
            growth=args.growth or preset.growth,
            residual=preset.residual if args.residual is None else args.residual,
        )
        cfg = FusionTrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            groups=tuple(sorted(set(args.groups))),
            patch_10m=args.patch_10m,
            patch_20m=args.patch_20m,
            patch_60m=args.patch_60m,
            lr=args.lr,
            blur_sigma=args.blur_sigma,
            seed=args.seed,
            val_every=args.val_every,
            val_patches=args.val_patches,
            ckpt_every=args.ckpt_every,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    return size, cfg


def _data(
    args: argparse.Namespace, cfg: FusionTrainConfig
) -> tuple[FusionWaldData, dict[str, Any]]:
    """The composite's windows, and the description recorded with the run."""
    query = sentinel_query(args)
    composite = sentinel_composite(
        *query.where, REFLECTANCE_BANDS, lattice=LATTICE, **query.filters
    )
    try:
        data = FusionWaldData(composite.image, cfg, query.test_fraction)
    except ValueError as err:
        raise UserError(str(err)) from None
    return data, {
        "source": "sentinel2",
        **query.describe(),
        "epsg": composite.epsg,
        "bounds": list(composite.bounds),
    }


if __name__ == "__main__":
    sys.exit(main())
