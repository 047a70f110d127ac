"""The Wald protocol's inputs: a 10 m reference made 4 times coarser, as each stage's test wants.

The models then bring it back to 10 m, where the reference is the truth; that this carries
over to 10 m → 2.5 m is the protocol's assumption. A fusion trial pairs a fusion model's
input with how its output is scored: by this reduced-resolution protocol, or at full
resolution, where the output must average back to the input (no reference needed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from pipeline.geo.bands import NATIVE_RATIO, REFLECTANCE_BANDS, RGB_INDEX, SCALE
from pipeline.geo.resample import upsample_nearest
from pipeline.models.fusion.model import native_grids
from pipeline.protocol import degradation
from pipeline.protocol.scores import NO_REFERENCE_ERGAS_RATIO, WALD_ERGAS_RATIO, fusion_scores
from pipeline.protocol.sensor import BLUR_SIGMA
from pipeline.protocol.sensor import degrade as sensor_degrade

#: The RGB model's test degradation: the reference's validation one (isotropic Gaussian σ 1.2,
#: bicubic ÷4, no noise), kept in float and not harmonised, as Sentinel-2 is reflectance.
RGB_DEGRADATION = replace(degradation.VALIDATION, harmonize=False, levels=None)
#: The two inputs in words, for reports.
RGB_INPUT = (
    f"B04 B03 B02, isotropic Gaussian σ {RGB_DEGRADATION.sigma_range[0]} px, "
    f"bicubic ÷{SCALE}, no noise"
)
FUSION_INPUT = (
    f"every band degraded ×{SCALE} from its native grid (Gaussian σ {BLUR_SIGMA} × "
    f"{SCALE} native px, {SCALE} × {SCALE} mean); guide: the real 10 m RGB"
)


def rgb_input(hr: np.ndarray) -> np.ndarray:
    """(3, P, P) or (n, 3, P, P) 10 m RGB → the same at 40 m. Nothing in the degradation is
    random (no noise, one fixed kernel), so the generator's seed does not matter."""
    batch = torch.from_numpy(np.ascontiguousarray(hr, dtype=np.float32))
    single = batch.ndim == 3
    low = degradation.degrade(
        batch[None] if single else batch, RGB_DEGRADATION, torch.Generator().manual_seed(0)
    ).lr.numpy()
    return low[0] if single else low


def fusion_input(natives: dict[str, np.ndarray], sigma: float = BLUR_SIGMA) -> np.ndarray:
    """The native grids of a (12, P, P) 10 m reference (:func:`native_grids`) → (12, P/4,
    P/4): every band degraded ×4 from its native grid (the sensor-like blur and mean fusion
    training uses) and repeated onto the 40 m grid, as a 10 m block repeats its 20 m and 60 m
    bands. With the real 10 m RGB as the guide, each group then keeps its own ratio to the
    guide (×4, ×8, ×24), one scale up."""
    band, native = next(iter(natives.items()))
    shape = tuple(n * NATIVE_RATIO[band] // SCALE for n in native.shape)
    low = np.empty((len(REFLECTANCE_BANDS), *shape), np.float32)
    for i, (band, native) in enumerate(natives.items()):
        degraded = sensor_degrade(torch.from_numpy(native)[None, None], SCALE, sigma)[0].numpy()
        low[i] = upsample_nearest(degraded, NATIVE_RATIO[band])[0]
    return low


@dataclass(frozen=True)
class FusionTrial:
    """One fusion protocol on one 10 m reference (12, P, P): what a fusion model is given,
    and how its output is scored against the reference's native grids."""

    bands: np.ndarray  # the model's (12, h, w) input at 10 m
    rgb: np.ndarray  # its guide, (3, 4h, 4w)
    origin: tuple[int, int]  # where the input lies, for models whose noise follows it
    natives: dict[str, np.ndarray]  # the truth: each band's native grid of the reference
    per_10m: int  # output pixels per 10 m pixel of the reference
    ergas_ratio: dict[int, float]  # ERGAS h/l per group

    def score(self, output: np.ndarray, labels: dict[str, str]) -> dict[str, dict]:
        """:func:`~pipeline.protocol.scores.fusion_scores` of a model's output."""
        return fusion_scores(output, self.natives, self.per_10m, self.ergas_ratio, labels)


def wald_trial(
    reference: np.ndarray, origin: tuple[int, int], sigma: float = BLUR_SIGMA
) -> FusionTrial:
    """Reduced resolution: every band degraded ×4 (:func:`fusion_input`), the real 10 m RGB
    as the guide, the 10 m output scored against the native grids the model never saw."""
    natives = native_grids(reference)
    return FusionTrial(
        fusion_input(natives, sigma), reference[RGB_INDEX], origin, natives, 1, WALD_ERGAS_RATIO
    )


def no_reference_trial(
    reference: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]
) -> FusionTrial:
    """Full resolution: the reference itself as the input, ``rgb`` (a 2.5 m RGB stage's
    output) as the guide; the 2.5 m output must average back to the input it came from."""
    return FusionTrial(
        reference, rgb, origin, native_grids(reference), SCALE, NO_REFERENCE_ERGAS_RATIO
    )
