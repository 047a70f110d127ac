"""The super-resolution stage: RGB model then band fusion, per block with a halo."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import dask.array as da
import numpy as np

from pipeline.bands import REFLECTANCE_BANDS, RGB_INDEX
from pipeline.blocks import map_with_halo
from pipeline.grid import LATTICE_PIXELS, SCALE
from pipeline.models import (
    FusionModel,
    GuaranteedFusionModel,
    GuaranteedRGBModel,
    RGBModel,
    SamplingRGBModel,
)
from pipeline.quality.layers import departure
from pipeline.resample import upsample_nearest

#: The layers a judged block adds after the bands (and the RGB spread), in this order.
JUDGED = ("consistency", "spectral_angle")
#: Key prefix of the model tasks in a Dask graph.
TASK_PREFIX = "superresolve"


@dataclass(frozen=True)
class SuperResolver:
    """Both model stages as one block function over the 12 bands at 10 m."""

    rgb: RGBModel
    fusion: FusionModel
    #: With ``judged``, two more channels: the consistency and spectral angle of the models'
    #: own output for these ``bands`` (see :mod:`pipeline.quality.layers`), before any
    #: radiometric guarantee, which would make every product average back to its input.
    judged: bool = False
    bands: tuple[str, ...] = REFLECTANCE_BANDS

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
        """The 12 bands, then the RGB standard deviation over samples when there is one, then
        the two layers that judge the models when ``judged``."""
        spread = len(RGB_INDEX) if self.uncertainty else 0
        return len(REFLECTANCE_BANDS) + spread + (len(JUDGED) if self.judged else 0)

    def block(self, bands: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """(12, h, w) at 10 m → (out_channels, 4h, 4w) at 2.5 m; no-data pixels stay NaN.

        No-data pixels are given reflectance 0 for the models, so their neighbours within the
        models' reach see a dark border; the mask then restores NaN on the pixels themselves.
        """
        valid = np.isfinite(bands).all(axis=0)
        if not valid.any():  # outside the AOI's scenes: nothing for the models to see
            return np.full(
                (self.out_channels, *(n * SCALE for n in valid.shape)), np.nan, np.float32
            )
        filled = np.where(valid, bands, np.float32(0)).astype(np.float32, copy=False)
        own_rgb, rgb, spread = self._rgb(filled[RGB_INDEX], origin)
        if isinstance(self.fusion, GuaranteedFusionModel) and self.fusion.consistent:
            own = self.fusion.predict(filled, rgb, origin)
            out = self.fusion.correct(own, filled)
        else:
            out = self.fusion(filled, rgb, origin)
            own = out.copy() if self.judged else out
        parts = [out] if spread is None else [out, spread.astype(np.float32)]
        hidden = upsample_nearest(~valid, SCALE)
        if self.judged:
            own[RGB_INDEX] = own_rgb
            own[:, hidden] = np.nan
            chosen = [REFLECTANCE_BANDS.index(b) for b in self.bands]
            layers = departure(bands, own[chosen], self.bands)
            parts.append(np.stack([upsample_nearest(x, SCALE) for x in layers]))
        out = np.concatenate(parts) if len(parts) > 1 else out
        if not valid.all():
            out[:, hidden] = np.nan
        return out

    def _rgb(
        self, lr: np.ndarray, origin: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(the model's own RGB, the RGB of the product, its spread over samples or None)."""
        model = self.rgb
        if isinstance(model, GuaranteedRGBModel) and model.consistent:
            draws = model.draw(lr, origin)
            fixed = model.correct(draws, lr)
            spread = fixed.std(axis=0) if self.uncertainty else None
            return draws.mean(axis=0), fixed.mean(axis=0), spread
        if self.uncertainty:
            mean, spread = model.sample(lr, origin)
            return mean, mean, spread
        rgb = model(lr, origin)
        return rgb, rgb, None

    def apply(
        self,
        bands: da.Array,
        block_size: int = 240,
        offset: tuple[int, int] = (0, 0),
        resources: dict[str, float] | None = None,
    ) -> da.Array:
        """Lazily super-resolve a (12, y, x) dask array whose edges lie on the 60 m lattice.

        ``offset`` is the array's top-left pixel on the global 10 m lattice, which the models
        receive as block origins (see :mod:`pipeline.models.base`). ``resources`` are the
        worker resources each model call claims (see :func:`pipeline.blocks.map_with_halo`).
        """
        if block_size % LATTICE_PIXELS:
            raise ValueError(f"block size must be a multiple of {LATTICE_PIXELS} pixels")
        bands = bands.rechunk((-1, block_size, block_size))
        return map_with_halo(
            bands,
            partial(self._block_at, offset),
            self.halo,
            SCALE,
            self.out_channels,
            np.float32,
            token=TASK_PREFIX,
            resources=resources,
        )

    def _block_at(
        self, offset: tuple[int, int], bands: np.ndarray, origin: tuple[int, int]
    ) -> np.ndarray:
        return self.block(bands, (offset[0] + origin[0], offset[1] + origin[1]))
