"""Speed of the DiffFuSR fusion networks, and the radiometric consistency of the fusion stage.

    python -m benchmarks.fusion [--weights FILE [--sha256 HEX]] [--configs small paper mtf]
        [--device cpu cuda] [--tile 48 18] [--repeats 1] [--threads N] [--crop N]
        [--block-size N] [--out PATH]

Throughput: each group network (10, 20, 60 m) alone on one tile of ``--tile`` 10 m pixels,
i.e. (4·tile)² output pixels at 2.5 m, from random normalised inputs; then the whole model call
(bilinear lifts, the three networks, the consistency correction) on the same tile. Both
generations of the networks: ``small`` and ``paper`` are the first (RRDB), ``mtf`` the second
(MTF-guided detail injection) at its published sizes. FLOPs are counted by PyTorch's
FlopCounterMode on a meta-tensor copy of the timed network (convolutions at 2 FLOPs per
multiply-accumulate; pooling, activations, element-wise arithmetic and resizing not counted),
per group and for all three together, i.e. per output pixel of all 12 bands.

Consistency: the fusion model on the demo composite (bicubic RGB as the guide), without and
with the guarantee: per band, the mean and max |mean of the 2.5 m band over a native pixel's
footprint − the native input value|, next to the Gram–Schmidt and bicubic baselines. With
``--block-size N`` also the difference between the stage run block by block (N-pixel blocks
with the halo, as the region flow runs it) and one run over the whole composite, which
channel attention's pooling over the whole block keeps from being zero. The
default weights are random (seed 0): they time the same as trained weights, and they are the
hardest case for consistency, since nothing taught them to keep the input's radiometry.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._common import demo_composite, device_name, timed, write_json
from pipeline.geo.bands import FUSED_BANDS, RGB_BANDS, RGB_INDEX, SCALE
from pipeline.geo.resample import upsample_cubic
from pipeline.models.baselines import Bicubic, GramSchmidt
from pipeline.models.fusion.model import (
    DiffFuSRFusion,
    consistency_error,
    native_grids,
)
from pipeline.models.fusion.mtf import MTFFusionNetwork
from pipeline.models.fusion.network import FUSION_GROUPS, FusionNetwork, GroupedFusion
from pipeline.models.fusion.weights import save_fusion_network
from pipeline.models.superresolve import SuperResolver

SEED = 0
#: (generation, features, blocks, growth): the first generation's training preset ``small``
#: and the paper's sizes; the second generation at its published sizes (nf 32, gc 16, and
#: nb 3, which builds nb // 2 = 1 RRDB).
CONFIGS: dict[str, tuple[type[GroupedFusion], int, int, int]] = {
    "small": (FusionNetwork, 16, 1, 8),
    "paper": (FusionNetwork, 64, 5, 32),
    "mtf": (MTFFusionNetwork, 32, 1, 16),
}
DEFAULT_TILES = {"small": 48, "paper": 18, "mtf": 24}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--weights",
        help="fusion weight file to time (default: random weights of each --configs size)",
    )
    p.add_argument("--sha256", help="refuse --weights whose sha256 differs")
    p.add_argument(
        "--configs",
        nargs="+",
        choices=list(CONFIGS),
        default=list(CONFIGS),
        help="random-weight networks to time without --weights (default: small paper mtf)",
    )
    p.add_argument(
        "--device", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    )
    p.add_argument(
        "--tile",
        type=int,
        nargs="+",
        help="tile side in 10 m pixels, one per "
        "config, a multiple of 6 (default: 48 small, 18 paper, 24 mtf; 96 on cuda)",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed runs after a warm-up (median)")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument(
        "--crop",
        type=int,
        default=0,
        help="consistency on the composite's "
        "top-left N×N 10 m pixels, a multiple of 6 (default: 0, the whole demo)",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=0,
        help="also measure blocks of N 10 m "
        "pixels against one whole-composite run, a multiple of 6 (default: off)",
    )
    p.add_argument("--out", help="JSON result (default: benchmarks/results/fusion-DEVICE.json)")
    args = p.parse_args()
    if any(t <= 0 or t % 6 for t in args.tile or []) or args.crop % 6 or args.block_size % 6:
        p.error("--tile and --crop must be multiples of 6 (whole 60 m pixels)")
    return args


def warm_timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    return timed(fn, repeats, device)[0]


def group_flops(net: GroupedFusion, side: int) -> dict[str, int]:
    """Counted FLOPs of each group network of ``net`` on a side × side output, on a
    meta-tensor copy (shapes only)."""
    meta = copy.deepcopy(net).to("meta")
    flops = {}
    for g in FUSION_GROUPS:
        guide = torch.empty(1, len(RGB_BANDS), side, side, device="meta")
        ms = torch.empty(1, len(meta.ms_bands(g.name)), side, side, device="meta")
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            meta.group_forward(g.name, guide, ms)
        flops[g.name] = counter.get_total_flops()
    return flops


def throughput(model: DiffFuSRFusion, tile: int, repeats: int) -> dict[str, Any]:
    """Output pixels per second of each group network and of the whole model call."""
    net = model._network()
    device = next(net.parameters()).device
    side = SCALE * tile
    generator = torch.Generator().manual_seed(SEED)
    guide = torch.randn(1, 3, side, side, generator=generator).to(device)
    groups = {}
    flops = group_flops(net, side)
    with torch.inference_mode():
        for g in FUSION_GROUPS:
            channels = len(net.ms_bands(g.name))
            ms = torch.randn(1, channels, side, side, generator=generator).to(device)
            seconds = warm_timed(
                lambda g=g, ms=ms: net.group_forward(g.name, guide, ms), repeats, device
            )
            groups[g.name] = {
                "seconds": seconds,
                "output_px_per_s": side * side / seconds,
                "gflop_per_output_px": flops[g.name] / side / side / 1e9,
                "achieved_tflop_per_s": flops[g.name] / seconds / 1e12,
            }
    rng = np.random.default_rng(SEED)
    bands = (0.05 + 0.3 * rng.random((12, tile, tile))).astype(np.float32)
    rgb = upsample_cubic(bands[RGB_INDEX], SCALE)
    seconds = warm_timed(lambda: model(bands, rgb, (0, 0)), repeats, device)
    return {
        "tile": tile,
        "output_px": side * side,
        "groups": groups,
        "mflop_per_output_px": sum(flops.values()) / side / side / 1e6,
        "model_call": {"seconds": seconds, "output_px_per_s": side * side / seconds},
    }


def consistency(model: DiffFuSRFusion, image: np.ndarray) -> dict[str, Any]:
    """Per band (mean, max) |footprint mean − native input| of the fusion model without and
    with the guarantee, and of the baselines (RGB bands: the bicubic RGB stage's)."""
    natives = native_grids(image)
    rgb = upsample_cubic(image[RGB_INDEX], SCALE)
    start = time.perf_counter()
    raw = model.predict(image, rgb, (0, 0))  # one network pass serves both rows
    seconds = time.perf_counter() - start
    corrected = model.correct(raw, image)
    rows = {
        "difffusr-fusion, no guarantee": consistency_error(raw, natives),
        "difffusr-fusion, guarantee": consistency_error(corrected, natives),
        "gram-schmidt": consistency_error(GramSchmidt()(image, rgb, (0, 0)), natives),
        "bicubic": consistency_error(GramSchmidt(detail=False)(image, rgb, (0, 0)), natives),
    }
    return {
        "shape_10m": list(image.shape[1:]),
        "network_seconds": seconds,
        "rgb_stage_bicubic": consistency_error(rgb_stack(rgb), natives, RGB_BANDS),
        "bands": rows,
    }


def blocks_vs_whole(model: DiffFuSRFusion, image: np.ndarray, block: int) -> dict[str, Any]:
    """Max and mean |blocked − whole| of the fusion stage (bicubic RGB stage), without and
    with the guarantee."""
    result: dict[str, Any] = {"block_size": block}
    for consistent in (False, True):
        resolver = SuperResolver(Bicubic(), replace(model, consistent=consistent))
        whole = resolver.block(image, (0, 0))
        lazy = resolver.apply(da.from_array(image, chunks=(12, block, block)), block)
        diff = np.abs(lazy.compute(scheduler="single-threaded") - whole)
        result["halo"] = resolver.halo
        result["blocks"] = list(lazy.numblocks[1:])
        result["guarantee" if consistent else "no guarantee"] = {
            "max_abs": float(diff.max()),
            "mean_abs": float(diff.mean()),
        }
    return result


def rgb_stack(rgb: np.ndarray) -> np.ndarray:
    out = np.zeros((12, *rgb.shape[1:]), np.float32)
    out[RGB_INDEX] = rgb
    return out


def random_model(config: str, folder: Path, device: str) -> DiffFuSRFusion:
    torch.manual_seed(SEED)
    network, *sizes = CONFIGS[config]
    path = save_fusion_network(network(*sizes), folder / f"{config}.safetensors")
    return DiffFuSRFusion(weights=str(path.path), device=device)


def print_throughput(label: str, result: dict[str, Any]) -> None:
    side = SCALE * result["tile"]
    print(f"\n{label}: tile {result['tile']} px at 10 m ({side}² output px)")
    head = f"{'group':<22} {'s':>8} {'kpx/s':>9} {'GFLOP/px':>9} {'TFLOP/s':>8}"
    print(head)
    print("-" * len(head))
    for name, r in result["groups"].items():
        print(
            f"{name:<22} {r['seconds']:8.3f} {r['output_px_per_s'] / 1e3:9.2f} "
            f"{r['gflop_per_output_px']:9.5f} {r['achieved_tflop_per_s']:8.4f}"
        )
    call = result["model_call"]
    print(f"{'whole model call':<22} {call['seconds']:8.3f} {call['output_px_per_s'] / 1e3:9.2f}")
    print(
        f"all three groups: {result['mflop_per_output_px']:.2f} MFLOP per output pixel "
        "(all 12 bands)"
    )


def print_consistency(result: dict[str, Any]) -> None:
    h, w = result["shape_10m"]
    print(
        f"\nconsistency on the demo composite ({h}×{w} px at 10 m): mean / max "
        "|footprint mean − native input|, reflectance"
    )
    bands = list(FUSED_BANDS)
    print(f"{'model':<30} " + " ".join(f"{b:>17}" for b in bands))
    for name, errors in result["bands"].items():
        print(f"{name:<30} " + " ".join(f"{errors[b][0]:8.2e}/{errors[b][1]:8.2e}" for b in bands))
    rgb = result["rgb_stage_bicubic"]
    print(
        "RGB stage (bicubic; kept as is): "
        + ", ".join(f"{b} {rgb[b][0]:.2e}/{rgb[b][1]:.2e}" for b in RGB_BANDS)
    )


def throughput_runs(args: argparse.Namespace, names: list[str], folder: Path) -> list[dict]:
    """Throughput of every named network (``--weights`` or each random config) on every
    device, printed as it comes."""
    runs = []
    for device in args.device:
        for i, name in enumerate(names):
            if args.weights:
                model = DiffFuSRFusion(weights=args.weights, sha256=args.sha256, device=device)
            else:
                model = random_model(name, folder, device)
            net = model._network()
            tile = (
                args.tile[i]
                if args.tile and i < len(args.tile)
                else 96
                if device == "cuda"
                else DEFAULT_TILES.get(name, 48)
            )
            label = (
                f"{name} (generation {net.generation}, {net.features}/{net.blocks}/"
                f"{net.growth}) on {device_name(torch.device(device))}, "
                f"threads {torch.get_num_threads()}"
            )
            run = throughput(model, tile, args.repeats)
            print_throughput(label, run)
            runs.append(
                {
                    "config": name,
                    "device": device_name(torch.device(device)),
                    "generation": net.generation,
                    "sizes": {"features": net.features, "blocks": net.blocks, "growth": net.growth},
                    "weights": args.weights or f"random, seed {SEED}",
                    "sha256": model.weights_sha256,
                    **run,
                }
            )
    return runs


def consistency_runs(args: argparse.Namespace, name: str, folder: Path) -> dict[str, Any]:
    """Consistency on the demo composite (and blocks against one whole run with
    ``--block-size``) of the first network, on the CPU, printed as it comes."""
    first = (
        DiffFuSRFusion(weights=args.weights, sha256=args.sha256, device="cpu")
        if args.weights
        else random_model(name, folder, "cpu")
    )
    image = demo_composite(args.crop)
    result: dict[str, Any] = {"consistency": {"config": name, **consistency(first, image)}}
    print_consistency(result["consistency"])
    if args.block_size:
        blocks = result["blocks_vs_whole"] = blocks_vs_whole(first, image, args.block_size)
        print(
            f"\nblocks of {args.block_size} px (halo {blocks['halo']}, "
            f"{blocks['blocks'][0]}×{blocks['blocks'][1]} blocks) vs one whole run, "
            "|difference| in reflectance:"
        )
        for key in ("no guarantee", "guarantee"):
            print(
                f"  {key:<13} max {blocks[key]['max_abs']:.3g}, mean {blocks[key]['mean_abs']:.3g}"
            )
    return result


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    names = ["weights"] if args.weights else args.configs
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory() as folder:
        result["runs"] = throughput_runs(args, names, Path(folder))
        result.update(consistency_runs(args, names[0], Path(folder)))
    result["load_average_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    print(f"\nload average {load_start:.2f} → {result['load_average_1min']['end']:.2f}")
    write_json(args.out or f"benchmarks/results/fusion-{'-'.join(args.device)}.json", result)


if __name__ == "__main__":
    main()
