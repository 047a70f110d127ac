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

import xarray as xr
from shapely.geometry import shape

from pipeline.errors import CatalogError
from pipeline.inputs.catalog import search
from pipeline.inputs.composite import clear_sky
from pipeline.inputs.signing import AUTO, signer_for
from pipeline.product.schema import product_grid
from pipeline.product.store import ProductStore


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
    """The summary of every finished tile, by tile key, from the tiles' completion markers
    (the scenes' ``items`` and each variable's :class:`pipeline.product.schema.Summary` key)."""
    markers = ProductStore(url, storage_options).markers()
    return {marker["tile"]: marker["summary"] for marker in markers}
