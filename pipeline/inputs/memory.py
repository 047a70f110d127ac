"""Inputs read whole into memory for training and evaluation, rather than tile by tile: the
clear-sky composite of an AOI (through the pipeline's own search, loader and compositing, so
that models learn and are scored on what the region flow would give them), and the scale of a
local image's stored values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import rasterio.features
import shapely.geometry
from affine import Affine
from shapely.geometry.base import BaseGeometry

from pipeline.errors import UserError
from pipeline.geo.aoi import project
from pipeline.geo.bands import INPUT_RESOLUTION
from pipeline.geo.crs import default_crs
from pipeline.geo.grid import snap_outward
from pipeline.inputs.catalog import search
from pipeline.inputs.composite import clear_sky
from pipeline.inputs.load import check_assets, lattice_anchor, scene_epsg
from pipeline.inputs.signing import signer_for


@dataclass(frozen=True)
class Composite:
    """A clear-sky median composite held in memory, on a grid of 10 m pixels."""

    image: np.ndarray  # float32 (band, y, x) reflectance; NaN outside the AOI or never clear
    epsg: int
    bounds: tuple[float, float, float, float]  # (minx, miny, maxx, maxy) in EPSG:epsg


def sentinel_composite(
    stac: str,
    aoi: BaseGeometry,
    start: date,
    end: date,
    bands: Sequence[str],
    *,
    collection: str | None = None,
    max_cloud: float = 100.0,
    mask_snow: bool = True,
    lattice: float = INPUT_RESOLUTION,
) -> Composite:
    """The clear-sky median composite of ``bands`` at 10 m over ``aoi``, computed in memory
    through the pipeline's own search, loader and compositing.

    The bounds are widened to whole ``lattice`` cells of the scenes' own pixel grid when the
    scenes share a CRS: with ``lattice`` 60 m, every native 20 m and 60 m pixel then covers
    whole 2 × 2 or 6 × 6 blocks of the composite (the loader reads them by nearest neighbour
    in the scenes' CRS), so ``block_mean`` recovers the native grids.
    """
    items = search(stac, aoi, start, end, collection, max_cloud).items
    check_assets(items, bands)
    epsg = scene_epsg(items) or default_crs(aoi).to_epsg()
    footprint = project(aoi, f"EPSG:{epsg}")
    bounds = snap_outward(footprint.bounds, lattice_anchor(items, epsg), lattice)
    composite, _ = clear_sky(
        items, epsg, bounds, mask_snow, bands, signer=signer_for(stac, collection)
    )
    image = np.asarray(composite.values, dtype=np.float32)
    inside = rasterio.features.geometry_mask(
        [shapely.geometry.mapping(footprint)],
        out_shape=image.shape[1:],
        transform=Affine(INPUT_RESOLUTION, 0, bounds[0], 0, -INPUT_RESOLUTION, bounds[3]),
        invert=True,
    )
    image[:, ~inside] = np.nan
    return Composite(image, epsg, bounds)


def default_scale(dtype: np.dtype | str) -> float:
    """Factor from stored values to [0, 1]: 8-bit images /255, 16-bit /10000 (Sentinel-2 DN)."""
    kind = np.dtype(dtype)
    if kind == np.uint8:
        return 1 / 255
    if kind in (np.uint16, np.int16):
        return 1 / 10000
    if kind.kind == "f":
        return 1.0
    raise UserError(f"no default scale for {kind} images; give one explicitly")
