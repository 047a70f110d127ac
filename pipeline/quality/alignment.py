"""Sub-pixel translation between two multi-band images, the way OpenSR-test measures it.

Phase correlation on the band-mean image finds the shift; the moving image is then resampled
by that shift (bilinear, edges replicated). Shifts longer than ``max_shift`` pixels are taken as
a failed registration: nothing is moved and the shift is reported as NaN, so that a
meaningless match never passes for a small spatial error.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
from skimage.registration import phase_cross_correlation

#: Registration precision of the phase correlation, in 1/pixels.
UPSAMPLE = 50
#: Longest plausible shift, in pixels of the images being registered.
MAX_SHIFT = 5.0


def align(
    moving: np.ndarray, reference: np.ndarray, max_shift: float = MAX_SHIFT
) -> tuple[np.ndarray, float]:
    """Move ``moving`` (C, h, w) onto ``reference`` (C', h, w).

    Returns the moved float32 image and the length of the shift in pixels (NaN when the
    registration failed or the shift exceeded ``max_shift``, in which case the shift is zero;
    the identity warp still runs, spreading NaN pixels to their neighbours as the reference
    implementation does).
    """
    shift = _shift(moving.mean(axis=0), reference.mean(axis=0))
    length = math.nan if shift is None else float(np.linalg.norm(shift))
    if not length <= max_shift:  # failed or implausible: measure nothing, move nothing
        shift, length = np.zeros(2, dtype=np.float32), math.nan
    matrix = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], dtype=np.float32)
    h, w = moving.shape[-2:]
    moved = np.stack(
        [
            cv2.warpAffine(
                band.astype(np.float32),
                matrix,
                (w, h),
                flags=cv2.INTER_LINEAR + cv2.WARP_FILL_OUTLIERS,
                borderMode=cv2.BORDER_REPLICATE,
            )
            for band in moving
        ]
    )
    return moved, length


def _shift(moving: np.ndarray, reference: np.ndarray) -> np.ndarray | None:
    """float32 (dx, dy) that moves ``moving`` onto ``reference``; None if it cannot be told."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            shift, _, _ = phase_cross_correlation(
                reference, moving, upsample_factor=UPSAMPLE, space="real", disambiguate=False
            )
    except (ValueError, FloatingPointError, np.linalg.LinAlgError):
        return None
    # Held in float32, as the warp uses it, before its length is judged.
    shift = np.asarray(shift[::-1], dtype=np.float32)
    return shift if np.isfinite(shift).all() else None
