"""The spectral angle (SAD) shared by the OpenSR-test metrics and the product's quality layers.

Kept apart, with numpy only, so that the region flow's workers compute the layer without
importing torch and OpenCV for the benchmark metrics.
"""

from __future__ import annotations

import numpy as np


def spectral_angle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-pixel angle in degrees between the spectra (axis 0) of x and y: OpenSR's SAD.

    NaN where either spectrum is all zeros (no direction).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = (x * y).sum(axis=0) / (np.linalg.norm(x, axis=0) * np.linalg.norm(y, axis=0))
    return np.rad2deg(np.arccos(np.clip(cosine, -1, 1)))
