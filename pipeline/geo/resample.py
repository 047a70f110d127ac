"""Resampling kernels with a fixed order of floating-point operations.

Each output pixel is computed from a fixed neighbourhood in the same order whatever the size of
the array, so a block with a large enough halo reproduces the whole-array result bit for bit
(the property the halo wrapper relies on for seamless tiles).
"""

from __future__ import annotations

import numpy as np

#: Keys' cubic convolution parameter (a = −0.5, the classic "bicubic" of image libraries).
KEYS_A = -0.5


def _keys(distance: np.ndarray) -> np.ndarray:
    d = np.abs(distance)
    a = KEYS_A
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _tent(distance: np.ndarray) -> np.ndarray:
    return np.maximum(1 - np.abs(distance), 0.0)


#: (kernel, taps relative to the input pixel left of the output pixel) of each interpolation.
_CUBIC = (_keys, np.arange(-1, 3))
_LINEAR = (_tent, np.arange(0, 2))


def upsample_cubic(x: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic upsampling of (c, h, w) ×factor, pixel centres aligned, edges clamped."""
    return _upsample_axis(_upsample_axis(x, factor, 1, _CUBIC), factor, 2, _CUBIC)


def upsample_linear(x: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of (c, h, w) ×factor, pixel centres aligned, edges clamped: each
    output pixel mixes the two input pixels whose centres enclose it, and beyond the outermost
    centres the edge value holds (as if the input went on mirrored about its border)."""
    return _upsample_axis(_upsample_axis(x, factor, 1, _LINEAR), factor, 2, _LINEAR)


def _upsample_axis(x: np.ndarray, factor: int, axis: int, interpolation: tuple) -> np.ndarray:
    kernel, taps = interpolation
    n = x.shape[axis]
    source = (np.arange(factor) + 0.5) / factor - 0.5  # position of each output phase
    base = np.floor(source).astype(int)
    weights = kernel(source[:, None] - base[:, None] - taps[None, :]).astype(x.dtype)
    index = np.clip(np.arange(n)[:, None, None] + base[None, :, None] + taps, 0, n - 1)
    moved = np.moveaxis(x, axis, -1)
    out = moved[..., index[..., 0]] * weights[:, 0]
    for t in range(1, len(taps)):
        out = out + moved[..., index[..., t]] * weights[:, t]
    out = out.reshape(*moved.shape[:-1], n * factor)
    return np.moveaxis(out, -1, axis)


def block_mean(x: np.ndarray, ratio: int) -> np.ndarray:
    """Mean over non-overlapping ratio×ratio blocks of (c, h, w); h and w must divide.
    Slices and sums only, so a torch tensor goes through it too, gradients and all."""
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
    return total / (ratio * ratio)  # a Python number keeps x's float type


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


def upsample_nearest(x: np.ndarray, factor: int) -> np.ndarray:
    """Repeat every pixel of the last two axes factor×factor times."""
    return np.repeat(np.repeat(x, factor, axis=-2), factor, axis=-1)
