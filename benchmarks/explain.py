"""The cost of explaining a window: seconds per point of the LAM path, and per explanation.

    python -m benchmarks.explain [--threads 1] [--path-steps 16] [--configs demo paper]
        [--out PATH]

Each stage is timed as ``flows.explain`` runs it on a one-pixel window: on a region of random
reflectance as wide as the model's own context around the window (rounded to the 60 m
lattice), one forward and one backward pass per point of the path (a fusion stage: one
forward pass and one backward pass per group). ``demo`` is the shipped demo weights; ``paper``
random weights of the paper's sizes (the RGB model: U-Net and encoders as
``DiffFuSRConfig()``, windows of 64 10 m pixels; the fusion: 64 features, 5 blocks, growth 32),
which time as trained ones do. The whole DDIM chain is timed with ``--chain-steps`` steps and
scaled to the product's 20 (its cost is linear in the steps, as is its activation memory,
which the peak resident memory shows). An explanation costs (path steps + 1) points.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import peak_rss_mb, write_json
from pipeline.explain.differentiable import fusion_function, own_halo, rgb_function
from pipeline.explain.lam import Path as BlurPath
from pipeline.explain.lam import detector, integrate
from pipeline.explain.target import Region, Window
from pipeline.models.baselines import Bicubic, GramSchmidt
from pipeline.models.diffusion.network import DiffFuSR, DiffFuSRConfig
from pipeline.models.diffusion.rgb import DEFAULT_WINDOW, DiffFuSRRGB
from pipeline.models.fusion.model import DiffFuSRFusion
from pipeline.models.fusion.network import FusionNetwork
from pipeline.models.fusion.weights import save_fusion_network
from pipeline.models.weights import FORMAT, INFERENCE_PREFIXES, write_safetensors

SEED = 0
#: The product's DDIM steps, to which a chain timed with fewer steps is scaled.
PRODUCT_STEPS = 20
#: The explained pixel, far from the region's edges.
WINDOW = Window(row=2001, col=2002)


def paper_rgb_weights(folder: Path) -> str:
    torch.manual_seed(SEED)
    config = DiffFuSRConfig()
    state = {
        k: v for k, v in DiffFuSR(config).state_dict().items() if k.startswith(INFERENCE_PREFIXES)
    }
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config.to_lit_args()),
        "window": str(DEFAULT_WINDOW),
    }
    return str(write_safetensors(state, folder / "paper-rgb.safetensors", metadata).path)


def paper_fusion_weights(folder: Path) -> str:
    torch.manual_seed(SEED)
    return str(
        save_fusion_network(FusionNetwork(64, 5, 32), folder / "paper-fusion.safetensors").path
    )


def time_points(forward, detectors, inputs, scales) -> float:
    """Seconds per point of the path (a path of one step: two points)."""
    started = time.perf_counter()
    integrate(forward, detectors, inputs, scales, BlurPath(steps=1))
    return (time.perf_counter() - started) / 2


def rgb_case(model, level: int | None) -> float:
    region = Region.around(WINDOW, own_halo(model))
    x = torch.from_numpy(
        np.random.default_rng(SEED).random((3, region.height, region.width), dtype=np.float32) * 0.3
    )
    forward = rgb_function(model, (region.top, region.left), region.local_coarse(WINDOW), level)
    return time_points(forward, {"rgb": detector("value", *region.local(WINDOW))}, [x], [1])


def fusion_case(model, groups: dict[str, tuple[str, ...]]) -> float:
    resolutions = [int(g.split()[1]) for g in groups]
    region = Region.around(WINDOW, own_halo(model))
    rng = np.random.default_rng(SEED)
    bands = torch.from_numpy(rng.random((12, region.height, region.width), dtype=np.float32) * 0.3)
    guide = torch.from_numpy(
        rng.random((3, 4 * region.height, 4 * region.width), dtype=np.float32) * 0.3
    )
    detect = detector("value", *region.local(WINDOW))
    detectors = {
        g: (lambda out, b=b: detect(torch.stack([out[x] for x in b]))) for g, b in groups.items()
    }
    return time_points(fusion_function(model, resolutions), detectors, [bands, guide], [1, 4])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--path-steps", type=int, default=BlurPath().steps)
    p.add_argument(
        "--chain-steps",
        type=int,
        default=2,
        help="DDIM steps of the timed chain, scaled to 20 (default: 2)",
    )
    p.add_argument("--configs", nargs="+", default=["demo", "paper"])
    p.add_argument("--out", default="benchmarks/results/explain.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    one = {"fusion 20 m": ("B05", "B06", "B07", "B8A", "B11", "B12")}
    three = {**one, "fusion 10 m": ("B08",), "fusion 60 m": ("B01", "B09")}
    rows: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["bicubic rgb"] = rgb_case(Bicubic(), None)
        rows["gram-schmidt, 3 groups"] = fusion_case(GramSchmidt(), three)
        for config in args.configs:
            weights = paper_rgb_weights(Path(tmp)) if config == "paper" else None
            fusion_weights = paper_fusion_weights(Path(tmp)) if config == "paper" else None
            chain = DiffFuSRRGB(weights=weights, steps=args.chain_steps, device="cpu")
            rows[f"difffusr {config}, one step"] = rgb_case(chain, 500)
            rows[f"difffusr {config}, {PRODUCT_STEPS}-step chain"] = (
                rgb_case(chain, None) * PRODUCT_STEPS / args.chain_steps
            )
            fusion = DiffFuSRFusion(weights=fusion_weights, device="cpu")
            rows[f"difffusr-fusion {config}, 1 group"] = fusion_case(fusion, one)
            rows[f"difffusr-fusion {config}, 3 groups"] = fusion_case(fusion, three)
    points = args.path_steps + 1
    print(
        f"seconds on the CPU ({args.threads} thread(s)), one-pixel window; an explanation "
        f"of {args.path_steps} path steps = {points} points"
    )
    print(f"{'stage':<40} {'s/point':>9} {'s/window':>9}")
    for name, seconds in rows.items():
        print(f"{name:<40} {seconds:9.2f} {seconds * points:9.1f}")
    peak = peak_rss_mb()
    print(f"peak resident memory: {peak:.0f} MB")
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
        },
        "path_steps": args.path_steps,
        "chain_steps": args.chain_steps,
        "seconds_per_point": rows,
        "seconds_per_window": {k: v * points for k, v in rows.items()},
        "peak_rss_mb": peak,
    }
    write_json(args.out, result)


if __name__ == "__main__":
    main()
