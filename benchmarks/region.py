"""Benchmark the region flow on the demo AOI: wall time, model share, worker memory, task count.

    python benchmarks/region.py [--workers 2] [--tile-size 480] [--json PATH]

Pipeline efficiency is the time spent inside the model function divided by the workers' total
busy time and by their wall-clock capacity (wall time × workers). Peak RSS is each worker
process's high-water mark (getrusage), which includes the interpreter and libraries.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

from distributed import get_task_stream, get_worker

from flows.region import DEMO_AOI, DEMO_DATES
from pipeline.catalog import DEMO_CATALOG
from pipeline.cluster import dask_client
from pipeline.grid import read_aoi
from pipeline.region import RegionRequest, plan_region, run_tiles
from pipeline.store import ProductStore
from pipeline.superresolve import SuperResolver

MODEL_EVENT = "benchmark-model-seconds"


@dataclasses.dataclass(frozen=True)
class TimedResolver(SuperResolver):
    """The plan's resolver, reporting the time inside each model call as a worker event.

    Dask fuses the model tasks with their neighbours, so the task stream cannot isolate them.
    """

    def block(self, bands, origin):
        started = time.perf_counter()
        out = super().block(bands, origin)
        get_worker().log_event(MODEL_EVENT, time.perf_counter() - started)
        return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tile-size", type=int, default=480)
    p.add_argument("--rgb-model", default="bicubic")
    p.add_argument("--fusion-model", default="gram-schmidt")
    p.add_argument("--json", default="benchmarks/results/region.json")
    args = p.parse_args()

    request = RegionRequest(
        aoi=read_aoi(str(DEMO_AOI)),
        start=DEMO_DATES[0],
        end=DEMO_DATES[1],
        stac=str(DEMO_CATALOG),
        tile_size=args.tile_size,
        rgb_model=args.rgb_model,
        fusion_model=args.fusion_model,
    )
    started = time.perf_counter()
    plan = plan_region(request)
    timed = TimedResolver(plan.resolver.rgb, plan.resolver.fusion)
    plan = dataclasses.replace(plan, resolver=timed)
    planned = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, dask_client(None, args.workers) as client:
        store = ProductStore.create(f"{tmp}/bench.zarr", plan.grid, request.bands, {})
        client.run(lambda: None)  # workers are up before the clock starts
        run_started = time.perf_counter()
        with get_task_stream(client) as stream:
            summary = run_tiles(plan, store, client)
        wall = time.perf_counter() - run_started
        rss = client.run(_peak_rss_mb)
        model = sum(seconds for _, seconds in client.get_events(MODEL_EVENT))
    durations: dict[str, float] = {}
    for task in stream.data:
        prefix = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        prefix = str(prefix).split("-")[0]
        busy = sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
        durations[prefix] = durations.get(prefix, 0.0) + busy
    busy_total = sum(durations.values())
    out_pixels = sum(t.height * t.width for t in plan.tiles)
    result = {
        "aoi": str(DEMO_AOI.name),
        "machine": f"{platform.machine()}, {args.workers} worker processes x 1 thread",
        "models": {"rgb": args.rgb_model, "fusion": args.fusion_model},
        "tiles": len(plan.tiles),
        "tile_size": args.tile_size,
        "failed_tiles": len(summary.failed),
        "output_pixels_per_band": out_pixels,
        "plan_seconds": round(planned - started, 3),
        "run_wall_seconds": round(wall, 3),
        "output_megapixels_per_second": round(out_pixels / wall / 1e6, 3),
        "tasks": len(stream.data),
        "task_seconds_by_prefix": {k: round(v, 3) for k, v in sorted(durations.items())},
        "model_seconds": round(model, 3),
        "model_share_of_busy_time": round(model / busy_total, 4) if busy_total else None,
        "model_share_of_worker_capacity": round(model / (wall * args.workers), 4),
        "peak_rss_mb_per_worker": {k: round(v, 1) for k, v in rss.items()},
    }
    print(json.dumps(result, indent=2))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
