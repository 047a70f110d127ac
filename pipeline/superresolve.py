"""The super-resolution stage: RGB model then band fusion, per block with a halo."""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np

from pipeline.bands import REFLECTANCE_BANDS, RGB_INDEX
from pipeline.blocks import map_with_halo
from pipeline.grid import LATTICE_PIXELS, SCALE
from pipeline.models import FusionModel, RGBModel
from pipeline.resample import upsample_nearest

#: Key prefix of the model tasks in a Dask graph.
TASK_PREFIX = "superresolve"


@dataclass(frozen=True)
class SuperResolver:
    """Both model stages as one block function over the 12 bands at 10 m."""

    rgb: RGBModel
    fusion: FusionModel

    @property
    def halo(self) -> int:
        """Context in 10 m pixels, rounded up to whole 60 m pixels so blocks stay aligned."""
        total = self.rgb.halo + self.fusion.halo
        return -(-total // LATTICE_PIXELS) * LATTICE_PIXELS

    def block(self, bands: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """(12, h, w) at 10 m → (12, 4h, 4w) at 2.5 m; pixels without data in any band stay NaN.

        No-data pixels are given reflectance 0 for the models, so their neighbours within the
        models' reach see a dark border; the mask then restores NaN on the pixels themselves.
        """
        valid = np.isfinite(bands).all(axis=0)
        filled = np.where(valid, bands, np.float32(0)).astype(np.float32, copy=False)
        rgb = self.rgb(filled[RGB_INDEX], origin)
        out = self.fusion(filled, rgb, origin)
        if not valid.all():
            out[:, upsample_nearest(~valid, SCALE)] = np.nan
        return out

    def apply(self, bands: da.Array, block_size: int = 240) -> da.Array:
        """Lazily super-resolve a (12, y, x) dask array whose edges lie on the 60 m lattice."""
        if block_size % LATTICE_PIXELS:
            raise ValueError(f"block size must be a multiple of {LATTICE_PIXELS} pixels")
        bands = bands.rechunk((-1, block_size, block_size))
        return map_with_halo(
            bands, self.block, self.halo, SCALE, len(REFLECTANCE_BANDS), np.float32,
            token=TASK_PREFIX,
        )
