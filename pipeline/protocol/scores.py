"""The scores of one evaluation image: the RGB stage's (the paper's Table I) and the fusion
stage's per band group (its Table IV), as plain numbers."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from pipeline.geo.bands import FUSED_BY_RESOLUTION, NATIVE_RATIO, REFLECTANCE_BANDS, SCALE
from pipeline.geo.resample import block_mean, upsample_nearest
from pipeline.models.fusion.network import FUSION_GROUPS_BY_RESOLUTION
from pipeline.quality.footprints import blockiness
from pipeline.quality.fusion import SSIM_SIGMA, fusion_metrics
from pipeline.quality.opensr import opensr_metrics

#: Metrics of the RGB stage: PSNR and SSIM (data range 1), the OpenSR-test ones, then the
#: blockiness at the input's pixel edges.
RGB_METRICS = (
    "psnr",
    "ssim",
    "reflectance",
    "spectral",
    "spatial",
    "synthesis",
    "improvement",
    "omission",
    "hallucination",
    "blockiness",
)
#: Metrics of the fusion stage, per band group.
FUSION_METRICS = ("r2", "cross_correlation", "ssim", "psnr", "mse", "ergas")
#: Each group's scored bands: the fused ones (the 10 m group's B04 B03 B02 are the guide).
SCORED = FUSED_BY_RESOLUTION
#: ERGAS h/l in the Wald protocol: every band lost a factor 4.
WALD_ERGAS_RATIO = dict.fromkeys(SCORED, 1 / SCALE)
#: ERGAS h/l at full resolution (no reference): the 2.5 m output over each group's native pixel.
NO_REFERENCE_ERGAS_RATIO = {r: 1 / g.ratio_2p5m for r, g in FUSION_GROUPS_BY_RESOLUTION.items()}
#: Side of scikit-image's Gaussian SSIM window for σ = SSIM_SIGMA (truncated at 3.5 σ).
SSIM_WINDOW = 2 * int(3.5 * SSIM_SIGMA + 0.5) + 1


def rgb_scores(
    lr: np.ndarray, sr: np.ndarray, hr: np.ndarray
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``RGB_METRICS`` of ``sr`` (3, P, P) given its input ``lr`` and the truth ``hr``, and the
    OpenSR-test per-pixel maps (``reflectance``, ``spectral``, ``correctness``)."""
    fusion = fusion_metrics(sr, hr, ratio=1 / SCALE, data_range=1.0).mean
    opensr = opensr_metrics(lr, sr, hr)
    scalars = {f.name: getattr(opensr, f.name) for f in fields(opensr) if f.name != "maps"}
    return {
        "psnr": fusion["psnr"],
        "ssim": fusion["ssim"],
        **scalars,
        "blockiness": blockiness(sr, SCALE),
    }, opensr.maps


def group_metrics(pred: np.ndarray, truth: np.ndarray, ratio: float) -> dict[str, dict]:
    """``fusion_metrics`` (data range 1) as plain numbers: ``mean`` per metric over the bands,
    ``per_band`` lists. A grid narrower than SSIM's window (a small 60 m grid) is repeated
    first, which leaves every other metric as it is, and its SSIM is reported as NaN rather
    than a number the window cannot give."""
    narrow = min(truth.shape[1:]) < SSIM_WINDOW
    if narrow:
        repeat = math.ceil(SSIM_WINDOW / min(truth.shape[1:]))
        pred, truth = upsample_nearest(pred, repeat), upsample_nearest(truth, repeat)
    result = fusion_metrics(pred, truth, ratio=ratio, data_range=1.0)
    mean = {m: result.mean[m] for m in FUSION_METRICS}
    per_band = {m: [float(v) for v in result.bands[m]] for m in FUSION_METRICS}
    if narrow:
        mean["ssim"], per_band["ssim"] = math.nan, [math.nan] * len(pred)
    return {"mean": mean, "per_band": per_band}


def fusion_scores(
    output: np.ndarray,
    natives: dict[str, np.ndarray],
    per_10m: int,
    ergas_ratio: dict[int, float],
    labels: dict[str, str],
) -> dict[str, dict]:
    """Per group (and its real bands alone, when it mixes both), the output (12, H, W)
    averaged onto each band's native grid against that grid; ``per_10m`` output pixels per
    10 m pixel, ``ergas_ratio`` the h/l of ERGAS per group."""
    scores = {}
    for resolution, bands in SCORED.items():
        index = [REFLECTANCE_BANDS.index(b) for b in bands]
        pred = block_mean(output[index], per_10m * NATIVE_RATIO[bands[0]])
        truth = np.stack([natives[b] for b in bands])
        subsets = {f"{resolution} m group": bands}
        real = tuple(b for b in bands if labels[b] == "real")
        if real and real != bands:
            subsets[f"{resolution} m group, real bands only"] = real
        for name, subset in subsets.items():
            keep = [bands.index(b) for b in subset]
            ratio = ergas_ratio[resolution]
            scores[name] = {
                "bands": list(subset),
                "ergas_ratio": ratio,
                **group_metrics(pred[keep], truth[keep], ratio),
            }
    return scores
