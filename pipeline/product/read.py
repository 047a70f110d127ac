"""Reading a finished product back for analysis: its grid, tile summaries and 10 m input.

The input is not stored in the product: the product records how it was made (catalog, item
ids, dates, cloud limit, snow masking, grid), so the input is rebuilt with the run's own
search, loader and composite. An analyst then compares the 2.5 m result with exactly what the
models saw, on the same 10 m pixels.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from typing import Any

import fsspec
import xarray as xr
from pyproj import CRS
from shapely.geometry import shape

from pipeline.errors import CatalogError
from pipeline.geo.grid import OutputGrid
from pipeline.inputs.catalog import search
from pipeline.inputs.composite import clear_sky
from pipeline.inputs.signing import AUTO, signer_for


def product_grid(attrs: Mapping[str, Any]) -> OutputGrid:
    """The output grid recorded in a product's root attributes."""
    a, _, x0, _, _, y0 = attrs["grid_transform"]
    height, width = attrs["grid_shape"]
    return OutputGrid(
        CRS.from_wkt(attrs["grid_crs_wkt"]), x0, y0, width, height, attrs["grid_tile_size"]
    )


def product_input(
    attrs: Mapping[str, Any], bounds: tuple[float, float, float, float] | None = None
) -> tuple[xr.DataArray, xr.DataArray]:
    """The lazy 10 m clear-sky composite (all 12 bands) and clear count a product was made from,
    over its grid or over ``bounds`` (in its CRS, on its 10 m pixels; they may reach past the
    grid, as a tile's halo does).

    The catalog is searched again as the run did, and only the items the product records are
    kept; a recorded item the catalog no longer has raises CatalogError rather than silently
    giving another input.
    """
    start, end = (date.fromisoformat(d) for d in attrs["date_range"])
    found = search(
        attrs["stac"],
        shape(json.loads(attrs["aoi"])),
        start,
        end,
        attrs["collection"],
        attrs["max_cloud_cover"],
    )
    recorded = list(attrs["stac_item_ids"])
    items = [i for i in found.items if i.id in recorded]
    missing = sorted(set(recorded) - {i.id for i in items})
    if missing:
        raise CatalogError(f"the catalog {attrs['stac']} no longer has {', '.join(missing)}")
    grid = product_grid(attrs)
    signer = signer_for(attrs["stac"], attrs["collection"], attrs.get("asset_signing", AUTO))
    return clear_sky(
        items, grid.crs.to_epsg(), bounds or grid.bounds, attrs["scl_snow_masked"], signer=signer
    )


def tile_summaries(
    url: str, storage_options: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The summary of every finished tile, by tile key, from the tiles' completion markers."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    markers = sorted(fs.glob(f"{path}/tiles/*.json"))
    return {
        marker.rsplit("/", 1)[-1][: -len(".json")]: json.loads(fs.cat_file(marker))["summary"]
        for marker in markers
    }
