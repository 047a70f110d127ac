"""Blockiness: how much an image steps at the edges of its input's pixels.

A super-resolved image is made of footprints, ``period`` × ``period`` output pixels per input
pixel. A correction that adds one constant per footprint, or any model that works footprint by
footprint, makes the steps between neighbouring pixels larger across footprint edges than
inside footprints; a natural image, or the true high-resolution scene, does not care where the
input's pixel edges lie.

The measure compares the two: the mean absolute difference between horizontally or vertically
neighbouring pixels that straddle a footprint edge, over the same mean for neighbours inside a
footprint, minus one. 0: edges are invisible; 0.1: steps across edges are 10 % larger than
elsewhere. (The share of the image's power at the period's frequencies, a common alternative,
cannot see a mean-preserving step pattern: a field constant over each footprint has no power
at exactly 1/period cycles per pixel and its harmonics, only near them, where the image's own
detail is as well.)
"""

from __future__ import annotations

import numpy as np


def blockiness(image: np.ndarray, period: int) -> float:
    """Edge-step excess of ``image`` (H, W) or (C, H, W), footprints of ``period`` pixels
    anchored at pixel 0 (the output grid of a ×``period`` model); bands and both axes pooled.

    NaN differences (no-data) are left out. Inf for steps at edges only (a field constant
    over each footprint), NaN for an image without any step.
    """
    x = np.asarray(image, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    if period < 2:
        raise ValueError(f"the period must be at least 2 pixels, got {period}")
    across, inside = [], []
    for axis in (1, 2):
        steps = np.abs(np.diff(x, axis=axis))
        # The step between pixels i and i + 1 straddles an edge when i + 1 is a multiple.
        edge = (np.arange(1, x.shape[axis]) % period) == 0
        moved = np.moveaxis(steps, axis, 0)
        across.append(moved[edge].ravel())
        inside.append(moved[~edge].ravel())
    a, b = np.concatenate(across), np.concatenate(inside)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    edges, inner = (float(v.mean()) if v.size else 0.0 for v in (a, b))
    if inner == 0:
        return float("inf") if edges > 0 else float("nan")
    return edges / inner - 1
