"""Classical baselines behind the model interface: bicubic ×4 and Gram–Schmidt pansharpening.

Every operation here computes each output pixel from a fixed neighbourhood with a fixed order
of floating-point operations, so a block with a large enough halo reproduces the whole-array
result bit for bit (the property the halo wrapper relies on for seamless tiles).
"""

from __future__ import annotations

import numpy as np

from pipeline.bands import GROUPS, REFLECTANCE_BANDS, RGB_BANDS
from pipeline.grid import SCALE

#: Keys' cubic convolution parameter (a = −0.5, the classic "bicubic" of image libraries).
KEYS_A = -0.5
#: 10 m pixels per native pixel, by native resolution.
NATIVE_RATIO = {10: 1, 20: 2, 60: 6}
#: Every block handed to the fusion baselines must be a whole number of 60 m pixels.
ALIGNMENT = NATIVE_RATIO[60]

_RGB_INDEX = [REFLECTANCE_BANDS.index(b) for b in RGB_BANDS]


def _keys(distance: np.ndarray) -> np.ndarray:
    d = np.abs(distance)
    a = KEYS_A
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def upsample_cubic(x: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic upsampling of (c, h, w) ×factor, pixel centres aligned, edges clamped."""
    return _upsample_axis(_upsample_axis(x, factor, axis=1), factor, axis=2)


def _upsample_axis(x: np.ndarray, factor: int, axis: int) -> np.ndarray:
    n = x.shape[axis]
    source = (np.arange(factor) + 0.5) / factor - 0.5  # position of each output phase
    base = np.floor(source).astype(int)
    taps = np.arange(-1, 3)
    weights = _keys(source[:, None] - base[:, None] - taps[None, :]).astype(x.dtype)
    index = np.clip(np.arange(n)[:, None, None] + base[None, :, None] + taps, 0, n - 1)
    moved = np.moveaxis(x, axis, -1)
    out = moved[..., index[..., 0]] * weights[:, 0]
    for t in range(1, len(taps)):
        out = out + moved[..., index[..., t]] * weights[:, t]
    out = out.reshape(*moved.shape[:-1], n * factor)
    return np.moveaxis(out, -1, axis)


def block_mean(x: np.ndarray, ratio: int) -> np.ndarray:
    """Mean over non-overlapping ratio×ratio blocks of (c, h, w); h and w must divide."""
    if ratio == 1:
        return x
    c, h, w = x.shape
    if h % ratio or w % ratio:
        raise ValueError(f"block of {h}×{w} pixels is not a whole number of {ratio}×{ratio} cells")
    rows = x[:, 0::ratio, :]
    for dy in range(1, ratio):
        rows = rows + x[:, dy::ratio, :]
    total = rows[:, :, 0::ratio]
    for dx in range(1, ratio):
        total = total + rows[:, :, dx::ratio]
    return total / np.asarray(ratio * ratio, dtype=x.dtype)


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window of (c, h, w), edges clamped, in a fixed summation order."""
    size = 2 * radius + 1
    padded = np.pad(x, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    h, w = x.shape[1:]
    rows = padded[:, 0:h, :]
    for dy in range(1, size):
        rows = rows + padded[:, dy : dy + h, :]
    total = rows[:, :, 0:w]
    for dx in range(1, size):
        total = total + rows[:, :, dx : dx + w]
    return total / np.asarray(size * size, dtype=x.dtype)


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
        out[_RGB_INDEX] = rgb
        return out


def _regression_slope(y: np.ndarray, x: np.ndarray, radius: int) -> np.ndarray:
    """Local least-squares slope of each band of y on x, over (2r+1)² windows."""
    mean_x = box_mean(x, radius)
    mean_y = box_mean(y, radius)
    cov = box_mean(y * x, radius) - mean_y * mean_x
    var = box_mean(x * x, radius) - mean_x * mean_x
    return cov / (np.maximum(var, 0) + np.float32(1e-6))
