"""Benchmark how the region flow scales with the AOI: worker memory, pipeline efficiency, halo
redundancy and scheduler tasks at 1x, 4x and 16x the demo AOI, and the speed-up from one
worker to two.

    python -m benchmarks.scale [--sizes 1 4 16] [--tile-size 480] [--scaling-size 4] [--json PATH]

Real data covers only the demo scene, so the larger AOIs lie over synthetic granules: a static
STAC catalog, written to a temporary folder, of one item per demo date whose rasters hold k x k
copies of that date's real demo pixels, each copy one scene extent east or south of the last
(rounded down to the 60 m lattice, so neighbouring copies overlap by a pixel or two). Like real
Sentinel-2 granules (110 km a side), one granule per date covers the whole AOI, so every tile
reads the same number of scenes at every size and only the AOI grows. Each size runs on a fresh
local cluster, so each worker's peak RSS (a process high-water mark) belongs to that size alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import platform
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pystac
import rasterio
import shapely
from distributed import Client, get_worker
from distributed.scheduler import Scheduler
from pyproj import CRS, Transformer
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from benchmarks._common import peak_rss_mb, rss_mb, sampling, write_json
from benchmarks._measure import TimedResolver, measure
from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import project, read_aoi
from pipeline.geo.bands import BANDS, SCALE
from pipeline.geo.grid import LATTICE
from pipeline.inputs.load import asset_key, scene_epsg
from pipeline.run.cluster import dask_client
from pipeline.run.dispatch import TASKS_PER_TILE
from pipeline.run.plan import Plan, RegionRequest, plan_region

DATA = "synthetic granules: the real demo scene repeated k x k times per date"
PIXELS_EVENT = "benchmark-model-input-pixels"


@dataclasses.dataclass(frozen=True)
class CountingResolver(TimedResolver):
    """The timed resolver, also reporting each model call's input pixels (block plus the halo
    it was handed), so that the block-level halo is counted as the models really see it."""

    def block(self, bands: np.ndarray, origin: tuple[int, int], *args: int | None) -> np.ndarray:
        get_worker().log_event(PIXELS_EVENT, int(bands.shape[1] * bands.shape[2]))
        return super().block(bands, origin, *args)


def scene_step(items: list[pystac.Item]) -> tuple[float, float]:
    """How far (east, south) in metres one copy sits from the next: the 10 m scene extent,
    rounded down to the 60 m lattice so the copies' pixels stay on the lattice of the grid."""
    asset = items[0].assets[asset_key(items[0], BANDS["B02"].aliases)].extra_fields
    rows, cols = asset["proj:shape"]
    res = asset["proj:transform"][0]
    return (cols * res // LATTICE * LATTICE, rows * res // LATTICE * LATTICE)


def _moved(geometry: BaseGeometry, epsg: int, dx: float, dy: float) -> BaseGeometry:
    """A WGS84 geometry moved by (dx, dy) metres in the scene's CRS."""
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    to_wgs84 = Transformer.from_crs(epsg, 4326, always_xy=True)
    utm = shapely.transform(geometry, to_utm.transform, interleaved=False)
    utm = shapely.transform(utm, lambda xy: xy + (dx, dy))
    return shapely.transform(utm, to_wgs84.transform, interleaved=False)


def demo_items() -> list[pystac.Item]:
    return list(pystac.read_file(str(DEMO_CATALOG)).get_items(recursive=True))


def mosaic_catalog(demo: list[pystac.Item], k: int, folder: Path) -> Path:
    """Write a static catalog of one granule per demo date, each holding k x k copies of that
    date's demo scene; return its catalog.json."""
    epsg = scene_epsg(demo)
    step_x, step_y = scene_step(demo)
    moves = [(col * step_x, -row * step_y) for row in range(k) for col in range(k)]
    catalog = pystac.Catalog(f"s2sr-scale-{k}x{k}", f"{DATA}, {k} x {k} copies")
    sources: dict[str, Path] = {}
    for item in demo:
        granule = item.clone()
        granule.id = f"{item.id}_{k}x{k}"
        granule.clear_links()
        granule.collection_id = None
        footprint = shapely.union_all(
            [_moved(shape(item.geometry), epsg, dx, dy) for dx, dy in moves]
        ).convex_hull  # closes seams
        granule.geometry = mapping(footprint)
        granule.bbox = list(footprint.bounds)
        sources[granule.id] = Path(item.get_self_href()).parent
        catalog.add_item(granule)
    catalog.normalize_hrefs(str(folder))
    for granule in catalog.get_items():
        target = Path(granule.get_self_href()).parent
        target.mkdir(parents=True)
        for asset in granule.assets.values():
            name = Path(asset.href).name
            asset.extra_fields["proj:shape"] = list(
                stitch(sources[granule.id] / name, target / name, k, (step_x, step_y))
            )
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"


def stitch(source: Path, target: Path, k: int, step: tuple[float, float]) -> tuple[int, int]:
    """Write ``source``'s pixels k x k times into one raster, each copy ``step`` metres east and
    south of the last; where copies overlap, a copy's valid pixels win over nodata. Returns the
    raster's (rows, columns)."""
    with rasterio.open(source) as raster:
        profile, pixels, res = raster.profile, raster.read(1), raster.res[0]
    step_cols, step_rows = round(step[0] / res), round(step[1] / res)
    rows, cols = pixels.shape
    nodata = profile["nodata"] or 0
    out = np.full(((k - 1) * step_rows + rows, (k - 1) * step_cols + cols), nodata, pixels.dtype)
    for row in range(k):
        for col in range(k):
            top, left = row * step_rows, col * step_cols
            window = out[top : top + rows, left : left + cols]
            np.copyto(window, pixels, where=pixels != nodata)
    profile.update(height=out.shape[0], width=out.shape[1])
    with rasterio.open(target, "w", **profile) as raster:
        raster.write(out, 1)
    return out.shape


def mosaic_aoi(k: int, epsg: int, step: tuple[float, float]) -> BaseGeometry:
    """The demo AOI's bounding box in the scene's CRS, stretched over k x k copies (WGS84)."""
    minx, miny, maxx, maxy = project(read_aoi(str(DEMO_AOI)), CRS.from_epsg(epsg)).bounds
    stretched = box(minx, miny - (k - 1) * step[1], maxx + (k - 1) * step[0], maxy)
    to_wgs84 = Transformer.from_crs(epsg, 4326, always_xy=True)
    return shapely.transform(
        shapely.segmentize(stretched, 100.0), to_wgs84.transform, interleaved=False
    )


def _held_tasks(dask_scheduler: Scheduler) -> int:
    return len(dask_scheduler.tasks)


def scheduler_tasks(client: Client, every: float = 0.25) -> AbstractContextManager[list[float]]:
    """Samples of how many tasks the scheduler holds, taken while the block runs."""
    return sampling(lambda: [client.run_on_scheduler(_held_tasks)], every)


def worker_rss(client: Client, every: float = 1.0) -> AbstractContextManager[list[float]]:
    """Samples of the largest worker's resident memory now, taken while the block runs: where
    the peak comes from (a plateau reached early, or growth with every tile)."""
    return sampling(lambda: [max(client.run(rss_mb).values())], every)


def by_quarter(samples: list[float]) -> list[float | None]:
    """The highest sample in each quarter of the run (samples are evenly spaced in time)."""
    quarters = np.array_split(np.asarray(samples, dtype=float), 4)
    return [round(float(q.max()), 1) if q.size else None for q in quarters]


def items_per_tile(plan: Plan) -> list[int]:
    """Scenes each tile reads: a tile's memory grows with them, not with the AOI."""
    return [len(plan.scenes_over(t)) for t in plan.tiles]


def halo_pixels(plan: Plan) -> tuple[int, int]:
    """(10 m pixels inside the tiles, 10 m pixels the tiles load with their halo)."""
    inside = sum(int(t.height // SCALE * (t.width // SCALE)) for t in plan.tiles)
    loaded = 0
    for tile in plan.tiles:
        height, width = plan.grid.input_box(tile, plan.resolver.halo).shape
        loaded += height * width
    return inside, loaded


def run_size(plan: Plan, workers: int, tmp: str) -> dict:
    """One run of ``plan`` on a fresh local cluster of ``workers`` processes."""
    with dask_client(None, workers) as client:
        # workers up and the pipeline imported before the clock starts
        client.run(importlib.import_module, "pipeline.run.tile")
        with scheduler_tasks(client) as held, worker_rss(client) as resident:
            run = measure(plan, client, workers, 0, f"{tmp}/run-{workers}.zarr")
        rss = client.run(peak_rss_mb)
        model_pixels = sum(n for _, n in client.get_events(PIXELS_EVENT))
    return {
        "workers": workers,
        **run,
        "tasks_per_tile_run": round(run["tasks"] / len(plan.tiles), 1),
        "scheduler_tasks_peak_sampled": max(held, default=None),
        "peak_rss_mb_per_worker": sorted(round(v, 1) for v in rss.values()),
        "rss_mb_largest_worker_by_quarter_of_run": by_quarter(resident),
        "model_input_pixels_10m": model_pixels,
    }


def measure_size(size: int, args: argparse.Namespace, tmp: str) -> tuple[Plan, dict]:
    """Plan the AOI over a mosaic of ``size`` copies, count its scenes per tile and halo, and
    run it on ``args.workers`` workers."""
    k = math.isqrt(size)
    folder = Path(tmp) / f"mosaic-{k}x{k}"
    demo = demo_items()
    stac = mosaic_catalog(demo, k, folder)
    epsg = scene_epsg(demo)
    request = RegionRequest(
        aoi=mosaic_aoi(k, epsg, scene_step(demo)),
        start=DEMO_DATES[0],
        end=DEMO_DATES[1],
        stac=str(stac),
        crs=CRS.from_epsg(epsg),
        tile_size=args.tile_size,
    )
    started = time.perf_counter()
    plan = plan_region(request)
    plan = dataclasses.replace(plan, resolver=CountingResolver.of(plan.resolver))
    planned = time.perf_counter()
    scenes = items_per_tile(plan)
    picked = time.perf_counter()
    run = run_size(plan, args.workers, str(folder))
    inside, loaded = halo_pixels(plan)
    cap = max(2, 2 * args.workers)  # run_tiles keeps 2 tiles per worker in flight
    result = {
        "size": size,
        "copies": f"{k} x {k}",
        "items": len(plan.items),
        "tiles": len(plan.tiles),
        "output_megapixels_per_band": round(sum(t.height * t.width for t in plan.tiles) / 1e6, 3),
        "plan_seconds": round(planned - started, 3),
        "scene_pick_seconds": round(picked - planned, 3),
        "items_per_tile": {
            "min": min(scenes),
            "max": max(scenes),
            "mean": round(sum(scenes) / len(scenes), 2),
        },
        "tiles_in_flight_cap": cap,
        "scheduler_tasks_bound": cap * TASKS_PER_TILE,
        "halo_px_10m": plan.resolver.halo,
        "input_pixels_10m_inside_tiles": inside,
        "input_pixels_10m_loaded": loaded,
        "load_redundancy": round(loaded / inside, 3),
        "model_redundancy": round(run["model_input_pixels_10m"] / inside, 3),
        "block_halo_redundancy": round(run["model_input_pixels_10m"] / loaded, 3),
        "run": run,
    }
    return plan, result


def summary_line(r: dict) -> str:
    run = r["run"]
    rss = " / ".join(f"{v:.0f}" for v in run["peak_rss_mb_per_worker"])
    quarters = " ".join(
        f"{v:.0f}" if v else "-" for v in run["rss_mb_largest_worker_by_quarter_of_run"]
    )
    return (
        f"{r['size']:>3}x  {r['tiles']:>4} tiles  wall {run['run_wall_seconds']:7.1f} s  "
        f"RSS/worker {rss} MB (by quarter {quarters})  "
        f"model/wall {run['model_share_of_worker_capacity']:.2f}  "
        f"model/busy {run['model_share_of_busy_time']:.2f}  "
        f"halo load {r['load_redundancy']:.2f} model {r['model_redundancy']:.2f}  "
        f"tasks/tile {run['tasks_per_tile_run']}  "
        f"items/tile {r['items_per_tile']['max']}  "
        f"bound {r['scheduler_tasks_bound']}  sampled {run['scheduler_tasks_peak_sampled']}"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1, 4, 16],
        help="AOI sizes in demo scenes, each a square number",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tile-size", type=int, default=480)
    p.add_argument(
        "--scaling-size",
        type=int,
        default=4,
        help="AOI size (one of --sizes) also run on 1 worker; 0 to skip",
    )
    p.add_argument("--json", default="benchmarks/results/scale.json")
    args = p.parse_args()
    if any(math.isqrt(s) ** 2 != s for s in args.sizes):
        p.error("--sizes must be square numbers (1, 4, 9, 16...)")
    if args.scaling_size and args.scaling_size not in args.sizes:
        p.error("--scaling-size must be one of --sizes")
    return args


def speedup(plan: Plan, result: dict, workers: int, tmp: str) -> dict:
    """The same AOI on one worker, against its run on ``workers``."""
    size = result["size"]
    one = run_size(plan, 1, f"{tmp}/mosaic-{math.isqrt(size)}x{math.isqrt(size)}")
    many = result["run"]["run_wall_seconds"]
    scaling = {
        "size": size,
        "wall_seconds": {"1": one["run_wall_seconds"], str(workers): many},
        "speedup": round(one["run_wall_seconds"] / many, 3),
        "run_1_worker": one,
    }
    print(
        f"{size:>3}x  1 -> {workers} workers: {one['run_wall_seconds']:.1f} s"
        f" -> {many:.1f} s, speed-up {scaling['speedup']:.2f}",
        flush=True,
    )
    return scaling


def main() -> None:
    args = parse_args()
    results, scaling = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            plan, result = measure_size(size, args, tmp)
            results.append(result)
            print(summary_line(result), flush=True)
            if size == args.scaling_size and args.workers != 1:
                scaling = speedup(plan, result, args.workers, tmp)
    report = {
        "data": DATA,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "models": {"rgb": "bicubic", "fusion": "gram-schmidt"},
        "tile_size": args.tile_size,
        "workers": args.workers,
        "sizes": results,
        "scaling": scaling,
    }
    write_json(args.json, report)


if __name__ == "__main__":
    main()
