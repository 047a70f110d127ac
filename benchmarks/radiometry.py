"""What the radiometric guarantee does on real bands: exactness, blockiness, convergence, cost.

    python -m benchmarks.radiometry [--steps 20] [--threads 1]
        [--json benchmarks/results/radiometry.json]

Data: the demo's 12-band composite at 10 m (no-data filled with 0, as the pipeline fills it for
the models), whole, and its held-out strip (rows 6–150, columns 198–246: east of the cut that
training of both shipped demo models held out, so a scene those weights never saw).

* RGB stage, 10 m → 2.5 m, on the strip: DiffFuSR with the shipped demo weights, sampled once
  without the guarantee; that output as it is, with the old guarantee (one constant added per
  10 m pixel) and with the smooth one (``pipeline.models.radiometry``); bicubic ×4 for reference.
* Fusion stage, on the whole composite and on the strip: DiffFuSR fusion with its shipped demo
  weights (bicubic RGB as the guide), likewise raw, old and smooth; bicubic ×4·ratio of each
  band's native grid (the ``bicubic`` fusion baseline) for reference. Per group: B08 (footprint
  4 px), the 20 m bands (8 px), the 60 m bands (24 px).

Per row: max |footprint mean − input| (reflectance), the blockiness at the footprint
(``pipeline.quality.blockiness``: how much larger steps across footprint edges are than
inside) and the lowest reflectance (above 0: the guarantee's floor at 0 never acted).
Convergence: on the same residuals, the largest remainder left for the final constant after
the inverse filter with 0…8 taps, and after 0…16 iterations of plain back-projection
(bilinear, ω 1.6, the best fixed step) for comparison. Cost: seconds per output megapixel of
``make_consistent`` on a 1392 × 1392 band (a 240 px block with a 54 px halo, ×4).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from benchmarks._common import demo_composite, write_json
from pipeline.geo.bands import NATIVE_RATIO, RGB_BANDS, RGB_INDEX, SCALE
from pipeline.geo.resample import block_mean, upsample_cubic, upsample_linear, upsample_nearest
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.fusion.model import DiffFuSRFusion, native_grids
from pipeline.models.radiometry import TAPS, correction_reach, inverse_stencil, make_consistent
from pipeline.quality.footprints import blockiness

#: The held-out strip of the demo composite, rows and columns at 10 m.
STRIP = (slice(6, 150), slice(198, 246))
#: The fusion groups scored, by footprint on the 2.5 m grid.
GROUPS = {
    "B08 (4 px)": ("B08",),
    "20 m (8 px)": ("B05", "B06", "B07", "B8A", "B11", "B12"),
    "60 m (24 px)": ("B01", "B09"),
}
#: Over-relaxation of plain back-projection: 2 / (smallest + largest eigenvalue of the
#: footprint means of bilinear upsampling, 1/4 and 1), which shrinks the error 0.6× a step.
OMEGA = 1.6


def piecewise(high: np.ndarray, native: np.ndarray, footprint: int) -> np.ndarray:
    """The old guarantee: the footprint's residual added to each of its pixels."""
    mean = block_mean(high[None].astype(np.float64), footprint)[0]
    return (high + upsample_nearest(native - mean, footprint)).astype(np.float32)


def max_error(high: np.ndarray, native: np.ndarray, footprint: int) -> float:
    return float(np.abs(block_mean(high[None].astype(np.float64), footprint)[0] - native).max())


def variants(
    raw: dict[str, np.ndarray],
    natives: dict[str, np.ndarray],
    footprint: int,
    baseline: dict[str, np.ndarray],
) -> dict[str, dict[str, np.ndarray]]:
    """Per row, each band: the baseline, the model as it is, with the old and the new
    guarantee."""
    return {
        "bicubic": baseline,
        "no guarantee": raw,
        "old: one constant per footprint": {
            b: piecewise(raw[b], natives[b], footprint) for b in raw
        },
        "smooth (this guarantee)": {b: make_consistent(raw[b], natives[b], footprint) for b in raw},
    }


def score(
    rows: dict[str, dict[str, np.ndarray]], natives: dict[str, np.ndarray], footprint: int
) -> dict[str, dict[str, float]]:
    return {
        name: {
            "max_error": max(max_error(x, natives[b], footprint) for b, x in bands.items()),
            "blockiness": blockiness(np.stack(list(bands.values())), footprint),
            "min": float(min(x.min() for x in bands.values())),
        }
        for name, bands in rows.items()
    }


def convergence(raw: np.ndarray, native: np.ndarray, footprint: int) -> dict[str, Any]:
    """Largest remainder before the final constant: filter taps, then plain iterations."""
    residual = native - block_mean(raw[None].astype(np.float64), footprint)[0]

    def left(c: np.ndarray) -> float:
        return float(
            np.abs(residual - block_mean(upsample_linear(c[None], footprint), footprint)[0]).max()
        )

    taps = {t: left(inverse_stencil(residual, t)) for t in range(9)}
    iterations, c = {}, np.zeros_like(residual)
    for k in range(17):
        iterations[k] = left(c)
        c = c + OMEGA * (residual - block_mean(upsample_linear(c[None], footprint), footprint)[0])
    return {"residual_max": float(np.abs(residual).max()), "taps": taps, "iterations": iterations}


def rgb_stage(strip: np.ndarray, steps: int) -> dict[str, Any]:
    rgb = strip[RGB_INDEX]
    model = DiffFuSRRGB(steps=steps, device="cpu", consistent=False)
    started = time.perf_counter()
    out = model(rgb, (0, 0))
    seconds = time.perf_counter() - started
    raw = dict(zip(RGB_BANDS, out, strict=True))
    natives = dict(zip(RGB_BANDS, rgb, strict=True))
    cubic = dict(zip(RGB_BANDS, upsample_cubic(rgb, SCALE), strict=True))
    return {
        "sha256": model.weights_sha256,
        "steps": steps,
        "seconds": seconds,
        "rows": score(variants(raw, natives, SCALE, cubic), natives, SCALE),
        "convergence": {b: convergence(raw[b], natives[b], SCALE) for b in RGB_BANDS},
    }


def fusion_stage(image: np.ndarray) -> dict[str, Any]:
    model = DiffFuSRFusion(device="cpu")
    natives = native_grids(image)
    started = time.perf_counter()
    fused = model.fuse(image, upsample_cubic(image[RGB_INDEX], SCALE))
    seconds = time.perf_counter() - started
    groups = {}
    for name, bands in GROUPS.items():
        ratio = NATIVE_RATIO[bands[0]]
        footprint = SCALE * ratio
        cubic = {b: upsample_cubic(natives[b][None], footprint)[0] for b in bands}
        raw = {b: fused[b] for b in bands}
        groups[name] = {
            "rows": score(variants(raw, natives, footprint, cubic), natives, footprint),
            "convergence": convergence(raw[bands[-1]], natives[bands[-1]], footprint),
            "convergence_band": bands[-1],
        }
    return {"sha256": model.weights_sha256, "seconds": seconds, "groups": groups}


def cost() -> dict[int, float]:
    """Seconds per output megapixel of the correction, by footprint."""
    rng = np.random.default_rng(0)
    side = 1392
    high = (0.1 + 0.2 * rng.random((side, side))).astype(np.float32)
    result = {}
    for footprint in (4, 8, 24):
        native = 0.1 + 0.2 * rng.random((side // footprint, side // footprint))
        make_consistent(high, native, footprint)
        started = time.perf_counter()
        make_consistent(high, native, footprint)
        result[footprint] = (time.perf_counter() - started) / (side * side / 1e6)
    return result


def print_rows(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"| {'row':<33} | max |mean − input| | blockiness | min reflectance |")
    print(f"|{'-' * 35}|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name:<33} | {r['max_error']:.2e} | {r['blockiness']:.4f} | {r['min']:.4f} |")


def print_convergence(title: str, c: dict[str, Any]) -> None:
    print(
        f"\n{title}: largest residual {c['residual_max']:.4f}; remainder left for the final "
        "constant"
    )
    print("  filter taps " + " ".join(f"{t}: {v:.1e}" for t, v in c["taps"].items()))
    print(
        "  iterations  "
        + " ".join(f"{k}: {v:.1e}" for k, v in c["iterations"].items() if k % 2 == 0)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of the RGB model")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--json", default="benchmarks/results/radiometry.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    image = demo_composite(0)
    strip = np.ascontiguousarray(image[:, STRIP[0], STRIP[1]])
    assert (strip != 0).any(axis=0).all(), "the strip holds no-data"
    print(
        f"TAPS {TAPS}: reach {correction_reach(1)} native px; halo added: RGB "
        f"{correction_reach(1)} px, fusion {correction_reach(6)} px at 10 m"
    )
    result: dict[str, Any] = {
        "taps": TAPS,
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, "
        f"torch threads {torch.get_num_threads()}",
        "rgb_strip": rgb_stage(strip, args.steps),
        "fusion_whole": fusion_stage(image),
        "fusion_strip": fusion_stage(strip),
        "seconds_per_output_megapixel": cost(),
    }
    rgb = result["rgb_strip"]
    print_rows(
        f"RGB stage on the held-out strip ({strip.shape[1]} × {strip.shape[2]} px at "
        f"10 m), DiffFuSR demo weights, {args.steps} steps",
        rgb["rows"],
    )
    for band in RGB_BANDS:
        print_convergence(f"RGB {band}", rgb["convergence"][band])
    for key, label in (("fusion_whole", "whole demo composite"), ("fusion_strip", "strip")):
        for name, group in result[key]["groups"].items():
            print_rows(f"fusion, {label}, {name}", group["rows"])
            print_convergence(f"fusion, {label}, {group['convergence_band']}", group["convergence"])
    print(
        "\nseconds per output megapixel of make_consistent: "
        + ", ".join(
            f"footprint {f}: {s:.3f}" for f, s in result["seconds_per_output_megapixel"].items()
        )
    )
    result["load_average_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    print(f"load average {load_start:.2f} → {result['load_average_1min']['end']:.2f}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
