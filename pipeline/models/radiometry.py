"""The radiometric guarantee: a super-resolved band that averages back to what was measured.

Given a band at high resolution and its native pixels (each the mean of one ``f`` × ``f``
footprint of the output), :func:`make_consistent` corrects the band so that every footprint's
mean equals its native value, without the step pattern at footprint edges that adding one
constant per footprint leaves.

The correction is a back-projection with a smooth kernel, solved in closed form: the field
added is the bilinear upsampling ``U c`` of coefficients ``c`` on the native grid, chosen so
that the footprint means of ``U c`` are the residual ``r`` (native value − footprint mean).
Footprint means of bilinear upsampling are, along each axis, the three-tap stencil
[1/8, 3/4, 1/8] of the coefficients, whatever the (even) footprint size; its inverse is the
filter g_k = √2 ρ^|k| with ρ = 2√2 − 3 ≈ −0.172, so ``c`` is ``r`` filtered by ``g`` along
rows and columns. Iterated back-projection (add ``ω U r``, measure the residual again,
repeat) converges to the same field, slowly (by a factor 0.6 per iteration at the best ω);
the filter gets there in one pass. ``g`` is cut after :data:`TAPS` taps either side, which
leaves a remainder of order ρ^(TAPS + 1) of the residual; a final constant per footprint
removes it, so the means are exact by construction (float64, then float32 rounding) while the
visible correction is smooth. Edges mirror the residual, which is what the clamped bilinear
upsampling assumes, so the outermost footprints are corrected as smoothly as the others.

The reach is bounded and known: an output pixel depends on the band and the native values
within ``TAPS + 1`` footprints (:func:`correction_reach`), which a model adds to its halo.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.geo.resample import block_mean, upsample_linear, upsample_nearest

#: Taps either side of the cut inverse filter. The remainder left for the final constant is
#: of order 0.172^(TAPS + 1) of the residual: on the demo's real bands at most 5 × 10⁻⁵
#: reflectance (0.08 % of a residual of 0.063), under the product's storage step of 10⁻⁴
#: (benchmarks/radiometry.py; 3 × 10⁻⁴ with 3 taps).
TAPS = 4
#: The inverse filter's decay per native pixel.
RHO = 2 * math.sqrt(2) - 3


def correction_reach(ratio: int) -> int:
    """How far the correction reaches, in 10 m pixels, for native pixels of ``ratio`` × ``ratio``
    10 m pixels: the filter's taps, plus one native pixel for the bilinear upsampling."""
    return (TAPS + 1) * ratio


def make_consistent(
    high: np.ndarray,
    native: np.ndarray,
    footprint: int,
    valid: np.ndarray | None = None,
    taps: int = TAPS,
) -> np.ndarray:
    """``high`` (H, W) corrected so that its mean over every ``footprint`` × ``footprint``
    cell equals ``native`` (H / footprint, W / footprint), smoothly (see the module).

    ``valid`` (native grid, bool) says which footprints hold data; the others (and footprints
    whose native value or output is not finite) are not corrected and lend no residual to
    their neighbours, so a no-data fill the model turned into anything does not spread into
    the valid footprints next to it. NaN pixels stay NaN. A footprint that the correction
    would take below 0 reflectance is flattened towards its native value instead, as far as
    needed (see :func:`_non_negative`). ``taps``: see :data:`TAPS`.
    """
    high64 = high.astype(np.float64)
    native = native.astype(np.float64)
    mean = block_mean(high64[None], footprint)[0]
    ok = np.isfinite(native) & np.isfinite(mean)
    if valid is not None:
        ok &= valid
    residual = np.where(ok, native - mean, 0.0)
    smooth = high64 + upsample_linear(inverse_stencil(residual, taps)[None], footprint)[0]
    remainder = np.where(ok, native - block_mean(smooth[None], footprint)[0], 0.0)
    return _non_negative(smooth + upsample_nearest(remainder, footprint), native, footprint, ok)


def _non_negative(
    high: np.ndarray, native: np.ndarray, footprint: int, ok: np.ndarray
) -> np.ndarray:
    """``high`` (float64) as float32, with every footprint that dips below 0 reflectance
    pulled towards its native value just enough to reach 0: its mean stays the native value,
    and a model far off (a dark input under a bright output) cannot be corrected into
    negative reflectance, which storage would clip, breaking the means."""
    h, w = native.shape
    low = high.reshape(h, footprint, w, footprint).min(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        dips = ok & (low < 0)
        keep = np.where(dips, np.clip(native / (native - low), 0, 1), 1.0)
    if dips.any():
        base = upsample_nearest(native, footprint)
        # 0 up to rounding: the maximum only lifts a -1e-18 to 0
        pulled = np.maximum(base + upsample_nearest(keep, footprint) * (high - base), 0)
        high = np.where(upsample_nearest(dips, footprint), pulled, high)
    return high.astype(np.float32)


def inverse_stencil(residual: np.ndarray, taps: int = TAPS) -> np.ndarray:
    """The coefficients whose bilinear upsampling has ``residual`` (h, w) as footprint means,
    up to the cut: ``residual`` filtered along both axes by the inverse of [1/8, 3/4, 1/8],
    ``taps`` either side, normalised to sum 1 (a uniform residual is then met exactly), edges
    mirrored. A fixed order of operations: a pixel's value does not depend on the array's
    extent beyond its reach."""
    k = np.arange(-taps, taps + 1)
    weights = RHO ** np.abs(k)
    weights /= weights.sum()
    out = residual
    for axis in (0, 1):
        n = out.shape[axis]
        width = [(0, 0), (0, 0)]
        width[axis] = (taps, taps)
        padded = np.pad(out, width, mode="symmetric")
        moved = np.moveaxis(padded, axis, 0)
        total = moved[0:n] * weights[0]
        for i in range(1, 2 * taps + 1):
            total = total + moved[i : i + n] * weights[i]
        out = np.moveaxis(total, 0, axis)
    return out
