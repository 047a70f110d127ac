"""Wald-protocol evaluation of RGB models on held-out real Sentinel-2 (the demo's test strip).

    python benchmarks/sr_wald.py [--weights W.safetensors] [--patch 64] [--steps 20]

The real 10 m B04 B03 B02 composite of the held-out eastern strip (never sampled in training:
``SentinelWaldSource(split="test")``) is the truth. Each non-overlapping clear window is
degraded to 40 m the way the reference validates (isotropic Gaussian σ 1.2, bicubic ÷4, no
noise; kept in float rather than rounded to 8 bits), super-resolved ×4 by each model and
scored against the truth: PSNR and SSIM (data range 1), and the OpenSR-test metrics
(``pipeline.evaluation``, as ``python -m flows.benchmark`` scores them). Prints a markdown
table (mean ± std over windows) and writes a JSON. The flow does the same on any AOI, with
the fusion stage and figures; this script keeps the windows of the model card's table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.evaluation.scores import RGB_METRICS, rgb_scores
from pipeline.evaluation.wald import rgb_input
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import SCALE
from pipeline.geo.resample import upsample_cubic
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.train.sources import SentinelWaldSource


def test_windows(source: SentinelWaldSource, patch: int) -> list[np.ndarray]:
    """Non-overlapping, fully clear windows of the held-out columns."""
    first, last = source.columns
    rows = source.image.shape[1]
    found = []
    for y in range(0, rows - patch + 1, patch):
        for x in range(first, last - patch + 1, patch):
            window = source.image[:, y : y + patch, x : x + patch]
            if np.isfinite(window).all():
                found.append(window)
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="DiffFuSR weights (default: the shipped demo weights)")
    p.add_argument("--patch", type=int, default=64, help="HR window, 10 m pixels")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--json", default="benchmarks/results/sr_wald.json")
    args = p.parse_args()

    source = SentinelWaldSource(
        str(DEMO_CATALOG),
        read_aoi(str(DEMO_AOI)),
        *DEMO_DATES,
        patch=args.patch,
        split="test",
        test_fraction=args.test_fraction,
    )
    truths = test_windows(source, args.patch)
    lows = rgb_input(np.stack(truths))
    lr_size = args.patch // SCALE
    model = DiffFuSRRGB(
        weights=args.weights, steps=args.steps, samples=args.samples, window=lr_size, overlap=0
    )
    models = {
        "bicubic": lambda lr, origin: upsample_cubic(lr, SCALE),
        "difffusr": model,
    }
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    seconds = dict.fromkeys(models, 0.0)
    for i, (lr, truth) in enumerate(zip(lows, truths, strict=True)):
        for name, run in models.items():
            started = time.perf_counter()
            sr = run(lr, (0, i * lr_size))
            seconds[name] += time.perf_counter() - started
            rows[name].append(rgb_scores(lr, sr, truth)[0])
    table = {
        name: {
            m: (float(np.nanmean([r[m] for r in rs])), float(np.nanstd([r[m] for r in rs])))
            for m in RGB_METRICS
        }
        for name, rs in rows.items()
    }
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
        "seconds_per_window": {k: v / len(truths) for k, v in seconds.items()},
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
