"""Lazy loading of Sentinel-2 L2A items onto the 10 m input grid, with radiometry.

stackstac is the loader (odc-stac is the maintained alternative: it would replace this module
only). Reflectance = (DN + offset) / 10000, with the BOA offset of each item's processing
baseline; DN 0 (the L2A no-data value) and missing scenes stay NaN, never reflectance 0.

Resampling: when the output CRS is the scenes' own and the grid is on their 60 m lattice, every
band is read with nearest neighbour, which at 10 m repeats each native 20 m or 60 m pixel
exactly (2×2 or 6×6 times), so the fusion stage sees the native values. Across CRSs reflectance
is read bilinearly: nearest would duplicate and drop source pixels along the warp, a blocky
error the ×4 stages would magnify, while bilinear keeps local means. SCL is categorical and
always read with nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pystac
import stackstac
import xarray as xr
from rasterio.enums import Resampling

from pipeline.bands import BANDS, SCL_ALIASES
from pipeline.errors import CatalogError
from pipeline.grid import INPUT_RESOLUTION

#: BOA_ADD_OFFSET applied by ESA from processing baseline 04.00 on.
BOA_ADD_OFFSET = -1000
#: Property by which a catalog says it already removed the BOA offset from the pixels.
OFFSET_APPLIED_PROPERTIES = ("earthsearch:boa_offset_applied", "s2:boa_offset_applied")


def asset_key(item: pystac.Item, aliases: Sequence[str]) -> str | None:
    """The first of ``aliases`` that names an asset of ``item``."""
    return next((a for a in aliases if a in item.assets), None)


def boa_offset(item: pystac.Item) -> int:
    """DN offset to add before scaling by 1/10000, chosen from the item's processing baseline."""
    props = item.properties
    if any(props.get(p) for p in OFFSET_APPLIED_PROPERTIES):
        return 0
    baseline = props.get("s2:processing_baseline")
    if baseline is None:
        return 0
    major = float(str(baseline).split(".")[0] or 0)
    return BOA_ADD_OFFSET if major >= 4 else 0


def _epsg(item: pystac.Item) -> int | None:
    props = item.properties
    if props.get("proj:epsg"):
        return int(props["proj:epsg"])
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


def scene_epsg(items: Sequence[pystac.Item]) -> int | None:
    """The EPSG code shared by all items, or None when they differ or do not say."""
    codes = {_epsg(i) for i in items}
    return codes.pop() if len(codes) == 1 else None


def _aliases(key: str) -> tuple[str, ...]:
    return SCL_ALIASES if key == "SCL" else BANDS[key].aliases


def check_assets(items: Sequence[pystac.Item], bands: Sequence[str]) -> None:
    """Raise CatalogError for the first item lacking an asset for one of ``bands`` or SCL."""
    for item in items:
        for key in (*bands, "SCL"):
            if asset_key(item, _aliases(key)) is None:
                raise CatalogError(
                    f"item {item.id} has no asset for {key} "
                    f"(looked for {', '.join(_aliases(key))})"
                )


def _canonical(item: pystac.Item, keys: Sequence[str]) -> dict:
    """The item as a dict whose assets are renamed to ``keys`` (band names, 'SCL')."""
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    assets = {}
    for key in keys:
        found = asset_key(item, _aliases(key))
        if found is None:
            raise KeyError(f"item {item.id} has no asset for {key}")
        asset = dict(doc["assets"][found])
        asset["href"] = item.assets[found].get_absolute_href()
        assets[key] = asset
    doc["assets"] = assets
    epsg = _epsg(item)
    if epsg is not None:
        doc["properties"]["proj:epsg"] = epsg
    return doc


def _stack(
    items: Sequence[pystac.Item],
    keys: Sequence[str],
    epsg: int,
    bounds: tuple[float, float, float, float],
    resampling: Resampling,
    chunksize: int,
) -> xr.DataArray:
    return stackstac.stack(
        [_canonical(i, keys) for i in items],
        assets=list(keys),
        epsg=epsg,
        resolution=INPUT_RESOLUTION,
        bounds=bounds,
        snap_bounds=False,
        resampling=resampling,
        chunksize=(1, 1, chunksize, chunksize),
        dtype="float32",
        fill_value=np.float32(np.nan),
        rescale=False,
        xy_coords="center",
        properties=False,
        band_coords=False,
        sortby_date=False,  # keep the caller's order, which the offsets follow
    )


def load_reflectance(
    items: Sequence[pystac.Item],
    bands: Sequence[str],
    epsg: int,
    bounds: tuple[float, float, float, float],
    chunksize: int = 1024,
) -> xr.DataArray:
    """Lazy float32 reflectance, dims (time, band, y, x) at 10 m; NaN where there is no data."""
    native = scene_epsg(items) == epsg
    dn = _stack(
        items,
        bands,
        epsg,
        bounds,
        Resampling.nearest if native else Resampling.bilinear,
        chunksize,
    )
    offsets = xr.DataArray(
        np.array([boa_offset(i) for i in items], dtype="float32"), dims="time"
    )
    reflectance = (dn.where(dn != 0) + offsets) / np.float32(10000)
    return reflectance.astype("float32").rename("reflectance")


def load_scl(
    items: Sequence[pystac.Item],
    epsg: int,
    bounds: tuple[float, float, float, float],
    chunksize: int = 1024,
) -> xr.DataArray:
    """Lazy scene classification, dims (time, y, x) at 10 m, nearest; NaN where missing."""
    scl = _stack(items, ["SCL"], epsg, bounds, Resampling.nearest, chunksize)
    return scl.isel(band=0, drop=True).rename("scl")
