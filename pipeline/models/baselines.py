"""Classical baselines behind the model interface: bicubic ×4 and Gram–Schmidt pansharpening.

They are built only from :mod:`pipeline.geo.resample`, whose fixed-order arithmetic makes a block
with a large enough halo reproduce the whole-array result bit for bit. Their arithmetic takes
its kernels as an argument (:class:`Kernels`), so that the very same steps can run on tensors
with gradients (the attribution of :mod:`pipeline.explain` does so).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np

from pipeline.geo.bands import (
    BANDS_BY_RESOLUTION,
    MAX_RATIO,
    NATIVE_RATIO,
    REFLECTANCE_BANDS,
    RGB_BANDS,
    SCALE,
)
from pipeline.geo.resample import block_mean, box_mean, upsample_cubic


class Kernels(Protocol):
    """The resampling kernels the baselines are made of, on arrays or tensors."""

    def upsample_cubic(self, x: Any, factor: int) -> Any: ...
    def block_mean(self, x: Any, ratio: int) -> Any: ...
    def box_mean(self, x: Any, radius: int) -> Any: ...


#: The kernels of :mod:`pipeline.geo.resample`, on NumPy arrays.
NUMPY_KERNELS: Kernels = SimpleNamespace(
    upsample_cubic=upsample_cubic, block_mean=block_mean, box_mean=box_mean
)


class Bicubic:
    """Bicubic ×4 of B04 B03 B02: the RGB-stage baseline."""

    name = "bicubic"
    halo = 2  # Keys' kernel reaches two input pixels
    weights_sha256 = None

    def __call__(self, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return self.upsample(rgb, NUMPY_KERNELS)

    @staticmethod
    def upsample(rgb: Any, kernels: Kernels) -> Any:
        """The (3, h, w) input ×4 with ``kernels``."""
        return kernels.upsample_cubic(rgb, SCALE)


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
        self.halo = MAX_RATIO * ((window if detail else 0) + 2)

    def __call__(self, bands: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        fused = self.fuse(bands, rgb, NUMPY_KERNELS)
        return np.stack([fused[b] for b in REFLECTANCE_BANDS]).astype(np.float32, copy=False)

    def fuse(self, bands: Any, rgb: Any, kernels: Kernels) -> dict[str, Any]:
        """Every band at 2.5 m (B04 B03 B02 being ``rgb``) from the (12, h, w) bands at 10 m
        and the (3, 4h, 4w) RGB, with ``kernels``."""
        pan = (rgb[0] + rgb[1] + rgb[2]) / np.float32(3)
        out = dict(zip(RGB_BANDS, rgb, strict=True))
        for group in BANDS_BY_RESOLUTION.values():
            ratio = NATIVE_RATIO[group[0]]
            index = [REFLECTANCE_BANDS.index(b) for b in group]
            native = kernels.block_mean(bands[index], ratio)
            fused = kernels.upsample_cubic(native, SCALE * ratio)
            if self.detail:
                pan_native = kernels.block_mean(pan[None], SCALE * ratio)
                lost = pan - kernels.upsample_cubic(pan_native, SCALE * ratio)[0]
                gain = _regression_slope(native, pan_native, self.window, kernels)
                fused = fused + kernels.upsample_cubic(gain, SCALE * ratio) * lost
            out.update(
                (b, value) for b, value in zip(group, fused, strict=True) if b not in RGB_BANDS
            )
        return out


def _regression_slope(y: Any, x: Any, radius: int, kernels: Kernels) -> Any:
    """Local least-squares slope of each band of y on x, over (2r+1)² windows."""
    mean_x = kernels.box_mean(x, radius)
    mean_y = kernels.box_mean(y, radius)
    cov = kernels.box_mean(y * x, radius) - mean_y * mean_x
    var = kernels.box_mean(x * x, radius) - mean_x * mean_x
    return cov / (var.clip(0) + np.float32(1e-6))
