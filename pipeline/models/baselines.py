"""Classical baselines behind the model interface: bicubic ×4 and Gram–Schmidt pansharpening.

They are built only from :mod:`pipeline.resample`, whose fixed-order arithmetic makes a block
with a large enough halo reproduce the whole-array result bit for bit.
"""

from __future__ import annotations

import numpy as np

from pipeline.bands import GROUPS, REFLECTANCE_BANDS, RGB_INDEX
from pipeline.grid import SCALE
from pipeline.resample import block_mean, box_mean, upsample_cubic

#: 10 m pixels per native pixel, by native resolution.
NATIVE_RATIO = {10: 1, 20: 2, 60: 6}


class Bicubic:
    """Bicubic ×4 of B04 B03 B02: the RGB-stage baseline."""

    name = "bicubic"
    halo = 2  # Keys' kernel reaches two input pixels
    weights_sha256 = None

    def __call__(self, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return upsample_cubic(rgb, SCALE)


class GramSchmidt:
    """Gram–Schmidt pansharpening of each band group, guided by the 2.5 m RGB.

    The pan is the mean of the 2.5 m RGB. Per group, the pan is averaged over the group's native
    pixels, the detail it lost is injected into the bicubic-upsampled band with the band's
    regression slope on the low-resolution pan. The slope is estimated in a moving window of
    (2·window+1)² native pixels rather than once per image, so that tiles join without seams.
    With ``detail=False`` only the bicubic upsampling of the native pixels remains.
    """

    weights_sha256 = None

    def __init__(self, window: int = 2, detail: bool = True) -> None:
        self.window = window
        self.detail = detail
        self.name = "gram-schmidt" if detail else "bicubic"
        # 60 m pixels of context: the window plus the cubic kernel's two native pixels.
        self.halo = NATIVE_RATIO[60] * ((window if detail else 0) + 2)

    def __call__(self, bands: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        pan = (rgb[0] + rgb[1] + rgb[2]) / np.float32(3)
        out = np.empty((len(REFLECTANCE_BANDS), *pan.shape), dtype=np.float32)
        for resolution, group in GROUPS.items():
            ratio = NATIVE_RATIO[resolution]
            index = [REFLECTANCE_BANDS.index(b) for b in group]
            native = block_mean(bands[index], ratio)
            out[index] = upsample_cubic(native, SCALE * ratio)
            if self.detail:
                pan_native = block_mean(pan[None], SCALE * ratio)
                lost = pan - upsample_cubic(pan_native, SCALE * ratio)[0]
                gain = _regression_slope(native, pan_native, self.window)
                out[index] += upsample_cubic(gain, SCALE * ratio) * lost
        out[RGB_INDEX] = rgb
        return out


def _regression_slope(y: np.ndarray, x: np.ndarray, radius: int) -> np.ndarray:
    """Local least-squares slope of each band of y on x, over (2r+1)² windows."""
    mean_x = box_mean(x, radius)
    mean_y = box_mean(y, radius)
    cov = box_mean(y * x, radius) - mean_y * mean_x
    var = box_mean(x * x, radius) - mean_x * mean_x
    return cov / (np.maximum(var, 0) + np.float32(1e-6))
