"""A region run: plan (AOI → items → grid → tiles), then one Dask graph per tile, a few at a time.

Each tile's graph loads the tile plus the models' halo from the catalog, composites it, super-
resolves it block by block and ends in one task that writes the tile's shard and its completion
marker. Only a bounded number of tiles is in flight, so the scheduler's graph stays small
whatever the size of the AOI.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial

import dask.array as da
import numpy as np
import pystac
import shapely
from distributed import Client, Future, wait
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker
from pyproj import CRS, Transformer
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

import pipeline
from pipeline.bands import BANDS, REFLECTANCE_BANDS, RGB_INDEX
from pipeline.catalog import search
from pipeline.cluster import GPU_RESOURCE, has_gpu_workers
from pipeline.composite import median_composite
from pipeline.errors import ModelError, reason
from pipeline.grid import (
    INPUT_RESOLUTION,
    SCALE,
    OutputGrid,
    Tile,
    default_crs,
    plan_grid,
    project,
)
from pipeline.load import asset_key, check_assets, load_reflectance, load_scl, scene_epsg
from pipeline.models import get_fusion_model, get_rgb_model
from pipeline.quality.layers import judged, risk_rule
from pipeline.resample import upsample_nearest
from pipeline.store import QUALITY_LAYERS, RECIPE, ProductStore
from pipeline.superresolve import SuperResolver

#: Model options that do not change pixel values (the weights count by their sha256, which
#: the recipe records whether or not it was pinned).
LOCAL_ONLY = frozenset({"weights", "sha256", "device", "batch", "compile"})


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


@dataclass(frozen=True)
class Plan:
    request: RegionRequest
    items: list[pystac.Item]
    cloud_filter: str
    grid: OutputGrid
    tiles: list[Tile]
    resolver: SuperResolver
    #: Whether only a sample of the items was fetched (a dry run) ...
    estimate: bool = False
    #: ... and then how many match in all, if the catalog says.
    matched: int | None = None

    @property
    def output_bytes(self) -> int:
        """Uncompressed size of the tiles' reflectance (uint16), clear count (uint8) and
        quality layers."""
        pixels = sum(t.height * t.width for t in self.tiles)
        layers = sum(np.dtype(layer.dtype).itemsize for layer in QUALITY_LAYERS.values())
        return pixels * (2 * len(self.request.bands) + 1 + layers)

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
        return (f"items matched: {count} (estimate: the catalog's count, items not "
                f"fetched; cloud filter: {self.cloud_filter})")

    def provenance(self) -> dict:
        """Root attributes that say how the product was made."""
        r = self.request
        recipe = {
            "rgb_model": self.resolver.rgb.name,
            "rgb_model_sha256": self.resolver.rgb.weights_sha256,
            "rgb_model_options": _recorded(_with_consistency(r.rgb_options, self.resolver.rgb)),
            "fusion_model": self.resolver.fusion.name,
            "fusion_model_sha256": self.resolver.fusion.weights_sha256,
            **_options_entry("fusion_model_options",
                             _with_consistency(r.fusion_options, self.resolver.fusion)),
            "stac": r.stac,
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
            "stac_item_ids": [i.id for i in self.items],
            "aoi": json.dumps(shapely.geometry.mapping(r.aoi)),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }



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
    catalog's count of matches stands for the rest, so a continent plans in seconds.
    """
    try:
        resolver = SuperResolver(
            get_rgb_model(request.rgb_model, **request.rgb_options),
            get_fusion_model(request.fusion_model, **request.fusion_options),
            judged=True,
            bands=request.bands,
        )
    except (ValueError, TypeError) as err:
        raise ModelError(f"cannot build the models: {reason(err)}") from None
    found = search(
        request.stac,
        request.aoi,
        request.start,
        request.end,
        request.collection,
        request.max_cloud,
        limit=1 if estimate else None,
    )
    check_assets(found.items, REFLECTANCE_BANDS)
    crs = request.crs or default_crs(request.aoi)
    grid = plan_grid(request.aoi, crs, request.tile_size, _lattice_anchor(found.items, crs))
    tiles = grid.tiles_in(project(request.aoi, crs))
    return Plan(request, found.items, found.cloud_filter, grid, tiles, resolver, estimate,
                found.matched)


def _lattice_anchor(items: list[pystac.Item], crs: CRS) -> tuple[float, float]:
    """A corner of the scenes' pixel grid when they share the output CRS, so pixels nest."""
    if scene_epsg(items) != crs.to_epsg():
        return (0.0, 0.0)
    for item in items:
        key = asset_key(item, BANDS["B02"].aliases)
        transform = item.assets[key].extra_fields.get("proj:transform") if key else None
        if transform:
            return (float(transform[2]), float(transform[5]))
    return (0.0, 0.0)


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def tile_task(
    plan: Plan, store: ProductStore, tile: Tile, resources: dict[str, float] | None = None
) -> da.Array:
    """The lazy graph of one tile, ending in the write of its shard and marker; its model
    tasks claim ``resources`` on the workers."""
    grid, request, resolver = plan.grid, plan.request, plan.resolver
    halo_m = resolver.halo * INPUT_RESOLUTION
    bounds = grid.tile_bounds(tile, halo=halo_m)
    items = items_over(plan.items, bounds, grid.crs)
    epsg = grid.crs.to_epsg()
    band_index = [REFLECTANCE_BANDS.index(b) for b in request.bands]
    crop = resolver.halo * SCALE
    if items:
        region = max(round((bounds[2] - bounds[0]) / INPUT_RESOLUTION),
                     round((bounds[3] - bounds[1]) / INPUT_RESOLUTION))
        reflectance = load_reflectance(items, REFLECTANCE_BANDS, epsg, bounds, chunksize=region)
        scl = load_scl(items, epsg, bounds, chunksize=region)
        composite, count = median_composite(reflectance, scl, request.mask_snow)
        offset = (round(-bounds[3] / INPUT_RESOLUTION), round(bounds[0] / INPUT_RESOLUTION))
        high = resolver.apply(composite.data, request.block_size, offset, resources)[
            :, crop:-crop, crop:-crop
        ]
        inside = (slice(resolver.halo, -resolver.halo),) * 2
        count = count.data[inside]
        composite = composite.data[(slice(None), *inside)]
    else:
        high = da.full((resolver.out_channels, tile.height, tile.width), np.nan, np.float32)
        low = (tile.height // SCALE, tile.width // SCALE)
        count = da.zeros(low, dtype=np.uint8)
        composite = da.full((len(REFLECTANCE_BANDS), *low), np.nan, np.float32)
    bands_end = len(REFLECTANCE_BANDS) + (len(RGB_INDEX) if resolver.uncertainty else 0)
    arrays = [high[band_index], "abc", count, "de", composite, "fgh", high[bands_end:], "ijk"]
    if resolver.uncertainty:
        arrays += [high[len(REFLECTANCE_BANDS) : bands_end], "lmn"]
    # one task that receives every array whole; unlike a delayed call, it leaves the graph
    # unoptimised, so the model tasks keep their resource claims
    return da.blockwise(
        partial(_write_tile, store, grid, tile, request.bands, [i.id for i in items]), "",
        *arrays, concatenate=True, dtype=object, meta=np.empty((), object),
        name=f"write-{tile.key}",
    )


def items_over(
    items: list[pystac.Item], bounds: tuple[float, float, float, float], crs: CRS
) -> list[pystac.Item]:
    """The items whose footprint touches ``bounds`` (in ``crs``)."""
    to_wgs84 = Transformer.from_crs(crs, 4326, always_xy=True)
    footprint = box(*to_wgs84.transform_bounds(*bounds, densify_pts=21))
    return [i for i in items if i.geometry and shape(i.geometry).intersects(footprint)]


def _write_tile(
    store: ProductStore,
    grid: OutputGrid,
    tile: Tile,
    bands: tuple[str, ...],
    item_ids: list[str],
    reflectance: np.ndarray,
    count: np.ndarray,
    composite: np.ndarray,
    layers: np.ndarray,
    uncertainty: np.ndarray | None = None,
) -> dict:
    """Compute the tile's quality layers and summary, write everything, return the summary.

    ``composite`` is the tile's 12-band 10 m input without the halo, which the quality layers
    compare the result with.
    """
    valid = np.isfinite(reflectance).all(axis=0)
    consistency, angle = layers[:, ::SCALE, ::SCALE]  # judged per block at 10 m
    quality = judged(consistency, angle, composite, uncertainty)
    summary = {
        "items": item_ids,
        "valid_fraction": round(float(valid.mean()), 6),
        "mean_clear_count": round(float(count.mean()), 4),
        **quality.summary(),
    }
    if uncertainty is not None and np.isfinite(uncertainty).any():
        summary["mean_rgb_uncertainty"] = round(float(np.nanmean(uncertainty)), 6)
    store.write_tile(
        grid, tile, reflectance, upsample_nearest(count, SCALE), summary, uncertainty,
        quality.on_output_grid(),
    )
    return summary


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after what delay, a tile that failed for a passing reason is tried again.

    The delay doubles from ``first_delay`` seconds; only :data:`TRANSIENT` errors are retried,
    since a bad model option or a corrupt file fails the same way every time.
    """

    attempts: int = 3
    first_delay: float = 2.0

    def again(self, error: BaseException, attempt: int) -> bool:
        return attempt < self.attempts and _may_pass(error)

    def delay(self, attempt: int) -> float:
        return self.first_delay * 2 ** (attempt - 1)


#: Errors that may pass on a second try: reads and connections (OSError covers rasterio's
#: read errors and the network's), time-outs, and workers lost under a task.
TRANSIENT = (OSError, TimeoutError, KilledWorker, CommClosedError)


def _may_pass(error: BaseException) -> bool:
    """Whether ``error`` or one of its causes is :data:`TRANSIENT`, by type or, since stackstac
    wraps read errors in a RuntimeError that reaches the client as text, by name."""
    names = {t.__name__ for t in TRANSIENT} | {"RasterioIOError", "CPLE_HttpResponseError"}
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, TRANSIENT) or any(name in str(seen) for name in names):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def run_tiles(
    plan: Plan,
    store: ProductStore,
    client: Client,
    on_progress: Callable[[str, str | None], None] | None = None,
    retry: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[str, str, float], None] | None = None,
) -> RunSummary:
    """Compute every unfinished tile on the cluster, a bounded number at a time.

    A tile that fails for a reason that may pass (a read error, a lost worker) is submitted
    again after a growing delay; one that still fails, or fails for any other reason, is
    recorded with its reason and the run goes on. ``on_progress(tile key, error or None)``
    follows each tile that is finished with; ``on_retry(tile key, error, delay)`` each retry.
    """
    summary = RunSummary()
    finished = store.done_tiles()
    todo = deque(t for t in plan.tiles if t.key not in finished)
    summary.skipped = [t.key for t in plan.tiles if t.key in finished]
    gpu = has_gpu_workers(client)
    resources = {GPU_RESOURCE: 1} if gpu else None
    in_flight = max(2, 2 * len(client.scheduler_info(n_workers=-1).get("workers", {})))
    running: dict[Future, tuple[Tile, int]] = {}
    delayed: list[tuple[float, int, Tile, int]] = []  # (due time, order, tile, attempt)

    def submit(tile: Tile, attempt: int) -> None:
        graph = tile_task(plan, store, tile, resources)
        # fusing tasks would drop the model tasks' resource claims
        running[client.compute(graph, optimize_graph=not gpu)] = (tile, attempt)

    while todo or delayed or running:
        while len(running) < in_flight and (delayed and delayed[0][0] <= time.monotonic()):
            _, _, tile, attempt = heapq.heappop(delayed)
            submit(tile, attempt)
        while len(running) < in_flight and todo:
            submit(todo.popleft(), 1)
        wait_for = max(0.0, delayed[0][0] - time.monotonic()) if delayed else None
        if not running:
            time.sleep(wait_for or 0.0)
            continue
        try:
            done = wait(list(running), timeout=wait_for, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            continue
        for future in done:
            tile, attempt = running.pop(future)
            error = future.exception()
            message = None if error is None else f"{type(error).__name__}: {reason(error)}"
            if error is not None and retry.again(error, attempt):
                delay = retry.delay(attempt)
                heapq.heappush(delayed, (time.monotonic() + delay, attempt, tile, attempt + 1))
                if on_retry:
                    on_retry(tile.key, message, delay)
                continue
            if message is None:
                summary.done.append(tile.key)
            else:
                summary.failed[tile.key] = message
            if on_progress:
                on_progress(tile.key, message)
    return summary


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} EB"
