"""Wald-protocol evaluation of RGB models on held-out real Sentinel-2 (the demo's test strip).

    python -m benchmarks.sr_wald [--weights W.safetensors] [--patch 64] [--steps 20]

The real 10 m B04 B03 B02 composite of the held-out eastern strip (never sampled in training:
``SentinelWaldSource(split="test")``, as ``pipeline.protocol.split`` cuts it) is the truth.
Each non-overlapping clear window is degraded to 40 m the way the reference validates
(isotropic Gaussian σ 1.2, bicubic ÷4, no noise; kept in float rather than rounded to 8
bits), super-resolved ×4 by each model and scored against the truth: PSNR and SSIM (data
range 1), and the OpenSR-test metrics
(``pipeline.protocol.scores``, as ``python -m flows.benchmark`` scores them). Prints a markdown
table (mean ± std over windows) and writes a JSON. The flow does the same on any AOI, with
the fusion stage and figures; this script keeps the windows of the model card's table.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks._common import write_json
from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import SCALE
from pipeline.geo.resample import upsample_cubic
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.protocol.scores import RGB_METRICS, rgb_scores
from pipeline.protocol.split import clear_tiles
from pipeline.protocol.wald import rgb_input
from pipeline.train.sources import SentinelWaldSource


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="DiffFuSR weights (default: the shipped demo weights)")
    p.add_argument("--patch", type=int, default=64, help="HR window, 10 m pixels")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--json", default="benchmarks/results/sr_wald.json")
    return p.parse_args()


def test_windows(patch: int, test_fraction: float) -> list[np.ndarray]:
    """Non-overlapping, fully clear windows of the held-out columns of the RGB stage's
    training source."""
    source = SentinelWaldSource(
        str(DEMO_CATALOG),
        read_aoi(str(DEMO_AOI)),
        *DEMO_DATES,
        patch=patch,
        split="test",
        test_fraction=test_fraction,
    )
    clear = np.isfinite(source.image).all(axis=0)
    corners = clear_tiles(clear, patch, (0, clear.shape[0]), source.columns)
    return [source.image[:, y : y + patch, x : x + patch] for y, x in corners]


def score(
    models: dict[str, Any], truths: list[np.ndarray], lr_size: int
) -> tuple[dict[str, list[dict[str, float]]], dict[str, float]]:
    """Every model's scores on every window, and its seconds per window."""
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    seconds = dict.fromkeys(models, 0.0)
    for i, (lr, truth) in enumerate(zip(rgb_input(np.stack(truths)), truths, strict=True)):
        for name, run in models.items():
            started = time.perf_counter()
            sr = run(lr, (0, i * lr_size))
            seconds[name] += time.perf_counter() - started
            rows[name].append(rgb_scores(lr, sr, truth)[0])
    return rows, {k: v / len(truths) for k, v in seconds.items()}


def mean_std(rows: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and std over the windows of every model and metric (NaN left out)."""
    return {
        name: {
            m: (float(np.nanmean([r[m] for r in rs])), float(np.nanstd([r[m] for r in rs])))
            for m in RGB_METRICS
        }
        for name, rs in rows.items()
    }


def main() -> None:
    args = parse_args()
    truths = test_windows(args.patch, args.test_fraction)
    lr_size = args.patch // SCALE
    model = DiffFuSRRGB(
        weights=args.weights, steps=args.steps, samples=args.samples, window=lr_size, overlap=0
    )
    models = {
        "bicubic": lambda lr, origin: upsample_cubic(lr, SCALE),
        "difffusr": model,
    }
    rows, seconds = score(models, truths, lr_size)
    table = mean_std(rows)
    print(
        f"{len(truths)} held-out windows of {args.patch} px at 10 m "
        f"(LR {lr_size} px at 40 m), DiffFuSR {args.steps} steps, weights sha256 "
        f"{model.weights_sha256[:12]}…"
    )
    print("| model | " + " | ".join(RGB_METRICS) + " |")
    print("|---|" + "---|" * len(RGB_METRICS))
    for name, values in table.items():
        cells = [f"{mean:.4f} ± {std:.4f}" for mean, std in values.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    result = {
        "settings": vars(args),
        "windows": len(truths),
        "weights_sha256": model.weights_sha256,
        "mean_std": table,
        "per_window": rows,
        "seconds_per_window": seconds,
    }
    write_json(args.json, result)


if __name__ == "__main__":
    main()
