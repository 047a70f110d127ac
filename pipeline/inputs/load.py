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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pystac
import shapely
import stackstac
import xarray as xr
from rasterio.enums import Resampling
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from stackstac.rio_reader import DEFAULT_GDAL_ENV

from pipeline.errors import CatalogError, ItemError
from pipeline.geo.bands import BANDS, INPUT_RESOLUTION, REFLECTANCE_BANDS, SCL_ALIASES
from pipeline.inputs.signing import Signer, reader_for
from pipeline.network import gdal_options
from pipeline.network import timeout as network_timeout

#: BOA_ADD_OFFSET applied by ESA from processing baseline 04.00 on.
BOA_ADD_OFFSET = -1000
#: Property by which a catalog says it already removed the BOA offset from the pixels.
OFFSET_APPLIED_PROPERTIES = ("earthsearch:boa_offset_applied", "s2:boa_offset_applied")


def asset_key(item: pystac.Item, aliases: Sequence[str]) -> str | None:
    """The first of ``aliases`` that names an asset of ``item``."""
    return next((a for a in aliases if a in item.assets), None)


def boa_offset(item: pystac.Item) -> int:
    """DN offset to add before scaling by 1/10000, chosen from the item's processing baseline."""
    return _offset(item.id, item.properties)


def _offset(item_id: str, props: Mapping) -> int:
    """The BOA offset of a processing baseline (none without one); ItemError for a baseline
    that is not a version number, whose offset (a tenth of reflectance) cannot be known."""
    if any(props.get(p) for p in OFFSET_APPLIED_PROPERTIES):
        return 0
    baseline = props.get("s2:processing_baseline")
    if baseline is None:
        return 0
    major = read_property(
        item_id,
        "s2:processing_baseline",
        baseline,
        "a version number such as 05.11",
        lambda v: float(str(v).split(".")[0] or 0),
    )
    return BOA_ADD_OFFSET if major >= 4 else 0


def read_property(
    item_id: str, key: str, value: object, expected: str, parse: Callable[[Any], Any]
) -> Any:
    """``parse(value)``, or an ItemError naming the item, the property and what it should be."""
    try:
        parsed = parse(value)
    except (
        TypeError,
        ValueError,
        AttributeError,
        KeyError,
        IndexError,
        shapely.errors.ShapelyError,
    ):
        parsed = None
    if parsed is None or (isinstance(parsed, float) and not math.isfinite(parsed)):
        raise ItemError(item_id, key, value, expected)
    return parsed


def _epsg(item: pystac.Item | Scene) -> int | None:
    return item.epsg if isinstance(item, Scene) else _epsg_of(item.id, item.properties)


def _epsg_of(item_id: str, props: Mapping) -> int | None:
    if props.get("proj:epsg"):
        return read_property(item_id, "proj:epsg", props["proj:epsg"], "an EPSG code", int)
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return read_property(
            item_id, "proj:code", code, "EPSG:<code>", lambda c: int(c.split(":")[1])
        )
    return None


def scene_epsg(items: Sequence[pystac.Item | Scene]) -> int | None:
    """The EPSG code shared by all items, or None when they differ or do not say."""
    codes = {_epsg(i) for i in items}
    return codes.pop() if len(codes) == 1 else None


def _aliases(key: str) -> tuple[str, ...]:
    return SCL_ALIASES if key == "SCL" else BANDS[key].aliases


def check_assets(items: Sequence[pystac.Item], bands: Sequence[str]) -> None:
    """Raise CatalogError for the first item lacking an asset for one of ``bands`` or SCL."""
    for item in items:
        _asset_names(item.id, item.assets, (*bands, "SCL"))


def _asset_names(item_id: str, assets: Mapping, keys: Sequence[str]) -> dict[str, str]:
    """The item's asset for each of ``keys`` (band names, 'SCL'); CatalogError for a missing
    one."""
    names = {}
    for key in keys:
        names[key] = next((a for a in _aliases(key) if a in assets), None)
        if names[key] is None:
            raise CatalogError(
                f"item {item_id} has no asset for {key} (looked for {', '.join(_aliases(key))})"
            )
    return names


#: The assets a region run reads of every scene: the 12 bands and the scene classification.
RUN_ASSETS = (*REFLECTANCE_BANDS, "SCL")
#: The band whose grid anchors the output lattice (a 10 m band every product reads).
ANCHOR_BAND = "B02"


@dataclass(frozen=True)
class Scene:
    """One STAC item reduced to what loading needs, so that a continent's tens of thousands
    of items fit in the runner's memory and each travels to a worker in a few kilobytes.

    ``stac`` is the item as the loader reads it: assets named by band (and ``SCL``) with
    absolute hrefs and only their ``proj:`` fields, properties reduced to the date and the
    projection.
    """

    id: str
    datetime: datetime | None
    epsg: int | None
    offset: int  # the BOA offset of its processing baseline (see boa_offset)
    footprint: BaseGeometry | None  # WGS84
    href: str | None  # the item's own STAC document, for provenance links
    stac: dict

    def anchor(self) -> tuple[float, float] | None:
        """The top-left corner of its pixel grids (every band's, 10 to 60 m, starts there),
        read from its B02 asset."""
        transform = self.stac["assets"].get(ANCHOR_BAND, {}).get("proj:transform")
        return (float(transform[2]), float(transform[5])) if transform else None


def to_scene(item: pystac.Item | Scene, keys: Sequence[str] = RUN_ASSETS) -> Scene:
    """The :class:`Scene` of ``item`` with the assets of ``keys`` (band names, ``SCL``);
    CatalogError for an item lacking one."""
    if isinstance(item, Scene):
        return item
    doc = item.to_dict(include_self_link=False, transform_hrefs=False)
    return scene_from_dict(doc, keys, item.get_self_href())


def scene_from_dict(
    doc: Mapping, keys: Sequence[str] = RUN_ASSETS, base: str | None = None
) -> Scene:
    """The :class:`Scene` of an item's JSON (as an API sends it: no pystac Item is made, which
    costs milliseconds an item), relative asset hrefs taken relative to ``base``; ItemError
    for a property that cannot be read (the item is then skipped, see
    :mod:`pipeline.inputs.catalog`).
    """
    props = doc["properties"]
    assets = {}
    for key, found in _asset_names(doc["id"], doc["assets"], keys).items():
        asset = doc["assets"][found]
        href = urljoin(base, asset["href"]) if base else asset["href"]
        assets[key] = {"href": href, **{k: v for k, v in asset.items() if k.startswith("proj:")}}
    epsg = _epsg_of(doc["id"], props)
    properties = {k: v for k, v in props.items() if k.startswith("proj:")}
    properties["datetime"] = props.get("datetime")
    if epsg is not None:
        properties["proj:epsg"] = epsg
    stac = {
        "type": "Feature",
        "id": doc["id"],
        "bbox": doc.get("bbox"),
        "properties": properties,
        "assets": assets,
    }
    when = props.get("datetime")
    when = when and read_property(
        doc["id"], "datetime", when, "an RFC 3339 date-time", datetime.fromisoformat
    )
    footprint = doc.get("geometry") and read_property(
        doc["id"], "geometry", doc["geometry"], "a GeoJSON geometry", _footprint
    )
    self_href = next(
        (link["href"] for link in doc.get("links", []) if link.get("rel") == "self"), base
    )
    return Scene(
        doc["id"], when or None, epsg, _offset(doc["id"], props), footprint or None, self_href, stac
    )


def _footprint(geometry: Mapping) -> BaseGeometry | None:
    """A geometry with finite coordinates, or None."""
    footprint = shape(geometry)
    return footprint if np.isfinite(shapely.get_coordinates(footprint)).all() else None


def lattice_anchor(scenes: Sequence[pystac.Item | Scene], epsg: int) -> tuple[float, float]:
    """A corner of the scenes' pixel grid when they are all in ``epsg`` (so that a grid
    through it has their native pixels nest in its cells), else the origin."""
    if scene_epsg(scenes) != epsg:
        return (0.0, 0.0)
    for item in scenes:
        corner = to_scene(item, [ANCHOR_BAND]).anchor()
        if corner:
            return corner
    return (0.0, 0.0)


def _stack(
    scenes: Sequence[Scene],
    keys: Sequence[str],
    epsg: int,
    bounds: tuple[float, float, float, float],
    resampling: Resampling,
    chunksize: int,
    timeout: float | None,
    cached: bool,
    signer: Signer | None,
) -> xr.DataArray:
    """The assets ``keys`` of ``scenes``; an asset that cannot be read fails the
    computation (stackstac's default would read an asset that answers 404 as no data).
    ``timeout`` and ``cached``: see :func:`pipeline.network.gdal_options`."""
    seconds = network_timeout() if timeout is None else timeout
    return stackstac.stack(
        [{**s.stac, "assets": {k: s.stac["assets"][k] for k in keys}} for s in scenes],
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
        gdal_env=DEFAULT_GDAL_ENV.updated(always=gdal_options(seconds, cached)),
        errors_as_nodata=(),
        reader=reader_for(signer),  # signs each href as it is opened, when the catalog needs it
    )


def load_reflectance(
    items: Sequence[pystac.Item | Scene],
    bands: Sequence[str],
    epsg: int,
    bounds: tuple[float, float, float, float],
    chunksize: int = 1024,
    timeout: float | None = None,
    cached: bool = True,
    signer: Signer | None = None,
) -> xr.DataArray:
    """Lazy float32 reflectance, dims (time, band, y, x) at 10 m; NaN where there is no data.

    ``timeout`` (None: this process's :func:`pipeline.network.timeout`) and ``cached``: see
    :func:`pipeline.network.gdal_options`; ``signer`` signs the asset hrefs as they are read
    (see :mod:`pipeline.inputs.signing`)."""
    scenes = [to_scene(i, bands) for i in items]
    native = scene_epsg(scenes) == epsg
    dn = _stack(
        scenes,
        bands,
        epsg,
        bounds,
        Resampling.nearest if native else Resampling.bilinear,
        chunksize,
        timeout,
        cached,
        signer,
    )
    offsets = xr.DataArray(np.array([s.offset for s in scenes], dtype="float32"), dims="time")
    reflectance = (dn.where(dn != 0) + offsets) / np.float32(10000)
    return reflectance.astype("float32").rename("reflectance")


def load_scl(
    items: Sequence[pystac.Item | Scene],
    epsg: int,
    bounds: tuple[float, float, float, float],
    chunksize: int = 1024,
    timeout: float | None = None,
    cached: bool = True,
    signer: Signer | None = None,
) -> xr.DataArray:
    """Lazy scene classification, dims (time, y, x) at 10 m, nearest; NaN where missing."""
    scenes = [to_scene(i, ["SCL"]) for i in items]
    scl = _stack(
        scenes, ["SCL"], epsg, bounds, Resampling.nearest, chunksize, timeout, cached, signer
    )
    return scl.isel(band=0, drop=True).rename("scl")
