"""HR RGB patch sources for training and evaluating the RGB diffusion stage.

Every source answers ``sample(n, generator) -> float32 [n, 3, P, P]``: channel order R, G, B,
reflectance-like values clipped to [0, 1], drawn with a ``numpy.random.Generator`` so a seed fixes
the patches. LR inputs are then made by ``pipeline.protocol.degradation.degrade``: with
harmonisation for 8-bit camera images (NAIP-like), without it for Sentinel-2 reflectance.

* ``FolderSource``: random windows of the GeoTIFF / PNG images under a folder (any fsspec URL).
* ``SentinelWaldSource``: random windows of a clear-sky Sentinel-2 composite at 10 m, loaded
  through the pipeline's own search, loader and compositing. This is the Wald protocol: the
  model learns 40 m -> 10 m from these patches and is then applied 10 m -> 2.5 m. The 40 m
  inputs come from the same blind ``degrade`` (harmonisation off), not from one fixed kernel
  matched to the Sentinel-2 MTF: the blind model's degradation encoder learns from varied
  kernels, and a matched kernel would need per-band MTF values this project does not carry.

Both Sentinel-2 training sources (this one, and the 12-band one of ``pipeline.train.fusion``)
are cut from ``pipeline.inputs.memory.sentinel_composite``, and held out as
``pipeline.protocol.split`` says.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import date
from typing import Any, Protocol

import fsspec
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from pipeline.errors import UserError, reason
from pipeline.geo.bands import RGB_BANDS
from pipeline.inputs.memory import Composite, default_scale, sentinel_composite
from pipeline.protocol.split import Split, held_out_cut, split_columns

#: File name endings FolderSource reads (case-insensitive).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


class TrainingDataError(UserError):
    """The training images cannot be read or hold no usable patch."""


class PatchSource(Protocol):
    """Anything that yields HR RGB patches of a fixed size."""

    patch: int

    def sample(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """``n`` patches, float32 [n, 3, patch, patch], R G B, values in [0, 1]."""
        ...


def augment(patches: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """Each square patch under a random one of its 8 flips and quarter turns.

    The reference augments its training images the same way; ground seen from above has no
    preferred orientation, so this multiplies small training sets (like the demo) for free.
    """
    turns = generator.integers(4, size=len(patches))
    flips = generator.integers(2, size=len(patches))
    out = np.empty_like(patches)
    for i, patch in enumerate(patches):
        turned = np.rot90(patch, k=int(turns[i]), axes=(-2, -1))
        out[i] = turned[..., ::-1] if flips[i] else turned
    return out


class FolderSource:
    """Random windows of every .tif/.tiff/.png image under a folder (local path or fsspec URL).

    Values are multiplied by ``scale`` (by default from the data type: uint8 /255, uint16 and
    int16 /10000, floats as they are) and clipped to [0, 1]. ``bands`` are the 1-based bands
    read as R, G, B. Images are drawn uniformly (as the reference does, one image per index),
    then a window uniformly inside it; windows touching nodata or transparent pixels are drawn
    again. Pixels are read window by window, so large tiles are never loaded whole.
    """

    def __init__(
        self,
        path: str,
        patch: int = 256,
        *,
        scale: float | None = None,
        bands: Sequence[int] = (1, 2, 3),
        max_tries: int = 100,
    ) -> None:
        if len(bands) != 3:
            raise ValueError(f"give three bands (R, G, B), got {list(bands)}")
        self.patch = patch
        self.bands = list(bands)
        self.max_tries = max_tries
        self._fs, root = fsspec.core.url_to_fs(path)
        self._local = "file" in np.atleast_1d(self._fs.protocol)
        try:
            if not self._fs.isdir(root):
                raise TrainingDataError(f"image folder not found: {path}")
            names = self._fs.find(root)
        except OSError as err:
            raise TrainingDataError(f"cannot list image folder {path}: {reason(err)}") from None
        self.files = sorted(n for n in names if n.lower().endswith(IMAGE_SUFFIXES))
        if not self.files:
            raise TrainingDataError(f"no {', '.join(IMAGE_SUFFIXES)} image under {path}")
        self._sizes: list[tuple[int, int]] = []
        self._scales: list[float] = []
        for name in self.files:
            with self._open(name) as ds:
                if ds.height < patch or ds.width < patch:
                    raise TrainingDataError(
                        f"{name} is {ds.height}x{ds.width} px, smaller than the {patch} px patch"
                    )
                if ds.count < max(self.bands):
                    raise TrainingDataError(
                        f"{name} has {ds.count} band(s); bands {self.bands} were asked for"
                    )
                self._sizes.append((ds.height, ds.width))
                self._scales.append(default_scale(ds.dtypes[0]) if scale is None else scale)

    def _open(self, name: str) -> rasterio.DatasetReader:
        try:
            with warnings.catch_warnings():  # PNGs carry no georeferencing, and need none
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return rasterio.open(name, opener=None if self._local else self._fs)
        except RasterioIOError as err:
            raise TrainingDataError(f"cannot read image {name}: {reason(err)}") from None

    def sample(self, n: int, generator: np.random.Generator) -> np.ndarray:
        out = np.empty((n, 3, self.patch, self.patch), dtype=np.float32)
        for i in range(n):
            out[i] = self._draw(generator)
        return out

    def _draw(self, generator: np.random.Generator) -> np.ndarray:
        p = self.patch
        for _ in range(self.max_tries):
            index = int(generator.integers(len(self.files)))
            h, w = self._sizes[index]
            y, x = int(generator.integers(h - p + 1)), int(generator.integers(w - p + 1))
            with self._open(self.files[index]) as ds:
                data = ds.read(self.bands, window=Window(x, y, p, p), masked=True)
            if not np.ma.is_masked(data):
                values = np.asarray(data, dtype=np.float64) * self._scales[index]
                return np.clip(values, 0, 1).astype(np.float32)
        raise TrainingDataError(
            f"no {p} px window without nodata found in {self.max_tries} tries; "
            "check the images' nodata or use a smaller patch"
        )


class SentinelWaldSource:
    """Random windows of the clear-sky median composite of B04, B03, B02 at 10 m over an AOI.

    The catalog (STAC API, static catalog or ItemCollection; see ``pipeline.inputs.catalog.search``)
    is searched for ``aoi`` (WGS84) and the dates; the composite is computed once, in memory
    (so keep training AOIs to some hundred km²), on the scenes' own 10 m grid when they share a
    CRS. Pixels outside the AOI or never seen clear are NaN, and windows touching them are never
    drawn.

    Held-out split: the composite's columns are cut once at ``1 - test_fraction`` of its width;
    ``split="train"`` draws only windows lying wholly west of the cut, ``"test"`` only windows
    wholly east of it, ``"all"`` anywhere. So no test pixel is ever seen in training
    (``pipeline.protocol.split``).
    """

    def __init__(
        self,
        stac: str,
        aoi: BaseGeometry,
        start: date,
        end: date,
        *,
        patch: int = 64,
        collection: str | None = None,
        max_cloud: float = 100.0,
        split: Split = "all",
        test_fraction: float = 0.25,
        mask_snow: bool = True,
    ) -> None:
        _check_split(split, test_fraction)
        composite = sentinel_composite(
            stac,
            aoi,
            start,
            end,
            RGB_BANDS,
            collection=collection,
            max_cloud=max_cloud,
            mask_snow=mask_snow,
        )
        self._cut(composite, patch, split, test_fraction)

    @classmethod
    def train_and_test(
        cls,
        stac: str,
        aoi: BaseGeometry,
        start: date,
        end: date,
        *,
        patches: tuple[int, int],
        test_fraction: float = 0.25,
        **filters: Any,
    ) -> tuple[SentinelWaldSource, SentinelWaldSource]:
        """Both sides of the held-out cut, windows of ``patches`` (train, test) pixels, from
        one composite (``filters``: those of the constructor)."""
        _check_split("train", test_fraction)
        composite = sentinel_composite(stac, aoi, start, end, RGB_BANDS, **filters)
        train, test = (cls.__new__(cls), cls.__new__(cls))
        train._cut(composite, patches[0], "train", test_fraction)
        test._cut(composite, patches[1], "test", test_fraction)
        return train, test

    def _cut(self, composite: Composite, patch: int, split: Split, test_fraction: float) -> None:
        """Take the ``split`` side of ``composite``'s held-out cut, in windows of ``patch``."""
        self.patch = patch
        self.split = split
        self.image, self.epsg, self.bounds = composite.image, composite.epsg, composite.bounds
        width = self.image.shape[2]
        self.columns = split_columns(width, held_out_cut(width, test_fraction, 1), split)
        self._starts = clear_windows(self.image, patch, self.columns)
        if len(self._starts) == 0:
            raise TrainingDataError(
                f"no cloud-free {patch} px window in the {split} part of the composite "
                f"(columns {self.columns[0]}..{self.columns[1]} of {width}); "
                "use a smaller patch, a larger AOI or more dates"
            )

    def windows(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """Top-left (row, column) of ``n`` random windows of the split, int [n, 2]."""
        chosen = self._starts[generator.integers(len(self._starts), size=n)]
        return np.stack(np.divmod(chosen, self.image.shape[2]), axis=1)

    def sample(self, n: int, generator: np.random.Generator) -> np.ndarray:
        p = self.patch
        patches = [self.image[:, y : y + p, x : x + p] for y, x in self.windows(n, generator)]
        return np.clip(np.stack(patches), 0, 1).astype(np.float32)


def _check_split(split: str, test_fraction: float) -> None:
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")


def clear_windows(image: np.ndarray, patch: int, columns: tuple[int, int]) -> np.ndarray:
    """Flat indices (row * width + column) of the top-left corners of every patch x patch
    window inside ``columns`` without NaN; flat, to keep large composites cheap."""
    first, last = columns
    bad = ~np.isfinite(image[:, :, first:last]).all(axis=0)
    h, w = bad.shape
    if h < patch or w < patch:
        return np.empty(0, dtype=np.int64)
    table = np.zeros((h + 1, w + 1), dtype=np.int64)
    table[1:, 1:] = bad.cumsum(0).cumsum(1)
    count = table[patch:, patch:] - table[:-patch, patch:] - table[patch:, :-patch]
    count += table[:-patch, :-patch]
    rows, cols = np.nonzero(count == 0)
    return rows * image.shape[2] + cols + first
