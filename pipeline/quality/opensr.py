"""The OpenSR-test metrics of a super-resolved image: consistency, synthesis, correctness.

They answer three questions about ``sr`` given the input ``lr`` and a reference ``hr``:
does ``sr`` still agree with ``lr`` once brought back to its resolution (consistency), how much
detail did it add beyond a bilinear upsampling of ``lr`` (synthesis), and is that detail true
to ``hr`` (improvement), missing (omission) or invented (hallucination)? The definitions and
constants are those of opensr-test 1.3.3 with its default configuration, so that numbers are
comparable with the published benchmark tables; the per-pixel maps behind them are returned as
well, for use as quality layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from skimage.exposure import match_histograms

from pipeline.quality.alignment import align
from pipeline.quality.spectral import spectral_angle

#: Class codes of the correctness map.
IMPROVEMENT, OMISSION, HALLUCINATION = 0, 1, 2
#: Correctness map value of pixels the metric does not judge (border, unchanged pixels).
NOT_ASSESSED = -1

#: Fraction of pixels whose LR→HR distance sets the threshold of the correctness mask.
MASK_QUANTILE = 0.75
#: Steepness of the improvement/omission/hallucination scores (im, om and ha alike).
SCORE_LAMBDA = 0.05
#: Temperature of the soft-min that turns the three scores into probabilities.
TEMPERATURE = 0.25
#: Keeps the normalised difference finite where both reflectances are zero.
ND_EPSILON = 1e-8


@dataclass(frozen=True)
class OpenSRResult:
    """Scalar metrics (pixel means) and their per-pixel maps.

    ``maps`` holds ``reflectance`` and ``spectral`` (LR grid, NaN on the cropped border) and
    ``correctness`` (HR grid, int8 class codes, ``NOT_ASSESSED`` outside the judged pixels).
    """

    reflectance: float
    spectral: float
    spatial: float
    synthesis: float
    improvement: float
    omission: float
    hallucination: float
    maps: dict[str, np.ndarray] = field(repr=False)

    def as_opensr_dict(self) -> dict[str, float]:
        """The metrics under the key names opensr-test reports them with."""
        return {
            "reflectance": self.reflectance,
            "spectral": self.spectral,
            "spatial": self.spatial,
            "synthesis": self.synthesis,
            "ha_metric": self.hallucination,
            "om_metric": self.omission,
            "im_metric": self.improvement,
        }


def opensr_metrics(
    lr: np.ndarray,
    sr: np.ndarray,
    hr: np.ndarray,
    *,
    border: int = 16,
    rgb_bands: tuple[int, ...] = (0, 1, 2),
) -> OpenSRResult:
    """OpenSR-test metrics of ``sr`` (C, H, W) against ``lr`` (C, h, w) and ``hr`` (C, H, W).

    The scale is H/h, an integer. ``border`` HR pixels (border/scale LR pixels) are dropped on
    every side first, because models are weakest there; ``rgb_bands`` picks the bands whose
    mean the LR-consistency registration works on. Values are reflectance, not clamped;
    computations run in float32, as in the reference implementation.
    """
    lr, sr, hr = (np.asarray(x, dtype=np.float32) for x in (lr, sr, hr))
    scale = _scale(lr, sr, hr, border, rgb_bands)
    cut = border // scale
    lr_c = _crop(lr, cut)
    sr_c = _crop(sr, border)
    hr_c = _crop(hr, border)
    lr_up = _resize(lr_c, scale)
    sr_dn = _resize(sr_c, 1 / scale)

    reflectance = _nanmean(np.abs(lr_c - sr_dn), axis=0)
    spectral = spectral_angle(lr_c, sr_dn)
    rgb = list(rgb_bands)
    _, spatial = align(lr_c[rgb], sr_dn[rgb])

    sr_h = harmonise(sr_c, hr_c)
    synthesis = _nanmean(np.abs(lr_up - sr_h), axis=0)
    probabilities = _correctness(lr_up, sr_h, hr_c)
    judged = ~np.isnan(probabilities[0])
    classes = np.full(judged.shape, NOT_ASSESSED, dtype=np.int8)
    classes[judged] = np.argmax(probabilities[:, judged], axis=0)
    improvement, omission, hallucination = (_nanmean(p, axis=None) for p in probabilities)

    return OpenSRResult(
        reflectance=_nanmean(reflectance, axis=None),
        spectral=_nanmean(spectral, axis=None),
        spatial=spatial,
        synthesis=_nanmean(synthesis, axis=None),
        improvement=improvement,
        omission=omission,
        hallucination=hallucination,
        maps={
            "reflectance": _pad(reflectance, cut, np.nan),
            "spectral": _pad(spectral, cut, np.nan),
            "correctness": _pad(classes, border, NOT_ASSESSED),
        },
    )


def harmonise(sr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """``sr`` with each band's histogram matched to ``hr`` and then registered onto ``hr``.

    Removing the systematic radiometric and geometric error first leaves only the
    high-frequency content for the synthesis and correctness metrics to judge.
    """
    matched = match_histograms(sr, hr, channel_axis=0).astype(np.float32)
    moved, _ = align(matched, hr)
    return moved


def normalised_difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel band mean of |x − y| / |x + y|: a scale-free distance between reflectances."""
    return _nanmean(np.abs(x - y) / np.abs(x + y + np.float32(ND_EPSILON)), axis=0)


def _correctness(lr_up: np.ndarray, sr_h: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """(3, H, W) soft-min probabilities of improvement, omission, hallucination.

    Pixels where the upsampled LR is already within the 75th-percentile distance of HR and
    SR changed nothing beyond it carry no information and are NaN.
    """
    d_ref = normalised_difference(lr_up, hr)
    d_im = normalised_difference(sr_h, hr)
    d_om = normalised_difference(sr_h, lr_up)
    k = int(MASK_QUANTILE * d_ref.size)
    threshold = np.partition(d_ref.ravel(), k - 1)[k - 1]
    judged = (d_ref > threshold) | (d_im > threshold) | (d_om > threshold)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = np.where(judged, d_im / d_ref, np.nan).astype(np.float32)
        b = np.where(judged, d_om / d_ref, np.nan).astype(np.float32)
        growth = 1 - np.exp(-(a + b - 1) * np.float32(SCORE_LAMBDA))
        scores = np.stack(
            [a + b * growth, b + a * growth, np.exp(-a * b * np.float32(SCORE_LAMBDA))]
        )
        weights = np.exp(-scores / np.float32(TEMPERATURE))
        return weights / weights.sum(axis=0)


def _resize(x: np.ndarray, factor: float) -> np.ndarray:
    """Antialiased bilinear resampling by ``factor``, the operator both directions use."""
    out = F.interpolate(
        torch.from_numpy(np.ascontiguousarray(x))[None],
        scale_factor=factor,
        mode="bilinear",
        antialias=True,
    )
    return out[0].numpy()


def _nanmean(x: np.ndarray, axis: int | None) -> np.ndarray | float:
    """Mean ignoring NaN (not inf); NaN where nothing is left, without a warning."""
    valid = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, x, 0).sum(axis=axis, dtype=np.float32) / valid.sum(axis=axis)
    return float(mean) if axis is None else mean.astype(np.float32)


def _crop(x: np.ndarray, cut: int) -> np.ndarray:
    return x[:, cut:-cut, cut:-cut] if cut else x


def _pad(x: np.ndarray, cut: int, value: float) -> np.ndarray:
    """Back to the uncropped grid, so that maps line up with the inputs."""
    return np.pad(x, cut, constant_values=value)


def _scale(
    lr: np.ndarray, sr: np.ndarray, hr: np.ndarray, border: int, rgb_bands: tuple[int, ...]
) -> int:
    """The integer HR/LR scale, after checking that the three images fit together."""
    for name, x in (("lr", lr), ("sr", sr), ("hr", hr)):
        if x.ndim != 3:
            raise ValueError(f"{name} must be a (bands, rows, cols) array, not {x.shape}")
    if sr.shape != hr.shape or lr.shape[0] != hr.shape[0]:
        raise ValueError(f"sr {sr.shape}, hr {hr.shape} and lr {lr.shape} do not match")
    scale = hr.shape[1] // lr.shape[1]
    if scale < 1 or hr.shape[1:] != (lr.shape[1] * scale, lr.shape[2] * scale):
        raise ValueError(f"hr {hr.shape[1:]} is not an integer multiple of lr {lr.shape[1:]}")
    if border < 0 or border % scale or 2 * border >= hr.shape[1] or 2 * border >= hr.shape[2]:
        raise ValueError(f"border of {border} px must be a multiple of {scale} inside the image")
    if not rgb_bands or any(not 0 <= b < lr.shape[0] for b in rgb_bands):
        raise ValueError(f"rgb_bands {rgb_bands} are not bands of a {lr.shape[0]}-band image")
    return scale
