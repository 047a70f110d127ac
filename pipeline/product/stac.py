"""The product's STAC Collection and Item, and its product-level quality summary.

Both files live inside the product, in ``stac/``, with relative links and asset hrefs, so the
product can be copied or moved (locally or between buckets) as one folder and its metadata
still points at it. The quality summary aggregates the tile markers' summaries and gives the
product's verdict; it goes into the Item and into the Zarr root attributes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pystac
import shapely
from pyproj import Transformer
from pystac.extensions.eo import Band as EOBand
from pystac.extensions.eo import EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension
from shapely.geometry import box, mapping

from pipeline.geo.aoi import project, split_at_antimeridian, wgs84_bbox
from pipeline.geo.bands import BANDS, RESOLUTION
from pipeline.geo.grid import OutputGrid
from pipeline.inputs.catalog import date_range
from pipeline.inputs.load import Scene
from pipeline.product.overviews import level_count, level_path, level_shape, level_transform
from pipeline.product.schema import DATA, PIXELS, REFLECTANCE, VARIABLES, stored
from pipeline.product.store import ProductStore
from pipeline.quality.verdict import verdict
from pipeline.redact import redact

#: Where the STAC files go, relative to the product root.
STAC_DIR = "stac"
ZARR_MEDIA_TYPE = "application/vnd+zarr"
#: Prefix of the product's own Item properties (recipe, quality summary, source items).
PREFIX = "s2sr"


@dataclass
class QualitySummary:
    """Product-level aggregate of the tile summaries, fed one marker at a time.

    Fractions and means are weighted by the pixels each is taken over (see
    :class:`pipeline.product.schema.Summary`): ``valid_fraction`` and ``mean_clear_count`` over
    all pixels of the finished tiles, the quality means over their pixels with data. The
    verdict is judged on the aggregate (:func:`pipeline.quality.verdict.verdict`).
    """

    tiles_planned: int
    tiles_failed: int
    tiles_done: int = 0
    _sums: dict[str, float] = field(default_factory=dict)
    _weights: dict[str, float] = field(default_factory=dict)

    def add(self, marker: dict[str, Any]) -> None:
        minx, miny, maxx, maxy = marker["bounds"]
        pixels = (maxx - minx) * (maxy - miny) / RESOLUTION**2
        summary = marker.get("summary", {})
        valid = pixels * summary.get(REFLECTANCE.summary.key, 0.0)
        self.tiles_done += 1
        for variable in VARIABLES:
            name = variable.summary.key
            weight = pixels if variable.summary.over == PIXELS else valid
            if summary.get(name) is not None and weight > 0:
                self._sums[name] = self._sums.get(name, 0.0) + weight * summary[name]
                self._weights[name] = self._weights.get(name, 0.0) + weight

    def as_dict(self) -> dict[str, Any]:
        means = {name: round(total / self._weights[name], 6) for name, total in self._sums.items()}
        summary = {
            "tiles_planned": self.tiles_planned,
            "tiles_done": self.tiles_done,
            "tiles_failed": self.tiles_failed,
            **means,
        }
        return {**summary, **verdict(summary)}


@dataclass(frozen=True)
class ProductFacts:
    """What the end of a run and the STAC files say about a product; the run gathers them
    from its plan (see :meth:`pipeline.run.plan.Plan.product_facts`)."""

    #: The STAC id: the product's folder name.
    name: str
    grid: OutputGrid
    bands: tuple[str, ...]
    #: The first and last date of the composite, both included.
    dates: tuple[date, date]
    provenance: dict[str, Any]
    source_items: list[Scene]
    uncertainty: bool

    @property
    def start(self) -> datetime:
        return date_range(*self.dates)[0]

    @property
    def end(self) -> datetime:
        """The last instant of the last date, in whole seconds as the STAC files give it."""
        return date_range(*self.dates)[1].replace(microsecond=0)


def product_name(url: str) -> str:
    """The STAC id of the product at ``url``: its folder's name, without secrets."""
    return PurePosixPath(redact(url).rstrip("/")).stem


def write_stac(store: ProductStore, facts: ProductFacts, quality: dict[str, Any]) -> None:
    """Write ``stac/collection.json`` and ``stac/item.json`` inside the product."""
    item = product_item(facts, quality)
    collection = product_collection(facts, item)
    for name, stac_object in (("item", item), ("collection", collection)):
        doc = stac_object.to_dict(include_self_link=False, transform_hrefs=False)
        store.put_json(f"{STAC_DIR}/{name}.json", doc, indent=2)


def footprint(grid: OutputGrid) -> shapely.Polygon | shapely.MultiPolygon:
    """The product grid's outline in WGS84, densified so that its curved edges stay inside,
    and split at the antimeridian where it crosses it (RFC 7946); the cap beyond its nearest
    latitude for a grid around a pole."""
    minx, miny, maxx, maxy = grid.bounds
    outline = shapely.segmentize(box(*grid.bounds), max(maxx - minx, maxy - miny) / 16)
    to_wgs84 = Transformer.from_crs(grid.crs, 4326, always_xy=True)
    lonlat = shapely.transform(outline, lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))
    lats = shapely.get_coordinates(lonlat)[:, 1]
    for pole in (90.0, -90.0):
        if box(*grid.bounds).contains(project(shapely.Point(0.0, pole), grid.crs)):
            return box(-180, lats.min(), 180, 90) if pole > 0 else box(-180, -90, 180, lats.max())
    return split_at_antimeridian(lonlat)


def product_item(facts: ProductFacts, quality: dict[str, Any]) -> pystac.Item:
    grid, recipe = facts.grid, facts.provenance["recipe"]
    outline = footprint(grid)
    item = pystac.Item(
        id=facts.name,
        geometry=mapping(outline),
        bbox=wgs84_bbox(outline),
        datetime=None,
        start_datetime=facts.start,
        end_datetime=facts.end,
        properties={
            "title": facts.provenance["title"],
            "created": facts.provenance["created"],
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "gsd": RESOLUTION,
            f"{PREFIX}:software": facts.provenance["software"],
            f"{PREFIX}:recipe": recipe,
            f"{PREFIX}:quality": quality,
            # The verdict and the share behind it also on their own, for a catalog's filters.
            f"{PREFIX}:quality_verdict": quality["verdict"],
            f"{PREFIX}:hallucination_risk_fraction": quality.get("hallucination_risk_fraction"),
            f"{PREFIX}:source_item_ids": [i.id for i in facts.source_items],
        },
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(
        code=f"EPSG:{grid.crs.to_epsg()}",
        shape=[grid.height, grid.width],
        transform=list(grid.transform),
        bbox=list(grid.bounds),
    )
    EOExtension.add_to(item)
    RasterExtension.add_to(item)
    item.add_asset("zarr", _zarr_asset(facts))
    for name, asset in _layer_assets(facts).items():
        item.add_asset(name, asset)
    for level in range(1, level_count(grid) + 1):
        item.add_asset(f"overview_{level}", _overview_asset(grid, level))
    for source in facts.source_items:
        if source.href:
            item.add_link(
                pystac.Link("derived_from", redact(source.href), pystac.MediaType.JSON, source.id)
            )
    item.add_link(pystac.Link("collection", "./collection.json", pystac.MediaType.JSON))
    item.add_link(pystac.Link("parent", "./collection.json", pystac.MediaType.JSON))
    item.add_link(pystac.Link("root", "./collection.json", pystac.MediaType.JSON))
    item.collection_id = facts.name
    return item


def product_collection(facts: ProductFacts, item: pystac.Item) -> pystac.Collection:
    collection = pystac.Collection(
        id=facts.name,
        title=facts.provenance["title"],
        description=(
            "Sentinel-2 L2A clear-sky median composite, all bands super-resolved to 2.5 m "
            f"({facts.provenance['recipe']['rgb_model']} RGB model, "
            f"{facts.provenance['recipe']['fusion_model']} fusion), with per-pixel quality "
            "layers and overviews, in one Zarr product."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([item.bbox]),
            pystac.TemporalExtent([[facts.start, facts.end]]),
        ),
        license="other",
        providers=[
            pystac.Provider(
                "European Space Agency (Copernicus Sentinel-2)",
                roles=[pystac.ProviderRole.PRODUCER, pystac.ProviderRole.LICENSOR],
            ),
            pystac.Provider(facts.provenance["software"], roles=[pystac.ProviderRole.PROCESSOR]),
        ],
        summaries=pystac.Summaries(
            {
                "constellation": ["sentinel-2"],
                "instruments": ["msi"],
                "gsd": [RESOLUTION],
                "proj:code": [f"EPSG:{facts.grid.crs.to_epsg()}"],
                "eo:bands": [b.to_dict() for b in _eo_bands(facts.bands)],
            }
        ),
        stac_extensions=[EOExtension.get_schema_uri(), ProjectionExtension.get_schema_uri()],
    )
    collection.clear_links()
    collection.add_link(pystac.Link("root", "./collection.json", pystac.MediaType.JSON))
    collection.add_link(pystac.Link("item", "./item.json", pystac.MediaType.GEOJSON, item.id))
    collection.add_asset("zarr", _zarr_asset(facts))
    return collection


def _zarr_asset(facts: ProductFacts) -> pystac.Asset:
    asset = pystac.Asset(
        "..",
        title=f"{facts.provenance['title']} (Zarr v3, consolidated metadata)",
        media_type=ZARR_MEDIA_TYPE,
        roles=["data"],
        extra_fields={
            "description": "surface reflectance as the variable 'reflectance' "
            "(band, y, x); quality layers, clear count and overviews alongside"
        },
    )
    EOExtension.ext(asset).bands = _eo_bands(facts.bands)
    RasterExtension.ext(asset).bands = [REFLECTANCE.raster_band() for _ in facts.bands]
    return asset


def _eo_bands(bands: tuple[str, ...]) -> list[EOBand]:
    return [
        EOBand.create(
            name=b,
            common_name=BANDS[b].common_name,
            center_wavelength=BANDS[b].wavelength_um,
            description=f"Sentinel-2 {b} at 2.5 m (native {BANDS[b].resolution} m)",
        )
        for b in bands
    ]


def _layer_assets(facts: ProductFacts) -> dict[str, pystac.Asset]:
    """The variables besides the reflectance (quality layers, clear count), each an array of
    the Zarr."""
    assets = {}
    for variable in stored(facts.uncertainty):
        if variable.role == DATA:  # the Zarr asset itself
            continue
        asset = pystac.Asset(
            posixpath.join("..", variable.name),
            title=variable.name,
            media_type=ZARR_MEDIA_TYPE,
            roles=[variable.role],
        )
        RasterExtension.ext(asset).bands = [variable.raster_band()] * variable.count(facts.bands)
        assets[variable.name] = asset
    return assets


def _overview_asset(grid: OutputGrid, level: int) -> pystac.Asset:
    asset = pystac.Asset(
        posixpath.join("..", level_path(level)),
        title=f"overview level {level} ({RESOLUTION * 2**level:g} m)",
        media_type=ZARR_MEDIA_TYPE,
        roles=["overview"],
    )
    proj = ProjectionExtension.ext(asset)
    proj.shape = list(level_shape(grid, level))
    proj.transform = level_transform(grid, level)
    return asset
