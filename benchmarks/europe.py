"""Benchmark a continental run: the whole plan of Europe against a STAC API of tens of
thousands of items, then a sample of tiles through the real runner with a stand-in model.

    python -m benchmarks.europe [--dates 35] [--sample-tiles 1000] [--sample-tile-size 240]
                                [--model-ms 300] [--json PATH]

Everything runs on servers the benchmark starts on 127.0.0.1 (those of the test suite): a
pgstac STAC API and an S3 server. The catalog is synthetic and labelled so: one item per
Sentinel-2 MGRS granule over ``examples/europe.geojson`` and date (``--dates`` dates in June to
August 2024), each granule the 109.8 km square of a real MGRS tile in its own UTM zone (so
granules overlap as real ones do, within a zone and across zones), with Earth Search's
``sentinel-2-c1-l2a`` asset layout. Their assets all point to one set of full-size granule
COGs on the S3 server (10980² px at 10 m, 5490² at 20 m, 1830² at 60 m, 1024-px internal tiles,
deflate, overviews) that lies where one granule lies; the tile sample is drawn inside that
granule, away from its neighbours, so every tile it reads holds pixels. GDAL's cache of remote
files is switched off for them, so that the dates, which share the files, do not share reads.

Figures: planning all of Europe (wall time, peak RSS of a runner process doing only that,
scenes per tile); then, on one local cluster (see :func:`run_stages`), the runner's and the
scheduler's cost per tile at full speed, the tile sample (sustained tiles per second,
scheduler tasks per tile, COG bytes fetched per output byte, i.e. the compressed blocks the
tiles' windows touch, and input megapixels per second per core against a plain windowed
rasterio read of the same windows in one thread), the stand-in's busy time over the wall
time when its time per tile exceeds a tile's CPU work, and the CPU time of full-size tiles.
From these: the orchestration floor of all of Europe, the most GPUs the dispatch keeps fed
and the CPU cores each GPU needs, at a given model time per tile.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from distributed import Client, LocalCluster, get_task_stream, get_worker
from pyproj import Transformer
from rasterio.windows import from_bounds
from shapely.geometry import box, mapping

from benchmarks._common import write_json
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import BANDS, REFLECTANCE_BANDS
from pipeline.geo.grid import Tile
from pipeline.geo.resample import upsample_nearest
from pipeline.inputs.load import RUN_ASSETS, Scene
from pipeline.models.superresolve import SuperResolver
from pipeline.product.store import ProductStore
from pipeline.run.cluster import GPU_RESOURCE
from pipeline.run.dispatch import ScenePayloads, run_tiles
from pipeline.run.plan import Plan, RegionRequest, plan_region
from tests.servers import PgstacServer, S3Server

ROOT = Path(__file__).resolve().parents[1]
EUROPE = ROOT / "examples" / "europe.geojson"
COLLECTION = "sentinel-2-c1-l2a-synthetic"
BUCKET = "europe-bench"
DATA = "synthetic: real MGRS granule footprints over Europe, made-up pixels shared by all items"
START, END = date(2024, 6, 1), date(2024, 8, 31)
GRANULE_M = 109_800.0
#: Earth Search's asset key of each band, and the scene classification's.
ASSET_KEYS = {b: BANDS[b].aliases[1] for b in REFLECTANCE_BANDS} | {"SCL": "scl"}
#: The granule whose files exist: MGRS 32UNU, near Ulm (UTM 32N, at its centre).
SAMPLE_GRANULE = (32, 499_980.0, 5_400_000.0)
STANDIN_EVENT = "benchmark-standin"
#: Paper-model time per 1920-px tile on one GPU (seconds) at which the GPUs kept fed are
#: reported, as a range.
MODEL_SECONDS = (0.25, 0.5, 1.0)


# -- the synthetic catalog -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Granule:
    zone: int
    ulx: float
    uly: float
    code: str
    footprint: shapely.Geometry  # WGS84

    @property
    def epsg(self) -> int:
        return 32600 + self.zone


def mgrs_code(zone: int, ulx: float, uly: float, lat: float) -> str:
    """The MGRS name of the granule: zone, latitude band, and the 100 km square whose
    south-west corner is 20 m east of its own (the granule reaches 9.8 km past it)."""
    band = "CDEFGHJKLMNPQRSTUVWXX"[int((lat + 80) // 8)]
    column = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")[(zone - 1) % 3][int((ulx + 20) // 100_000) - 1]
    row = "ABCDEFGHJKLMNPQRSTUV"[(int(uly // 100_000) - 1 + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone}{band}{column}{row}"


def granules(aoi: shapely.Geometry) -> list[Granule]:
    """The MGRS granules over ``aoi``: in each UTM zone, the 109.8 km squares on the 100 km
    grid whose centre lies in the zone, so they reach into their neighbours as real ones do."""
    minx, miny, maxx, maxy = aoi.bounds
    shapely.prepare(aoi)
    found = []
    for zone in range(int((minx + 180) // 6) + 1, int((maxx + 180) // 6) + 2):
        west = -180 + 6 * (zone - 1)
        to_wgs84 = Transformer.from_crs(32600 + zone, 4326, always_xy=True)
        for uly in range(3_800_000, 8_100_001, 100_000):
            for ulx in range(100_000 - 20, 900_000, 100_000):
                square = box(ulx, uly - GRANULE_M, ulx + GRANULE_M, uly)
                lon, lat = to_wgs84.transform(*square.centroid.coords[0])
                if not (west <= lon < west + 6 and miny - 1 <= lat <= maxy + 1):
                    continue
                ring = np.asarray(square.segmentize(GRANULE_M / 8).exterior.coords)
                footprint = shapely.Polygon(np.column_stack(to_wgs84.transform(*ring.T)))
                if aoi.intersects(footprint):
                    code = mgrs_code(zone, ulx, uly, lat)
                    found.append(Granule(zone, float(ulx), float(uly), code, footprint))
    return found


def acquisitions(dates: int) -> list[datetime]:
    days = (END - START).days + 1
    first = datetime.combine(START, datetime.min.time(), UTC) + timedelta(hours=10, minutes=30)
    return [first + timedelta(days=i * days / dates) for i in range(dates)]


def asset(href: str, res: int, ulx: float, uly: float, band: str | None) -> dict:
    side = round(GRANULE_M / res)
    doc = {
        "href": href,
        "type": "image/tiff; application=geotiff; profile=cloud-optimized",
        "roles": ["data"] if band is None else ["data", "reflectance"],
        "proj:shape": [side, side],
        "proj:transform": [res, 0, ulx, 0, -res, uly, 0, 0, 1],
        "raster:bands": [
            {
                "nodata": 0,
                "data_type": "uint8" if band is None else "uint16",
                "spatial_resolution": res,
            }
        ],
    }
    if band is not None:
        doc["title"] = f"{ASSET_KEYS[band]} ({band}) - {res}m"
        doc["eo:bands"] = [
            {
                "name": ASSET_KEYS[band],
                "common_name": BANDS[band].common_name,
                "center_wavelength": BANDS[band].wavelength_um,
            }
        ]
        doc["raster:bands"][0] |= {"scale": 0.0001, "offset": -0.1}
    else:
        doc["title"] = "Scene classification map (SCL)"
    return doc


def item(granule: Granule, when: datetime, number: int, hrefs: dict[str, str]) -> dict:
    rng = np.random.default_rng(number)
    assets = {
        ASSET_KEYS[b]: asset(hrefs[b], BANDS[b].resolution, granule.ulx, granule.uly, b)
        for b in REFLECTANCE_BANDS
    }
    assets["scl"] = asset(hrefs["SCL"], 20, granule.ulx, granule.uly, None)
    day = when.strftime("%Y%m%d")
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
            "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
        ],
        "id": f"S2{'AB'[number % 2]}_{granule.code}_{day}_0_L2A",
        "collection": COLLECTION,
        "bbox": list(granule.footprint.bounds),
        "geometry": mapping(granule.footprint),
        "properties": {
            "datetime": when.isoformat().replace("+00:00", "Z"),
            "platform": f"sentinel-2{'ab'[number % 2]}",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": round(float(rng.uniform(0, 100)), 2),
            "proj:epsg": granule.epsg,
            "mgrs:utm_zone": granule.zone,
            "mgrs:latitude_band": granule.code[2],
            "mgrs:grid_square": granule.code[3:],
            "grid:code": f"MGRS-{granule.code}",
            "s2:processing_baseline": "05.10",
            "s2:product_type": "S2MSI2A",
            "s2sr:synthetic": DATA,
        },
        "assets": assets,
        "links": [],
    }


def collection() -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": COLLECTION,
        "description": f"Sentinel-2 L2A items for a benchmark, {DATA}",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [[f"{START}T00:00:00Z", f"{END}T23:59:59Z"]]},
        },
        "links": [],
    }


def load_catalog(
    pgstac: PgstacServer, found: list[Granule], dates: int, hrefs: dict[str, str]
) -> int:
    """Load one item per granule and date, a batch at a time; return how many."""
    pgstac.load(collection(), [])
    count = 0
    times = acquisitions(dates)
    for start in range(0, len(found), 100):
        batch = [
            item(g, when + timedelta(minutes=g.zone), count + i * dates + d, hrefs)
            for i, g in enumerate(found[start : start + 100])
            for d, when in enumerate(times)
        ]
        pgstac.load(collection(), batch)
        count += len(batch)
    return count


# -- the granule's files ---------------------------------------------------------------------


def write_granule(folder: Path, epsg: int, ulx: float, uly: float) -> dict[str, Path]:
    """One granule's 12 bands and SCL as COGs like the archive's (made-up smooth land with
    texture, DN with the BOA offset of baseline 05.10; SCL mostly vegetation with cloud)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    rng = np.random.default_rng(0)
    for key in RUN_ASSETS:
        res = 20 if key == "SCL" else BANDS[key].resolution
        path = folder / f"{ASSET_KEYS[key].upper()}.tif"
        paths[key] = path
        if path.exists():
            continue
        side = round(GRANULE_M / res)
        y = np.linspace(0, 6 * np.pi, side, dtype=np.float32)
        if key == "SCL":
            cloud = (np.sin(y)[:, None] * np.cos(1.3 * y)[None, :]) > 0.6
            values = np.where(cloud, np.uint8(9), np.uint8(4))
        else:
            field = 0.5 + 0.25 * np.sin(y)[:, None] + 0.25 * np.cos(0.7 * y)[None, :]
            texture = rng.integers(0, 200, (256, 256), dtype=np.uint16)
            values = (1000 + 400 + 2500 * field).astype(np.uint16)
            values += np.tile(texture, (side // 256 + 1, side // 256 + 1))[:side, :side]
        profile = {
            "driver": "GTiff",
            "width": side,
            "height": side,
            "count": 1,
            "dtype": values.dtype,
            "crs": f"EPSG:{epsg}",
            "nodata": 0,
            "transform": rasterio.Affine(res, 0, ulx, 0, -res, uly),
        }
        plain = folder / f"{path.stem}.plain.tif"
        with rasterio.open(plain, "w", **profile) as dst:
            dst.write(values, 1)
        rasterio.shutil.copy(
            plain,
            path,
            driver="COG",
            BLOCKSIZE=1024,
            COMPRESS="DEFLATE",
            OVERVIEWS="AUTO",
            NUM_THREADS="ALL_CPUS",
        )
        plain.unlink()
    return paths


# -- planning Europe in a runner process of its own ------------------------------------------


def peak_rss_mb() -> int:
    """This process's peak resident memory (VmHWM: unlike getrusage's, not inherited from the
    parent that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


def plan_europe(url: str, queue: multiprocessing.Queue) -> None:
    """Plan all of Europe, pick every tile's scenes; report times and the peak RSS."""
    request = RegionRequest(read_aoi(str(EUROPE)), START, END, url, COLLECTION)
    started, cpu = time.perf_counter(), time.process_time()
    plan = plan_region(request)
    planned, cpu = time.perf_counter(), time.process_time() - cpu
    counts = np.array([len(plan.scenes_over(t)) for t in plan.tiles])
    picked = time.perf_counter()
    payload = ScenePayloads(plan)
    sent = [len(payload(t)) for t in plan.tiles[::10]]
    pickled = time.perf_counter()
    queue.put(
        {
            "items": len(plan.items),
            "tiles": len(plan.tiles),
            "plan_seconds": round(planned - started, 1),
            # the runner's own share: the rest is the STAC API's, on the same cores here
            "plan_runner_cpu_seconds": round(cpu, 1),
            "scene_pick_seconds_all_tiles": round(picked - planned, 1),
            "scene_pick_ms_per_tile": round((picked - planned) / len(plan.tiles) * 1e3, 4),
            # what submit_tile does per tile: pick the scenes again and pickle them (each
            # scene once, then from the run's cache)
            "scene_pick_and_pickle_ms_per_tile": round((pickled - picked) / len(sent) * 1e3, 4),
            "scene_bytes_per_tile_mean": round(float(np.mean(sent))),
            "runner_peak_rss_mb": peak_rss_mb(),
            "items_per_tile": {
                "mean": round(float(counts.mean()), 1),
                "p50": int(np.median(counts)),
                "p99": int(np.percentile(counts, 99)),
                "max": int(counts.max()),
            },
        }
    )


# -- the sample through the runner -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StandIn(SuperResolver):
    """A model of fixed cost: each call holds its thread (and the task's ``GPU`` claim) for
    ``seconds`` and returns the input repeated ×4 (and zero for any layer past the bands), so
    that its own CPU use is nil."""

    seconds: float = 0.3

    def block(
        self, bands: np.ndarray, origin: tuple[int, int], fusion_block: int | None = None
    ) -> np.ndarray:
        started = time.time()
        time.sleep(self.seconds)
        up = upsample_nearest(bands, 4)
        out = np.zeros((self.out_channels, *up.shape[1:]), up.dtype)
        out[: len(up)] = up
        get_worker().log_event(STANDIN_EVENT, (started, time.time()))
        return out


def sample_aoi(tiles: int, tile_size: int) -> shapely.Geometry:
    """A square (WGS84) inside the sample granule, clear of its neighbours' overlap, holding
    about ``tiles`` tiles of ``tile_size`` px."""
    zone, ulx, uly = SAMPLE_GRANULE
    side = math.ceil(math.sqrt(tiles)) * tile_size * 2.5
    cx, cy = ulx + GRANULE_M / 2, uly - GRANULE_M / 2
    square = box(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2).segmentize(side / 8)
    to_wgs84 = Transformer.from_crs(32600 + zone, 4326, always_xy=True)
    return shapely.transform(square, lambda xy: np.column_stack(to_wgs84.transform(*xy.T)))


def windows(plan: Plan, tile_bounds: tuple[float, ...], scene: Scene) -> list[tuple]:
    """(href, window, pixels) of every asset a tile reads of a scene, at native resolution."""
    to_scene = Transformer.from_crs(plan.grid.crs, scene.epsg, always_xy=True)
    bounds = to_scene.transform_bounds(*tile_bounds, densify_pts=21)
    found = []
    for key in RUN_ASSETS:
        a = scene.stac["assets"][key]
        window = from_bounds(*bounds, transform=rasterio.Affine(*a["proj:transform"][:6]))
        window = window.round_offsets().round_lengths()
        found.append((a["href"], window, int(window.width * window.height)))
    return found


@functools.cache
def block_bytes(href: str) -> tuple[tuple[int, int], np.ndarray]:
    """A COG's block size and the compressed bytes of each of its full-resolution blocks."""
    with rasterio.open(href) as src:
        rows, cols = src.block_shapes[0]
        grid = (math.ceil(src.height / rows), math.ceil(src.width / cols))
        sizes = np.array(
            [[src.block_size(1, i, j) for j in range(grid[1])] for i in range(grid[0])]
        )
    return (rows, cols), sizes


def window_bytes(href: str, window: rasterio.windows.Window) -> int:
    """Compressed bytes of the COG blocks a window touches: what a reader of it fetches."""
    (rows, cols), sizes = block_bytes(href)
    top, left = max(int(window.row_off), 0) // rows, max(int(window.col_off), 0) // cols
    bottom = (int(window.row_off + window.height) - 1) // rows
    right = (int(window.col_off + window.width) - 1) // cols
    return int(sizes[top : bottom + 1, left : right + 1].sum())


def tile_reads(plan: Plan, tiles: list[Tile]) -> list[tuple]:
    """(href, window, pixels) of every read of ``tiles`` with the models' halo (see
    :func:`windows`)."""
    return [
        w
        for t in tiles
        for s in plan.scenes_over(t)
        for w in windows(plan, plan.grid.input_bounds(t, plan.resolver.halo), s)
    ]


def plain_read(plan: Plan, tiles: int) -> dict:
    """The same windows as the first ``tiles`` tiles, read with plain rasterio in one thread."""
    reads = tile_reads(plan, plan.tiles[:tiles])
    started = time.perf_counter()
    for href, window, _ in reads:
        with rasterio.open(href) as src:
            src.read(1, window=window, boundless=True)
    wall = time.perf_counter() - started
    pixels = sum(p for _, _, p in reads)
    return {
        "tiles": tiles,
        "reads": len(reads),
        "wall_seconds": round(wall, 2),
        "input_mpx_per_s_per_core": round(pixels / wall / 1e6, 2),
    }


def thread_cpu_seconds() -> float:
    """CPU time of the calling thread: on the scheduler, that of its event loop."""
    return time.thread_time()


def busy(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of ``intervals``."""
    total, end = 0.0, -math.inf
    for start, stop in sorted(intervals):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def sample_plan(url: str, tiles: int, tile_size: int, days: int, seconds: float) -> Plan:
    """The plan of ``tiles`` tiles inside the sample granule over the first ``days``
    days, its models replaced by the stand-in."""
    aoi = sample_aoi(tiles, tile_size)
    last = START + timedelta(days=days - 1)
    plan = plan_region(RegionRequest(aoi, START, last, url, COLLECTION, tile_size=tile_size))
    return dataclasses.replace(
        plan,
        tiles=plan.tiles[:tiles],
        resolver=StandIn(**vars(plan.resolver), seconds=seconds),
    )


def process_cpu_seconds() -> float:
    return time.process_time()


def scheduler_idle_cpu(client: Client, seconds: float = 10.0) -> float:
    """CPU seconds per second that the scheduler's event loop spends with no work: heartbeats
    and monitors, a fixed rate that a slow stage would otherwise spread over few tiles."""
    before = client.run_on_scheduler(thread_cpu_seconds)
    time.sleep(seconds)
    return (client.run_on_scheduler(thread_cpu_seconds) - before) / seconds


def run_plan(client: Client, plan: Plan, url: str, idle_cpu: float) -> dict:
    """Every tile of ``plan`` through the runner into a new product at ``url``; the
    scheduler's CPU per tile net of ``idle_cpu`` (see :func:`scheduler_idle_cpu`)."""
    store = ProductStore.create(url, plan.grid, REFLECTANCE_BANDS, {}, overwrite=True)
    reads = tile_reads(plan, plan.tiles)
    input_px = sum(p for _, _, p in reads)
    fetched = sum(window_bytes(href, window) for href, window, _ in reads)
    events = len(client.get_events(STANDIN_EVENT))
    worker_cpu = sum(client.run(process_cpu_seconds).values())
    scheduler_cpu = client.run_on_scheduler(thread_cpu_seconds)
    started = time.perf_counter()
    with get_task_stream(client) as stream:
        summary = run_tiles(plan, store, client)
    wall = time.perf_counter() - started
    scheduler_cpu = client.run_on_scheduler(thread_cpu_seconds) - scheduler_cpu
    worker_cpu = sum(client.run(process_cpu_seconds).values()) - worker_cpu
    calls = [event for _, event in client.get_events(STANDIN_EVENT)[events:]]
    tiles = len(summary.done)
    if not tiles:
        raise RuntimeError(f"no tile of {len(plan.tiles)} finished; the workers' log says why")
    cores = os.cpu_count() or 1
    net = scheduler_cpu - idle_cpu * wall
    return {
        "tiles": tiles,
        "failed_tiles": len(summary.failed),
        "tile_size_px": plan.grid.tile_size,
        "items_per_tile_mean": round(
            sum(len(plan.scenes_over(t)) for t in plan.tiles) / len(plan.tiles), 1
        ),
        "wall_seconds": round(wall, 1),
        "sustained_tiles_per_second": round(tiles / wall, 2),
        "client_ms_per_tile": round(summary.client_seconds / tiles * 1e3, 2),
        "scheduler_cpu_ms_per_tile": round(scheduler_cpu / tiles * 1e3, 2),
        "scheduler_net_cpu_ms_per_tile": round(net / tiles * 1e3, 2),
        "client_plus_scheduler_ms_per_tile": round((summary.client_seconds + net) / tiles * 1e3, 2),
        "scheduler_tasks_per_tile": round(len(stream.data) / tiles, 2),
        "standin_seconds_per_tile": plan.resolver.seconds,
        "standin_calls_per_tile": round(len(calls) / tiles, 2),
        "standin_busy_over_wall": round(busy(calls) / wall, 3),
        "worker_cpu_seconds_per_tile": round(worker_cpu / tiles, 2),
        "cog_bytes_per_output_byte": round(fetched / plan.output_bytes, 2),
        "input_mpx_per_s_per_core": round(input_px / wall / cores / 1e6, 3),
    }


def run_stages(url: str, args: argparse.Namespace) -> dict[str, dict]:
    """On one local cluster (a worker offering the ``GPU`` resource, with a thread per core
    beside the model's), each stage with more than 0 tiles:

    * ``dispatch_floor``: the sample's tiles with no scene (nothing to read, a stand-in of no
      cost, the product on local disk): the runner and the scheduler at full speed, their
      cost per tile;
    * ``sample``: the tile sample with a stand-in of ``--model-ms``;
    * ``gpu_kept_busy``: fewer tiles with a stand-in of ``--busy-model-ms``, more than a
      tile's CPU work, to see whether the dispatch keeps the GPU busy;
    * ``full_size_tiles``: a few 1920-px tiles of every date (stand-in of no cost), for the
      CPU time of a real tile.
    """
    cores = os.cpu_count() or 1
    days = (END - START).days + 1
    size = args.sample_tile_size
    plans = {
        "dispatch_floor": (args.floor_tiles, size, args.sample_days, 0.0),
        "sample": (args.sample_tiles, size, args.sample_days, args.model_ms / 1000),
        "gpu_kept_busy": (args.busy_tiles, size, args.sample_days, args.busy_model_ms / 1000),
        "full_size_tiles": (args.full_tiles, 1920, days, 0.0),
    }
    plans = {name: sample_plan(url, *spec) for name, spec in plans.items() if spec[0]}
    if "dispatch_floor" in plans:
        plans["dispatch_floor"] = dataclasses.replace(plans["dispatch_floor"], items=[])
    results = {}
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=cores + 1,
            processes=True,
            resources={GPU_RESOURCE: 1},
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
        tempfile.TemporaryDirectory() as local,
    ):
        client.run(lambda: __import__("pipeline.run.tile"))
        idle_cpu = scheduler_idle_cpu(client)
        results["scheduler_idle_cpu_ms_per_s"] = round(idle_cpu * 1e3, 1)
        for name, plan in plans.items():
            progress(f"{name}: {len(plan.tiles)} tiles of {plan.grid.tile_size} px")
            where = (
                f"{local}/{name}.zarr" if name == "dispatch_floor" else f"s3://{BUCKET}/{name}.zarr"
            )
            results[name] = run_plan(client, plan, where, idle_cpu)
            progress(f"{name}: {results[name]}")
    for name, tiles in (("sample", args.baseline_tiles), ("full_size_tiles", 1)):
        if name in plans:
            results[name]["plain_rasterio"] = plain_read(plans[name], tiles)
    return results


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dates", type=int, default=35, help="acquisitions per granule")
    p.add_argument("--sample-tiles", type=int, default=1000)
    p.add_argument("--sample-tile-size", type=int, default=240)
    p.add_argument(
        "--sample-days",
        type=int,
        default=2,
        help="days of the catalog the sample reads (scenes per tile)",
    )
    p.add_argument("--model-ms", type=float, default=200, help="stand-in time per tile")
    p.add_argument("--busy-tiles", type=int, default=60)
    p.add_argument(
        "--floor-tiles",
        type=int,
        default=1000,
        help="tiles of the dispatch-floor stage (0 skips a stage)",
    )
    p.add_argument(
        "--busy-model-ms",
        type=float,
        default=3000,
        help="stand-in time per tile of the GPU-busy run",
    )
    p.add_argument(
        "--full-tiles",
        type=int,
        default=2,
        help="full-size tiles of every date, for the CPU time of a real tile",
    )
    p.add_argument(
        "--baseline-tiles",
        type=int,
        default=20,
        help="tiles whose windows the plain rasterio read reads",
    )
    p.add_argument(
        "--workdir",
        default=str(Path(tempfile.gettempdir()) / "s2sr-europe-bench"),
        help="where the granule's COGs are made (and kept for the next run)",
    )
    p.add_argument("--json", default="benchmarks/results/europe.json")
    return p.parse_args()


def catalog_and_stages(
    args: argparse.Namespace, found: list[Granule]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict]]:
    """Make the granule's COGs, serve them with a catalog of every granule and date, plan
    Europe in a process of its own and run the stages: the catalog's facts, the planning's
    and the stages'."""
    zone, ulx, uly = SAMPLE_GRANULE
    started = time.perf_counter()
    files = write_granule(Path(args.workdir) / "granule", 32600 + zone, ulx, uly)
    made = time.perf_counter() - started
    with S3Server() as s3, PgstacServer() as pgstac:
        os.environ.update(s3.env())
        os.environ["CPL_VSIL_CURL_NON_CACHED"] = f"/vsis3/{BUCKET}/"
        progress(f"granule COGs made in {made:.0f} s; uploading them")
        s3.upload_dir(files["B02"].parent, f"{BUCKET}/granule")
        hrefs = {k: f"s3://{BUCKET}/granule/{p.name}" for k, p in files.items()}
        started = time.perf_counter()
        items = load_catalog(pgstac, found, args.dates, hrefs)
        loaded = time.perf_counter() - started
        progress(f"{items} items of {len(found)} granules loaded in {loaded:.0f} s; planning")
        queue = multiprocessing.get_context("spawn").Queue()
        runner = multiprocessing.get_context("spawn").Process(
            target=plan_europe, args=(pgstac.url, queue)
        )
        runner.start()
        planning = queue.get()
        runner.join()
        progress(f"planned: {planning}")
        stages = run_stages(pgstac.url, args)
    catalog = {
        "granules": len(found),
        "dates": args.dates,
        "items": items,
        "utm_zones": sorted({g.zone for g in found}),
        "load_seconds": round(loaded, 1),
        "cog_seconds": round(made, 1),
    }
    return catalog, planning, stages


def europe_figures(planning: dict[str, Any], stages: dict[str, dict]) -> dict[str, Any]:
    """What the samples say about all of Europe: the orchestration floor, and how many GPUs
    the runner and the CPUs keep fed."""
    floor = stages.get("dispatch_floor", {})
    # the floor's tiles carry no scene: add what picking and pickling a European tile's
    # scenes costs the runner
    overhead = (
        floor.get("client_plus_scheduler_ms_per_tile", math.nan)
        + planning["scene_pick_and_pickle_ms_per_tile"]
    ) / 1e3
    cpu = stages.get("full_size_tiles", {}).get("worker_cpu_seconds_per_tile", math.nan)
    return {
        "tiles": planning["tiles"],
        "client_plus_scheduler_ms_per_tile": round(overhead * 1e3, 2),
        "orchestration_floor_hours": round(planning["tiles"] * overhead / 3600, 3),
        "gpus_kept_fed_by_model_seconds_per_tile": {
            str(t): round(t / overhead) for t in MODEL_SECONDS
        },
        "cpu_cores_per_gpu_by_model_seconds_per_tile": {
            str(t): round(cpu / t, 1) for t in MODEL_SECONDS
        },
    }


def main() -> None:
    args = parse_args()
    found = granules(read_aoi(str(EUROPE)))
    catalog, planning, stages = catalog_and_stages(args, found)
    result = {
        "benchmark": "europe",
        "data": DATA,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "catalog": catalog,
        "planning": planning,
        "note": f"sample tiles of {args.sample_tile_size} px and {args.sample_days} days of "
        "scenes, so that the samples run in minutes on this machine; the runner's and the "
        "scheduler's work per tile depends on neither",
        **stages,
        "europe": europe_figures(planning, stages),
    }
    print(json.dumps(result, indent=2))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
