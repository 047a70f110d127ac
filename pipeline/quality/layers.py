"""Per-pixel quality layers of a product tile, from arrays the region flow already holds.

No model is called again: the layers compare the super-resolved tile, averaged back, with the
10 m composite it was made from, and read the RGB model's spread over samples when there is
one. Each band is averaged back over its own native pixel (10, 20 or 60 m, as the models see
it: the mean of the 10 m composite over that footprint), because that is all the information
the input holds about it; comparing a 60 m band at 10 m would count the upsampling's own
smoothness as an error. The rule that turns the layers into a hallucination-risk flag, its
thresholds, and the share of flagged pixels above which a whole product is judged at risk, are
the module constants below (documented in docs/quality.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.geo.bands import (
    NATIVE_RATIO,
    REFLECTANCE_BANDS,
    RGB_INDEX,
    SCALE,
)
from pipeline.geo.resample import block_mean, upsample_nearest
from pipeline.quality.spectral import spectral_angle

#: Flag a pixel whose bands, averaged back over their native pixels, differ from the input by
#: more than this on average (reflectance).
CONSISTENCY_LIMIT = 0.01
#: Flag a pixel whose averaged-back spectrum turns away from the input's by more than this
#: (degrees).
SPECTRAL_ANGLE_LIMIT = 5.0
#: Flag a pixel whose RGB spread over samples exceeds this fraction of the input's RGB
#: reflectance (only with ``--samples N``, N > 1).
RELATIVE_UNCERTAINTY_LIMIT = 0.1
#: Reflectance under which the relative uncertainty is taken against this value instead, so
#: that a tiny spread over water or shadow is not a large ratio.
DARK_REFLECTANCE = 0.02
#: A product with more than this fraction of its pixels with data flagged gets the verdict
#: "hallucination risk" (:mod:`pipeline.quality.verdict`).
FLAGGED_FRACTION_LIMIT = 0.05

#: Bits of the hallucination-risk flag; 0 is "no reason for concern".
INCONSISTENT, SPECTRAL_DISTORTION, UNCERTAIN = 1, 2, 4
#: Flag value of pixels without data.
RISK_FILL = 255


def risk_rule() -> dict[str, float]:
    """The thresholds of the flag, as recorded in the product's recipe and attributes. The
    verdict's limit is not among them: it changes no pixel, so a product made before it
    existed still resumes; the quality summary records it beside the verdict."""
    return {
        "consistency_limit": CONSISTENCY_LIMIT,
        "spectral_angle_limit": SPECTRAL_ANGLE_LIMIT,
        "relative_uncertainty_limit": RELATIVE_UNCERTAINTY_LIMIT,
        "dark_reflectance": DARK_REFLECTANCE,
    }


#: A tile summary's statistics of the layers: their means over the pixels with data, and the
#: share of those flagged (the product's schema combines the tiles' by these keys).
MEAN_CONSISTENCY = "mean_consistency"
MEAN_SPECTRAL_ANGLE = "mean_spectral_angle"
RISK_FRACTION = "hallucination_risk_fraction"


@dataclass(frozen=True)
class QualityLayers:
    """One tile's layers; NaN (or ``RISK_FILL``) where the tile has no data."""

    consistency: np.ndarray  # (h, w) at 10 m, reflectance
    spectral_angle: np.ndarray  # (h, w) at 10 m, degrees
    hallucination_risk: np.ndarray  # (4h, 4w) at 2.5 m, uint8 bits

    def on_output_grid(self) -> dict[str, np.ndarray]:
        """Every layer on the 2.5 m grid, as the product stores them."""
        return {
            "consistency": upsample_nearest(self.consistency, SCALE),
            "spectral_angle": upsample_nearest(self.spectral_angle, SCALE),
            "hallucination_risk": self.hallucination_risk,
        }

    #: The keys of :meth:`summary`, all None for a tile without data.
    SUMMARY_KEYS = (MEAN_CONSISTENCY, MEAN_SPECTRAL_ANGLE, RISK_FRACTION)

    def summary(self) -> dict[str, float | None]:
        """Tile means of the layers and the fraction of pixels with data that are flagged."""
        valid = self.hallucination_risk != RISK_FILL
        if not valid.any():
            return dict.fromkeys(self.SUMMARY_KEYS)
        return {
            MEAN_CONSISTENCY: _rounded_mean(self.consistency, 6),
            MEAN_SPECTRAL_ANGLE: _rounded_mean(self.spectral_angle, 4),
            RISK_FRACTION: round(
                float(np.count_nonzero(self.hallucination_risk[valid]) / valid.sum()), 6
            ),
        }


def tile_quality(
    composite: np.ndarray,
    high: np.ndarray,
    bands: tuple[str, ...],
    uncertainty: np.ndarray | None = None,
) -> QualityLayers:
    """The quality layers of one tile (without its halo).

    ``composite`` is the 12-band 10 m input (REFLECTANCE_BANDS order, NaN = no data), ``high``
    the product's ``bands`` at 2.5 m, ``uncertainty`` the RGB models' (B04, B03, B02) standard
    deviation over samples at 2.5 m, or None.
    """
    return judged(*departure(composite, high, bands), composite, uncertainty)


def departure(
    composite: np.ndarray, high: np.ndarray, bands: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(consistency, spectral angle), float32 at 10 m: how far ``high`` (``bands`` at 2.5 m),
    averaged back over each band's native pixel, is from the 12-band ``composite``."""
    reference, back = averaged_back(composite[_indices(bands)], high, bands)
    consistency = np.abs(back - reference).mean(axis=0).astype(np.float32)
    return consistency, spectral_angle(reference, back).astype(np.float32)


def judged(
    consistency: np.ndarray,
    angle: np.ndarray,
    composite: np.ndarray,
    uncertainty: np.ndarray | None = None,
) -> QualityLayers:
    """The layers of :func:`departure`, and the RGB spread over samples when there is one,
    turned into the hallucination-risk flag."""
    relative = None
    if uncertainty is not None:
        relative = relative_uncertainty(uncertainty, composite[RGB_INDEX])
    return QualityLayers(consistency, angle, risk_flag(consistency, angle, relative))


def averaged_back(
    composite: np.ndarray, high: np.ndarray, bands: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) at 10 m, each band the mean over its native pixel, float64.

    Only the 10 m pixels with data enter a native pixel's mean, in both; pixels without data
    (in the input or the output) are NaN in both.
    """
    low = block_mean(high, SCALE).astype(np.float64)  # 16× smaller before widening
    composite = composite.astype(np.float64)
    valid = np.isfinite(composite).all(axis=0) & np.isfinite(low).all(axis=0)
    reference, back = np.empty_like(composite), np.empty_like(low)
    for i, band in enumerate(bands):
        ratio = NATIVE_RATIO[band]
        reference[i] = _native_mean(composite[i], valid, ratio)
        back[i] = _native_mean(low[i], valid, ratio)
    return reference, back


def relative_uncertainty(uncertainty: np.ndarray, rgb_input: np.ndarray) -> np.ndarray:
    """Mean RGB spread at 2.5 m over the input's mean RGB reflectance at 10 m (floored)."""
    level = np.maximum(rgb_input.mean(axis=0), DARK_REFLECTANCE)
    return uncertainty.mean(axis=0) / upsample_nearest(level, SCALE)


def risk_flag(
    consistency: np.ndarray, angle: np.ndarray, relative: np.ndarray | None = None
) -> np.ndarray:
    """The hallucination-risk bits at 2.5 m from the 10 m layers and the 2.5 m uncertainty.

    A bit is set where its layer exceeds its limit (NaN exceeds nothing); pixels where the
    consistency is NaN have no data and get ``RISK_FILL``.
    """
    low = np.zeros(consistency.shape, np.uint8)
    with np.errstate(invalid="ignore"):
        low[consistency > CONSISTENCY_LIMIT] |= INCONSISTENT
        low[angle > SPECTRAL_ANGLE_LIMIT] |= SPECTRAL_DISTORTION
        flag = upsample_nearest(low, SCALE)
        if relative is not None:
            flag[relative > RELATIVE_UNCERTAINTY_LIMIT] |= UNCERTAIN
    flag[upsample_nearest(np.isnan(consistency), SCALE)] = RISK_FILL
    return flag


def _native_mean(x: np.ndarray, valid: np.ndarray, ratio: int) -> np.ndarray:
    """Mean of x's valid pixels over each ratio×ratio block, back on x's grid; NaN off ``valid``."""
    total = block_mean(np.where(valid, x, 0.0)[None], ratio)[0]
    share = block_mean(valid.astype(np.float64)[None], ratio)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = upsample_nearest(total / share, ratio)
    return np.where(valid, mean, np.nan)


def _indices(bands: tuple[str, ...]) -> list[int]:
    return [REFLECTANCE_BANDS.index(b) for b in bands]


def _rounded_mean(x: np.ndarray, digits: int) -> float | None:
    """Mean of the finite values; None (JSON null, never NaN) when there is none."""
    finite = x[np.isfinite(x)]
    return round(float(finite.mean()), digits) if finite.size else None
