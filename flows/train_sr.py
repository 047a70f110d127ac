"""Train the DiffFuSR RGB model (×4) from HR RGB patches; see docs/training.md.

    python -m flows.train_sr --source folder --images s3://bucket/naip/ --out runs/naip
    python -m flows.train_sr --source sentinel2 --stac https://earth-search.aws.element84.com/v1 \\
        --collection sentinel-2-c1-l2a --aoi area.geojson --start 2024-06-01 --end 2024-08-31 \\
        --out runs/s2-wald

``--source sentinel2`` without ``--stac`` trains on the embedded demo catalog. Ctrl-C saves a
checkpoint after the current step; ``--resume`` continues the run exactly.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

import torch

from flows._cli import OneLineErrors, run_command
from flows._training import (
    SENTINEL_OPTIONS,
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
from pipeline.models.diffusion.network import DiffFuSRConfig
from pipeline.protocol.degradation import DegradationConfig
from pipeline.train.sources import FolderSource, PatchSource, SentinelWaldSource
from pipeline.train.sr import PRESETS, TrainConfig, check_patch, open_run, parameter_count

DEFAULTS = TrainConfig()
#: Options that only one kind of source reads.
FOLDER_ONLY = ("images", "val_images")


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m flows.train_sr",
        description="Train the DiffFuSR ×4 RGB diffusion model on HR RGB patches.",
    )
    add_run_options(p)
    _add_data(p)
    _add_network(p)
    _add_optimisation(p)
    add_checks(p, DEFAULTS, "held-out patches")
    add_runtime_options(p)
    return p


def _add_data(p: argparse.ArgumentParser) -> None:
    """The source of HR RGB, and how its LR input is degraded."""
    data = p.add_argument_group("training data")
    data.add_argument(
        "--source",
        choices=("folder", "sentinel2"),
        default="sentinel2",
        help="HR RGB from an image folder, or Sentinel-2 at 10 m by the Wald "
        "protocol (default: sentinel2)",
    )
    data.add_argument("--images", help="folder of GeoTIFF/PNG images (path or fsspec URL)")
    data.add_argument(
        "--val-images",
        help="held-out image folder for validation (default: --images, which is then not held out)",
    )
    data.add_argument(
        "--bands",
        nargs=3,
        type=int,
        default=[1, 2, 3],
        metavar="N",
        help="1-based image bands read as R G B (default: 1 2 3)",
    )
    add_sentinel_options(data)
    data.add_argument(
        "--harmonize",
        action=argparse.BooleanOptionalAction,
        help="map 8-bit camera values towards Sentinel-2 reflectance "
        "(default: on for folders, off for sentinel2)",
    )
    data.add_argument(
        "--noise-max",
        type=float,
        default=DegradationConfig.noise_max,
        metavar="SIGMA",
        help="largest Gaussian noise σ added to the LR input, "
        "in reflectance (default: 25/255, the paper's)",
    )
    data.add_argument(
        "--quantize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="round the LR input to 8 bits, as the paper does (default: on)",
    )


def _add_network(p: argparse.ArgumentParser) -> None:
    model = add_preset(p, PRESETS)
    model.add_argument("--inner-channel", type=positive, help="U-Net base channels (× 32)")
    model.add_argument(
        "--channel-mults",
        type=positive,
        nargs="+",
        metavar="M",
        help="U-Net channel multiplier per level",
    )
    model.add_argument("--res-blocks", type=positive, help="U-Net residual blocks per level")
    model.add_argument(
        "--attn-strides",
        type=positive,
        nargs="*",
        metavar="S",
        help="U-Net levels (as strides 2^level) with self-attention",
    )
    model.add_argument("--encoder-blocks", type=positive, help="RRDB blocks of the spatial encoder")


def _add_optimisation(p: argparse.ArgumentParser) -> None:
    d = DEFAULTS
    train = p.add_argument_group("optimisation")
    add_setting(train, d, "steps")
    add_setting(train, d, "batch_size")
    add_setting(train, d, "patch", "HR patch edge in pixels")
    train.add_argument(
        "--pair-window",
        type=int,
        help="HR window the two crops of a pair come from (default: 2 × patch)",
    )
    add_setting(train, d, "lr", "Adam step size")
    train.add_argument(
        "--lr-milestones",
        type=int,
        nargs="*",
        default=[],
        metavar="STEP",
        help="steps after which the learning rate is multiplied by --lr-gamma",
    )
    add_setting(train, d, "lr_gamma")
    add_setting(train, d, "ema_rate")
    train.add_argument(
        "--no-ema-warmup", action="store_true", help="use --ema-rate from the first step"
    )
    add_setting(train, d, "contrast_weight", "InfoNCE loss weight")
    add_setting(train, d, "aux_weight", "encoder reconstruction loss weight")
    add_setting(train, d, "seed")


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parser(), argv, "the run keeps its last checkpoint")


def run(args: argparse.Namespace) -> int:
    _check_source_options(args)
    device = runtime(args)
    config, cfg = _settings(args)
    source, validation, data = _sources(args, cfg)
    trainer = open_run(args.out, config, cfg, source, validation, data, args.resume, device)
    print(f"run:        {args.out} (step {trainer.step} of {cfg.steps})")
    print(
        f"network:    {parameter_count(trainer.net):,} trained parameters, {device}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    if args.source == "folder" and not args.val_images:
        print("validation: on the training images (give --val-images for a held-out set)")
    code = train(trainer, cfg.steps, lambda r: {"loss": f"{r['loss']:.4f}"}, _describe)
    if code is not None:
        return code
    weights = trainer.export()
    print(f"weights:    {weights.path} (sha256 {weights.sha256})")
    print(f"use them:   python -m flows.region --rgb-model difffusr --weights {weights.path}")
    return 0


def _describe(record: dict[str, float]) -> str:
    return (
        f"step {record['step']}: PSNR {record['val_psnr']:.2f} dB, "
        f"SSIM {record['val_ssim']:.4f} (bicubic {record['bicubic_psnr']:.2f} "
        f"dB, {record['bicubic_ssim']:.4f})"
    )


def _check_source_options(args: argparse.Namespace) -> None:
    other = SENTINEL_OPTIONS if args.source == "folder" else FOLDER_ONLY
    given = ["--" + k.replace("_", "-") for k in other if getattr(args, k) is not None]
    if given:
        raise UserError(f"{', '.join(given)} do not apply to --source {args.source}")
    if args.source == "folder" and not args.images:
        raise UserError("--source folder needs --images")


def _settings(args: argparse.Namespace) -> tuple[DiffFuSRConfig, TrainConfig]:
    """(network sizes, training settings) from the preset, the overrides and the defaults."""
    preset = PRESETS[args.preset]
    unet = {
        k: getattr(args, k) for k in ("inner_channel", "res_blocks") if getattr(args, k) is not None
    }
    unet |= {
        k: tuple(getattr(args, k))
        for k in ("channel_mults", "attn_strides")
        if getattr(args, k) is not None
    }
    harmonize = args.source == "folder" if args.harmonize is None else args.harmonize
    try:
        blocks = preset.encoder_blocks if args.encoder_blocks is None else args.encoder_blocks
        config = replace(preset, unet=replace(preset.unet, **unet), encoder_blocks=blocks)
        if config.unet.inner_channel % 32:
            raise ValueError("--inner-channel must be a multiple of 32 (GroupNorm groups)")
        cfg = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            patch=args.patch,
            pair_window=args.pair_window,
            lr=args.lr,
            lr_milestones=tuple(args.lr_milestones),
            lr_gamma=args.lr_gamma,
            ema_rate=args.ema_rate,
            ema_warmup=not args.no_ema_warmup,
            contrast_weight=args.contrast_weight,
            aux_weight=args.aux_weight,
            seed=args.seed,
            degradation=DegradationConfig(
                harmonize=harmonize,
                noise_max=args.noise_max,
                levels=DegradationConfig.levels if args.quantize else None,
            ),
            val_every=args.val_every,
            val_patches=args.val_patches,
            val_steps=args.val_steps,
            ckpt_every=args.ckpt_every,
        )
        check_patch(config, cfg)
    except ValueError as err:
        raise UserError(str(err)) from None
    return config, cfg


def _sources(
    args: argparse.Namespace, cfg: TrainConfig
) -> tuple[PatchSource, PatchSource, dict[str, Any]]:
    """(training source of pair windows, validation source of patches, their description)."""
    if args.source == "folder":
        source = FolderSource(args.images, cfg.window, bands=args.bands)
        validation = FolderSource(args.val_images or args.images, cfg.patch, bands=args.bands)
        return (
            source,
            validation,
            {
                "source": "folder",
                "images": args.images,
                "val_images": args.val_images,
                "bands": args.bands,
            },
        )
    query = sentinel_query(args)
    try:
        source, validation = SentinelWaldSource.train_and_test(
            *query.where,
            patches=(cfg.window, cfg.patch),
            test_fraction=query.test_fraction,
            **query.filters,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    return source, validation, {"source": "sentinel2", **query.describe()}


if __name__ == "__main__":
    sys.exit(main())
