"""The super-resolution stage: RGB model then band fusion, per block with a halo."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import dask.array as da
import numpy as np

from pipeline.bands import REFLECTANCE_BANDS, RGB_INDEX
from pipeline.blocks import map_with_halo
from pipeline.grid import LATTICE_PIXELS, SCALE
from pipeline.models import FusionModel, RGBModel, SamplingRGBModel
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

    @property
    def uncertainty(self) -> bool:
        """Whether the RGB model draws several samples, whose spread is then an output too."""
        return isinstance(self.rgb, SamplingRGBModel) and self.rgb.samples > 1

    @property
    def out_channels(self) -> int:
        """The 12 bands, then the RGB standard deviation over samples when there is one."""
        return len(REFLECTANCE_BANDS) + (len(RGB_INDEX) if self.uncertainty else 0)

    def on(self, rgb_device: str | None, fusion_device: str | None) -> SuperResolver:
        """The same models running on these torch devices (None: the process's default).

        A learned model moved to another device is built anew, so this runs where the models
        run: on a worker, never on a runner that may have no GPU. Models without a device
        (the baselines) stay as they are.
        """
        return dataclasses.replace(
            self, rgb=_on(self.rgb, rgb_device), fusion=_on(self.fusion, fusion_device)
        )

    def block(self, bands: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """(12, h, w) at 10 m → (out_channels, 4h, 4w) at 2.5 m; no-data pixels stay NaN.

        No-data pixels are given reflectance 0 for the models, so their neighbours within the
        models' reach see a dark border; the mask then restores NaN on the pixels themselves.
        """
        valid = np.isfinite(bands).all(axis=0)
        if not valid.any():  # outside the AOI's scenes: nothing for the models to see
            return np.full((self.out_channels, *(n * SCALE for n in valid.shape)), np.nan,
                           np.float32)
        filled = np.where(valid, bands, np.float32(0)).astype(np.float32, copy=False)
        if self.uncertainty:
            rgb, spread = self.rgb.sample(filled[RGB_INDEX], origin)
            out = np.concatenate([self.fusion(filled, rgb, origin), spread.astype(np.float32)])
        else:
            out = self.fusion(filled, self.rgb(filled[RGB_INDEX], origin), origin)
        if not valid.all():
            out[:, upsample_nearest(~valid, SCALE)] = np.nan
        return out

    def apply(
        self,
        bands: da.Array,
        block_size: int = 240,
        offset: tuple[int, int] = (0, 0),
    ) -> da.Array:
        """Lazily super-resolve a (12, y, x) dask array whose edges lie on the 60 m lattice.

        ``offset`` is the array's top-left pixel on the global 10 m lattice, which the models
        receive as block origins (see :mod:`pipeline.models.base`).
        """
        if block_size % LATTICE_PIXELS:
            raise ValueError(f"block size must be a multiple of {LATTICE_PIXELS} pixels")
        bands = bands.rechunk((-1, block_size, block_size))
        return map_with_halo(
            bands, partial(self._block_at, offset), self.halo, SCALE, self.out_channels,
            np.float32, token=TASK_PREFIX,
        )

    def _block_at(
        self, offset: tuple[int, int], bands: np.ndarray, origin: tuple[int, int]
    ) -> np.ndarray:
        return self.block(bands, (offset[0] + origin[0], offset[1] + origin[1]))


def _on(model: RGBModel | FusionModel, device: str | None) -> RGBModel | FusionModel:
    if not hasattr(model, "device") or model.device == device:
        return model
    return dataclasses.replace(model, device=device)
