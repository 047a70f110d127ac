"""The plan of a region run: the catalog's scenes, the grid, its tiles and the recipe.

Planning reads no pixel and never needs a GPU: the models are built here on the CPU, to check
their options and learn their halo, and each worker builds its own copy on the device asked
for (see :meth:`pipeline.models.superresolve.SuperResolver.on`). The scenes are kept reduced (see
:class:`pipeline.inputs.load.Scene`) under a spatial index, so that picking a tile's scenes out of
a continent's tens of thousands takes microseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import cached_property

import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

import pipeline
from pipeline.errors import ModelError, reason
from pipeline.geo.aoi import project, wgs84_box
from pipeline.geo.bands import REFLECTANCE_BANDS
from pipeline.geo.crs import check_crs, default_crs
from pipeline.geo.grid import OutputGrid, Tile, plan_grid
from pipeline.inputs.catalog import Query, no_scenes, search
from pipeline.inputs.load import Scene, lattice_anchor
from pipeline.inputs.signing import AUTO, PLANETARY_COMPUTER, Signer, signer_for
from pipeline.models import get_fusion_model, get_rgb_model
from pipeline.models.superresolve import SuperResolver
from pipeline.product.schema import bytes_per_pixel
from pipeline.product.stac import ProductFacts, product_name
from pipeline.product.store import RECIPE
from pipeline.quality.layers import risk_rule
from pipeline.redact import redact
from pipeline.run.cluster import runs_on_cuda

#: Model options that do not change pixel values (the weights count by their sha256, which
#: the recipe records whether or not it was pinned).
LOCAL_ONLY = frozenset({"weights", "sha256", "device", "batch", "compile"})
#: Where the runner builds the models that it only checks: it may have no GPU.
PLANNING_DEVICE = "cpu"


@dataclass(frozen=True)
class RegionRequest:
    """What the user asked for, already parsed."""

    aoi: BaseGeometry
    start: date
    end: date
    stac: str
    collection: str | None = None
    max_cloud: float = 100.0
    crs: CRS | None = None
    tile_size: int = 1920
    bands: tuple[str, ...] = REFLECTANCE_BANDS
    rgb_model: str = "bicubic"
    #: Options of the RGB model (weights, steps, seed, samples...); they are part of the recipe.
    rgb_options: dict = field(default_factory=dict)
    fusion_model: str = "gram-schmidt"
    #: Options of the fusion model (weights, consistent...); they are part of the recipe.
    fusion_options: dict = field(default_factory=dict)
    mask_snow: bool = True
    block_size: int = 240
    #: How asset hrefs are signed: one of :data:`pipeline.inputs.signing.SIGN_CHOICES`.
    sign: str = AUTO

    @property
    def query(self) -> Query:
        return Query(self.aoi, self.start, self.end, self.collection, self.max_cloud)

    @property
    def devices(self) -> tuple[str | None, str | None]:
        """The torch devices asked for the RGB and fusion models (None: each worker's own)."""
        return self.rgb_options.get("device"), self.fusion_options.get("device")


@dataclass(frozen=True)
class Plan:
    request: RegionRequest
    items: list[Scene]
    cloud_filter: str
    grid: OutputGrid
    tiles: list[Tile]
    #: The models as the runner checked them (on the CPU); workers move them to
    #: ``request.devices``.
    resolver: SuperResolver
    #: Whether only a sample of the items was fetched (a dry run) ...
    estimate: bool = False
    #: ... and then how many match in all, if the catalog says.
    matched: int | None = None
    #: Items left out for a value that cannot be read: id → the one-line reason.
    skipped: dict[str, str] = field(default_factory=dict)
    #: What the user should know before the run: the grid's CRS meant for less than the AOI.
    warnings: tuple[str, ...] = ()
    #: What signs the asset hrefs on the workers, when the catalog needs it.
    signer: Signer | None = None

    @property
    def output_bytes(self) -> int:
        """Uncompressed size of the tiles' variables: reflectance, clear count, quality layers
        and, when the RGB model draws several samples, their spread."""
        pixels = sum(t.height * t.width for t in self.tiles)
        return pixels * bytes_per_pixel(self.request.bands, self.resolver.uncertainty)

    def scenes_over(self, tile: Tile) -> list[Scene]:
        """The scenes whose footprint touches the tile and the models' halo around it, in the
        plan's order (by date, then id)."""
        return [self.items[i] for i in self.scene_indices_over(tile)]

    def scene_indices_over(self, tile: Tile) -> np.ndarray:
        """The indices in ``items`` of :meth:`scenes_over`, in ascending order."""
        bounds = self.grid.input_bounds(tile, self.resolver.halo)
        footprint = wgs84_box(self._to_wgs84.transform_bounds(*bounds, densify_pts=21))
        return np.sort(self._index.query(footprint, predicate="intersects"))

    @cached_property
    def _index(self) -> shapely.STRtree:
        """An R-tree over the scenes' footprints (a scene without one is never picked)."""
        return shapely.STRtree([s.footprint for s in self.items])

    @cached_property
    def _to_wgs84(self) -> Transformer:
        return Transformer.from_crs(self.grid.crs, 4326, always_xy=True)

    def describe(self) -> str:
        g = self.grid
        return "\n".join(
            [
                self._items_line(),
                f"output grid:   {g.crs.to_string()}, {g.width} x {g.height} px at 2.5 m, "
                f"origin ({g.x0}, {g.y0})",
                f"tiles:         {len(self.tiles)} of {g.tile_size} px intersect the AOI",
                f"bands:         {' '.join(self.request.bands)}",
                f"models:        rgb={self.resolver.rgb.name} "
                f"fusion={self.resolver.fusion.name} (halo {self.resolver.halo} px at 10 m)",
                f"output size:   {_human_bytes(self.output_bytes)} uncompressed",
            ]
        )

    def _items_line(self) -> str:
        if not self.estimate:
            return f"items found:   {len(self.items)} (cloud filter: {self.cloud_filter})"
        count = "unknown (the API does not count)" if self.matched is None else self.matched
        return (
            f"items matched: {count} (estimate: the catalog's count, items not "
            f"fetched; cloud filter: {self.cloud_filter})"
        )

    def provenance(self) -> dict:
        """Root attributes that say how the product was made."""
        r = self.request
        recipe = {
            "rgb_model": self.resolver.rgb.name,
            "rgb_model_sha256": self.resolver.rgb.weights_sha256,
            "rgb_model_options": _recorded(_with_consistency(r.rgb_options, self.resolver.rgb)),
            "fusion_model": self.resolver.fusion.name,
            "fusion_model_sha256": self.resolver.fusion.weights_sha256,
            **_options_entry(
                "fusion_model_options", _with_consistency(r.fusion_options, self.resolver.fusion)
            ),
            "stac": redact(r.stac),  # a product is shared: never with the catalog's token
            "collection": r.collection,
            "date_range": [r.start.isoformat(), r.end.isoformat()],
            "max_cloud_cover": r.max_cloud,
            "scl_snow_masked": r.mask_snow,
            "hallucination_risk_rule": risk_rule(),
        }
        return {
            "title": "Sentinel-2 L2A super-resolved to 2.5 m",
            "software": f"s2sr {pipeline.__version__}",
            **recipe,
            RECIPE: recipe,
            **({"asset_signing": PLANETARY_COMPUTER} if self.signer else {}),
            "stac_item_ids": [i.id for i in self.items],
            "aoi": json.dumps(shapely.geometry.mapping(r.aoi)),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def product_facts(self, url: str) -> ProductFacts:
        """What the end of the run writes about the product at ``url`` (see
        :func:`pipeline.product.finish.finish_product`)."""
        r = self.request
        return ProductFacts(
            name=product_name(url),
            grid=self.grid,
            bands=r.bands,
            dates=(r.start, r.end),
            provenance=self.provenance(),
            source_items=self.items,
            uncertainty=self.resolver.uncertainty,
        )


def _with_consistency(options: dict, model: object) -> dict:
    """A model's options as given, and its consistency correction whether given or not (it
    changes pixels, so a product records it)."""
    consistent = getattr(model, "consistent", None)
    return options if consistent is None else {**options, "consistent": consistent}


def _recorded(options: dict) -> dict:
    """The options that decide pixel values."""
    return {k: v for k, v in options.items() if k not in LOCAL_ONLY}


def _options_entry(key: str, options: dict) -> dict:
    """``{key: recorded options}``, or nothing for a model without options, so the recipes of
    products made with the baselines stay what they were before fusion options existed."""
    recorded = _recorded(options)
    return {key: recorded} if recorded else {}


def plan_region(request: RegionRequest, estimate: bool = False) -> Plan:
    """Search the catalog and lay out the grid and tiles; reads no pixel.

    With ``estimate`` (a dry run) only one item is fetched, for the grid's lattice, and the
    catalog's count of matches stands for the rest, so a continent plans in seconds. Either
    way a search that matches nothing is a NoScenesError.
    """
    signer = signer_for(request.stac, request.collection, request.sign)
    resolver, request = _checked_models(request)
    crs = request.crs or default_crs(request.aoi)
    warning = check_crs(request.aoi, crs, given=request.crs is not None)
    found = search(
        request.stac,
        request.aoi,
        request.start,
        request.end,
        request.collection,
        request.max_cloud,
        limit=1 if estimate else None,
        scenes=True,
    )
    if not found.items and not found.matched:
        raise no_scenes(request.query, found.skipped)
    grid = plan_grid(
        request.aoi, crs, request.tile_size, lattice_anchor(found.items, crs.to_epsg())
    )
    tiles = grid.tiles_in(project(request.aoi, crs))
    return Plan(
        request,
        found.items,
        found.cloud_filter,
        grid,
        tiles,
        resolver,
        estimate,
        found.matched,
        found.skipped,
        (warning,) if warning else (),
        signer,
    )


def _checked_models(request: RegionRequest) -> tuple[SuperResolver, RegionRequest]:
    """Both models built from their options on the runner's CPU (a device asked for is the
    workers' to use), or a ModelError naming what is wrong with them; and the request with
    the RGB options that the workers' device resolves by default (on CUDA: precision and
    window overlap) made explicit, for the workers to keep and the recipe to record."""
    rgb, fusion = (_planning(options) for options in (request.rgb_options, request.fusion_options))
    try:
        rgb_model = get_rgb_model(request.rgb_model, **rgb)
        resolved = {}
        if hasattr(rgb_model, "cuda_defaults") and runs_on_cuda(request.devices[0]):
            resolved = rgb_model.cuda_defaults(request.rgb_options)
            rgb_model = replace(rgb_model, **resolved)
        resolver = SuperResolver(
            rgb_model,
            get_fusion_model(request.fusion_model, **fusion),
            judged=True,
            bands=request.bands,
        )
    except (ValueError, TypeError) as err:
        raise ModelError(f"cannot build the models: {reason(err)}") from None
    return resolver, replace(request, rgb_options={**request.rgb_options, **resolved})


def _planning(options: dict) -> dict:
    return {**options, "device": PLANNING_DEVICE} if "device" in options else options


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"
