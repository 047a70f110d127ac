"""Full-reference metrics of a fused (sharpened) image against its truth, per band.

These are the conventional pansharpening/fusion scores (R², cross-correlation, SSIM, PSNR, MSE,
ERGAS) used in the DiffFuSR fusion tables. PSNR and SSIM depend on the stated data range, and
ERGAS on the resolution ratio, so both are explicit arguments and must be reported with the
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

#: SSIM as in Wang et al. (2004): 11×11 Gaussian window of σ = 1.5 px, population
#: statistics, K1 = 0.01 and K2 = 0.03 (scikit-image's defaults for these constants).
SSIM_SIGMA = 1.5


@dataclass(frozen=True)
class FusionResult:
    """``bands``: one value per band for each metric; ``mean``: one value per metric.

    ``mean`` is the arithmetic mean over bands, except ``ergas``, whose aggregate is its own
    definition (the root mean square of the per-band relative errors) and not a mean of the
    per-band values.
    """

    bands: dict[str, np.ndarray]
    mean: dict[str, float]


def fusion_metrics(
    prediction: np.ndarray, truth: np.ndarray, *, ratio: float, data_range: float = 1.0
) -> FusionResult:
    """Compare ``prediction`` with ``truth``, both (C, H, W) or (H, W) reflectance.

    ``ratio`` is the high- over the low-resolution pixel size (2.5 m / 10 m = 0.25, 2.5 m / 20 m
    = 0.125, 2.5 m / 60 m ≈ 0.0417), the h/l of ERGAS = 100 · h/l · sqrt(mean_b (RMSE_b / μ_b)²)
    with μ_b the mean of the true band. ``data_range`` is the span of possible values (1.0 for
    reflectance) used by PSNR = 10 log10(range² / MSE) and SSIM.

    Per band: MSE = mean((p − t)²); R² = 1 − Σ(p − t)² / Σ(t − t̄)², the coefficient of
    determination with the truth as reference (NaN for a constant true band); cross-correlation
    is Pearson's r (NaN if either band is constant); PSNR is inf for identical bands; the
    per-band ERGAS is 100 · h/l · RMSE_b / μ_b. NaN pixels propagate into every score.
    """
    p, t = (np.asarray(x, dtype=np.float64) for x in (prediction, truth))
    if p.ndim == 2:
        p, t = p[None], t[None]
    if p.ndim != 3 or p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and truth {t.shape} must be equal (C, H, W)")
    if not ratio > 0 or not data_range > 0:
        raise ValueError(f"ratio ({ratio}) and data_range ({data_range}) must be positive")

    error = p - t
    mse = (error**2).mean(axis=(1, 2))
    relative = np.sqrt(mse) / t.mean(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        bands = {
            "r2": 1 - (error**2).sum(axis=(1, 2)) / _centred(t, t).sum(axis=(1, 2)),
            "cross_correlation": _centred(p, t).sum(axis=(1, 2))
            / np.sqrt(_centred(p, p).sum(axis=(1, 2)) * _centred(t, t).sum(axis=(1, 2))),
            "ssim": np.array([_ssim(pb, tb, data_range) for pb, tb in zip(p, t, strict=True)]),
            "psnr": 10 * np.log10(data_range**2 / mse),
            "mse": mse,
            "ergas": 100 * ratio * relative,
        }
    mean = {name: float(values.mean()) for name, values in bands.items()}
    mean["ergas"] = float(100 * ratio * np.sqrt((relative**2).mean()))
    return FusionResult(bands=bands, mean=mean)


def _centred(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel product of the deviations of x and y from their band means."""
    return (x - x.mean(axis=(1, 2), keepdims=True)) * (y - y.mean(axis=(1, 2), keepdims=True))


def _ssim(prediction: np.ndarray, truth: np.ndarray, data_range: float) -> float:
    return float(
        structural_similarity(
            truth,
            prediction,
            data_range=data_range,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )
