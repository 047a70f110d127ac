"""The super-resolution stage: RGB model then band fusion, per block with a halo."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import dask.array as da
import numpy as np

from pipeline.geo.bands import REFLECTANCE_BANDS, RGB_INDEX, SCALE
from pipeline.geo.blocks import halo_blocks, map_with_halo
from pipeline.geo.grid import LATTICE_PIXELS
from pipeline.geo.resample import upsample_nearest
from pipeline.models import (
    FusionModel,
    GuaranteedFusionModel,
    GuaranteedRGBModel,
    RGBModel,
    SamplingRGBModel,
)
from pipeline.quality.layers import departure

#: The layers a judged block adds after the bands (and the RGB spread), in this order.
JUDGED = ("consistency", "spectral_angle")
#: Key prefix of the model tasks in a Dask graph.
TASK_PREFIX = "superresolve"
#: Edge, in 10 m pixels, of the fusion's blocks when the RGB model has the whole array as one
#: block (``apply(block_size=None)``): the fusion networks hold their activations for the
#: whole block at once, which a tile's region would not fit.
FUSION_BLOCK = 240
#: How far, in 10 m pixels, beyond the pixels a block keeps the RGB model samples the guide
#: that the fusion reads: beyond it the fusion sees the bilinear ×4 of the input, a guide
#: without detail. The fusion's reach is longer (19 to 79 pixels), but sampling the
#: diffusion over all of it is work mostly thrown away, while the detail there moves the
#: kept pixels little (docs/benchmarks.md, "the guide's context").
GUIDE_CONTEXT = 6


@dataclass(frozen=True)
class Layout:
    """How the region flow cuts the work: output tiles of ``tile_size`` 2.5 m pixels, each
    loaded with the models' halo, and model blocks of ``block_size`` 10 m pixels inside the
    tile's region, each given the halo again (None: the region is one block)."""

    tile_size: int
    block_size: int | None


#: On CPU workers: blocks small enough for a worker's memory, the model's time per block short.
CPU_LAYOUT = Layout(tile_size=1920, block_size=240)
#: On GPU workers, where the RGB model batches its windows whatever the block's size: large
#: tiles, each one block, so that the halos (the tile's, and the blocks' inside it) are a small
#: share of the work. See docs/benchmarks.md, "executed vs useful".
GPU_LAYOUT = Layout(tile_size=15360, block_size=None)


def layout_for(cuda: bool) -> Layout:
    """The layout for a run whose RGB model runs on a CUDA device, or not."""
    return GPU_LAYOUT if cuda else CPU_LAYOUT


def region_halo(rgb_halo: int, fusion_halo: int) -> int:
    """Both models' context in 10 m pixels, rounded up to whole 60 m pixels so blocks stay
    aligned."""
    return -(-(rgb_halo + fusion_halo) // LATTICE_PIXELS) * LATTICE_PIXELS


def guide_margin(margin: int, fusion_halo: int, guide_context: int | None = GUIDE_CONTEXT) -> int:
    """The pixels at the edge of a block, whose output is discarded within ``margin``, that
    the RGB stage need not sample for a fusion of halo ``fusion_halo`` whose guide is
    sampled over ``guide_context`` pixels (None: its whole halo)."""
    reach = fusion_halo if guide_context is None else min(fusion_halo, guide_context)
    return max(0, margin - reach)


def model_input(bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pixels valid in every band, and the bands as the models see them: no-data pixels
    at reflectance 0."""
    valid = np.isfinite(bands).all(axis=0)
    return valid, np.where(valid, bands, np.float32(0)).astype(np.float32, copy=False)


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
    #: See :data:`GUIDE_CONTEXT`; None: the fusion's whole reach.
    guide_context: int | None = GUIDE_CONTEXT

    @property
    def halo(self) -> int:
        """Context in 10 m pixels (see ``region_halo``)."""
        return region_halo(self.rgb.halo, self.fusion.halo)

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

    def split(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """The channels of an output (:attr:`out_channels`): the 12 bands, the RGB spread
        over samples (None without), the judging layers (none unless ``judged``)."""
        n = len(REFLECTANCE_BANDS)
        end = n + (len(RGB_INDEX) if self.uncertainty else 0)
        return out[:n], (out[n:end] if self.uncertainty else None), out[end:]

    def on(self, rgb_device: str | None, fusion_device: str | None) -> SuperResolver:
        """The same models running on these torch devices (None: the process's default).

        A learned model moved to another device is built anew, so this runs where the models
        run: on a worker, never on a runner that may have no GPU. Models without a device
        (the baselines) stay as they are.
        """
        return dataclasses.replace(
            self, rgb=_on(self.rgb, rgb_device), fusion=_on(self.fusion, fusion_device)
        )

    def block(
        self,
        bands: np.ndarray,
        origin: tuple[int, int],
        fusion_block: int | None = None,
        margin: int = 0,
    ) -> np.ndarray:
        """(12, h, w) at 10 m → (out_channels, 4h, 4w) at 2.5 m; no-data pixels stay NaN.

        No-data pixels are given reflectance 0 for the models, so their neighbours within the
        models' reach see a dark border; the mask then restores NaN on the pixels themselves.
        ``fusion_block``: the fusion runs in blocks of this edge with its halo, as
        :func:`map_with_halo` would run it, rather than on the whole block at once.
        ``margin``: the 10 m pixels at each edge whose output the caller discards; the RGB
        stage then skips what only they need (their output is undefined).
        """
        valid, filled = model_input(bands)
        if not valid.any():  # outside the AOI's scenes: nothing for the models to see
            return np.full(
                (self.out_channels, *(n * SCALE for n in valid.shape)), np.nan, np.float32
            )
        own_rgb, rgb, spread = self.rgb_stage(filled[RGB_INDEX], origin, self.rgb_margin(margin))
        fused = self._fuse(bands, filled, own_rgb, rgb, origin, fusion_block)
        out = fused
        if spread is not None:  # the spread goes between the bands and the judging layers
            n = len(REFLECTANCE_BANDS)
            out = np.concatenate([fused[:n], spread.astype(np.float32), fused[n:]])
        if not valid.all():
            out[:, upsample_nearest(~valid, SCALE)] = np.nan
        return out

    def rgb_margin(self, margin: int) -> int:
        """The RGB stage's margin in a block whose output is discarded within ``margin``: the
        fusion reads the RGB as far as its halo into it, sampled as far as
        :attr:`guide_context`."""
        return guide_margin(margin, self.fusion.halo, self.guide_context)

    def rgb_stage(
        self, lr: np.ndarray, origin: tuple[int, int], margin: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The RGB stage of B04 B03 B02 at 10 m: (the model's own RGB, the RGB of the product,
        which the fusion is guided by, its spread over samples or None); ``margin``: see
        :meth:`block`, for the RGB."""
        model = self.rgb
        if isinstance(model, GuaranteedRGBModel) and model.consistent:
            draws = model.draw(lr, origin, margin)
            fixed = model.correct(draws, lr)
            spread = fixed.std(axis=0) if self.uncertainty else None
            return draws.mean(axis=0), fixed.mean(axis=0), spread
        if isinstance(model, SamplingRGBModel):
            mean, spread = model.sample(lr, origin, margin)
            return mean, mean, spread if self.uncertainty else None
        rgb = model(lr, origin)
        return rgb, rgb, None

    def apply(
        self,
        bands: da.Array,
        block_size: int | None = 240,
        offset: tuple[int, int] = (0, 0),
        cropped: bool = False,
    ) -> da.Array:
        """Lazily super-resolve a (12, y, x) dask array whose edges lie on the 60 m lattice.

        ``offset`` is the array's top-left pixel on the global 10 m lattice, which the models
        receive as block origins (see :mod:`pipeline.models.base`). ``block_size`` None makes
        the whole array one block, without the halos that blocks inside it would add, the
        fusion then running in blocks of ``FUSION_BLOCK``. ``cropped``: the caller discards
        :attr:`halo` pixels at the array's edges, as the halo wrapper does between blocks, so
        that no block's output is read within the halo of its edges (see :meth:`block`).
        """
        if block_size is not None and block_size % LATTICE_PIXELS:
            raise ValueError(f"block size must be a multiple of {LATTICE_PIXELS} pixels")
        bands = bands.rechunk((-1, block_size or -1, block_size or -1))
        fusion_block = None if block_size else FUSION_BLOCK
        return map_with_halo(
            bands,
            partial(self._block_at, offset, fusion_block, self.halo if cropped else 0),
            self.halo,
            SCALE,
            self.out_channels,
            np.float32,
            token=TASK_PREFIX,
        )

    def _block_at(
        self,
        offset: tuple[int, int],
        fusion_block: int | None,
        margin: int,
        bands: np.ndarray,
        origin: tuple[int, int],
    ) -> np.ndarray:
        at = (offset[0] + origin[0], offset[1] + origin[1])
        return self.block(bands, at, fusion_block, margin)

    def _fuse(
        self,
        bands: np.ndarray,
        filled: np.ndarray,
        own_rgb: np.ndarray,
        rgb: np.ndarray,
        origin: tuple[int, int],
        size: int | None,
    ) -> np.ndarray:
        """The fusion of a block (see :meth:`_fuse_part`), whole or in blocks of ``size`` with
        the fusion's halo."""
        if size is None:
            return self._fuse_part(bands, filled, own_rgb, rgb, origin)
        halo = region_halo(0, self.fusion.halo)
        h, w = bands.shape[1:]
        channels = len(REFLECTANCE_BANDS) + (len(JUDGED) if self.judged else 0)
        out = np.empty((channels, h * SCALE, w * SCALE), np.float32)
        for y, height, top, bottom in halo_blocks(h, size, halo):
            for x, width, left, right in halo_blocks(w, size, halo):
                low = (slice(None), slice(y, y + height), slice(x, x + width))
                high = (
                    slice(None),
                    slice(SCALE * y, SCALE * (y + height)),
                    slice(SCALE * x, SCALE * (x + width)),
                )
                part = self._fuse_part(
                    bands[low],
                    filled[low],
                    own_rgb[high],
                    rgb[high],
                    (origin[0] + y, origin[1] + x),
                )
                out[
                    :,
                    SCALE * (y + top) : SCALE * (y + height - bottom),
                    SCALE * (x + left) : SCALE * (x + width - right),
                ] = part[
                    :,
                    SCALE * top : SCALE * (height - bottom),
                    SCALE * left : SCALE * (width - right),
                ]
        return out

    def _fuse_part(
        self,
        bands: np.ndarray,
        filled: np.ndarray,
        own_rgb: np.ndarray,
        rgb: np.ndarray,
        origin: tuple[int, int],
    ) -> np.ndarray:
        """The 12 bands of the product, then with ``judged`` the consistency and spectral
        angle of the models' own output (``own_rgb`` and the fusion's prediction) against
        ``bands`` (NaN = no data)."""
        if isinstance(self.fusion, GuaranteedFusionModel) and self.fusion.consistent:
            own = self.fusion.predict(filled, rgb, origin)
            out = self.fusion.correct(own, filled)
        else:
            out = self.fusion(filled, rgb, origin)
            own = out.copy() if self.judged else out
        if not self.judged:
            return out
        own[RGB_INDEX] = own_rgb
        own[:, upsample_nearest(~np.isfinite(bands).all(axis=0), SCALE)] = np.nan
        chosen = [REFLECTANCE_BANDS.index(b) for b in self.bands]
        layers = departure(bands, own[chosen], self.bands)
        return np.concatenate([out, np.stack([upsample_nearest(x, SCALE) for x in layers])])


def _on(model: RGBModel | FusionModel, device: str | None) -> RGBModel | FusionModel:
    if not hasattr(model, "device") or model.device == device:
        return model
    return dataclasses.replace(model, device=device)
