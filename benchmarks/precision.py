"""How much bf16 autocast changes the DiffFuSR RGB model's output against fp32.

    python -m benchmarks.precision [--weights fixture demo] [--steps 20] [--device cpu]
        [--threads N] [--json PATH]

For the reference fixture checkpoint (small sizes, random weights) and the shipped demo weights,
on the demo's held-out strip (the images of ``python -m flows.benchmark``): the reflectance
change |bf16 − fp32| of the model's 2.5 m output from each image's real 10 m pixels (what a
product holds), and the Wald-protocol scores (PSNR, SSIM, OpenSR-test metrics) of both
precisions from the images degraded to 40 m. The initial noise follows the pixel position, so
both precisions start from the same noise.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import device_name, write_json
from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.evaluation.benchmark import run_benchmark
from pipeline.evaluation.data import stac_patches
from pipeline.evaluation.report import summarize
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import RGB_INDEX
from pipeline.models.diffusion.rgb import DEMO_WEIGHTS, DiffFuSRRGB

ROOT = Path(__file__).resolve().parents[1]
#: The reference fixture checkpoint (small sizes, random weights) and the trained demo weights.
WEIGHTS = {
    "fixture": str(ROOT / "tests" / "fixtures" / "difffusr" / "sr_small.ckpt"),
    "demo": str(DEMO_WEIGHTS),
}
PRECISIONS = ("fp32", "bf16")


def change(weights: str, patches: list, steps: int, device: str) -> dict[str, float]:
    """Max and mean |bf16 − fp32| in reflectance over the 2.5 m outputs of the patches' own
    10 m RGB, and the seconds each precision took."""
    outputs: dict[str, list[np.ndarray]] = {p: [] for p in PRECISIONS}
    seconds = dict.fromkeys(PRECISIONS, 0.0)
    for precision in PRECISIONS:
        model = DiffFuSRRGB(weights=weights, steps=steps, device=device, precision=precision)
        for patch in patches:
            started = time.perf_counter()
            outputs[precision].append(model(patch.bands[RGB_INDEX], patch.origin))
            seconds[precision] += time.perf_counter() - started
    diff = np.concatenate(
        [np.abs(b - f).ravel() for b, f in zip(outputs["bf16"], outputs["fp32"], strict=True)]
    )
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "p99_abs": float(np.quantile(diff, 0.99)),
        "seconds": seconds,
    }


def scores(weights: str, data, steps: int, device: str) -> dict[str, dict[str, float]]:
    """Mean Wald-protocol scores of each precision over the images."""
    models = {
        p: DiffFuSRRGB(weights=weights, steps=steps, device=device, precision=p) for p in PRECISIONS
    }
    result = run_benchmark(data, models, {})
    table: dict[str, dict[str, float]] = {}
    for row in summarize(result.scores):
        table.setdefault(row.model, {})[row.metric] = row.mean
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", choices=list(WEIGHTS), default=list(WEIGHTS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--json", default="benchmarks/results/precision.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = stac_patches(
        str(DEMO_CATALOG), read_aoi(str(DEMO_AOI)), *DEMO_DATES, patch=48, held_out=0.25
    )
    machine = device_name(torch.device(args.device))
    if not args.device.startswith("cuda"):
        machine += f", {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    print(f"{len(data.patches)} images of the held-out strip, {args.steps} steps, {machine}")
    results = {}
    for name in args.weights:
        weights = WEIGHTS[name]
        results[name] = {
            "reflectance_change": change(weights, data.patches, args.steps, args.device),
            "wald_scores": scores(weights, data, args.steps, args.device),
        }
        d = results[name]["reflectance_change"]
        print(
            f"{name} weights: |bf16 - fp32| max {d['max_abs']:.5f}, mean {d['mean_abs']:.6f}, "
            f"99th percentile {d['p99_abs']:.5f} reflectance"
        )
        for precision, values in results[name]["wald_scores"].items():
            print(f"  {precision}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    settings = {**vars(args), "machine": machine, "images": [p.name for p in data.patches]}
    write_json(args.json, {"settings": settings, "results": results})


if __name__ == "__main__":
    main()
