"""Benchmark what a process keeps from one tile to the next: the demo AOI's tiles run again
and again in one process (Dask's synchronous scheduler, no cluster), resident memory measured
after each round.

    python -m benchmarks.retention [--rounds 8] [--tile-size 480] [--json PATH]

A worker's peak RSS is a high-water mark: the more tiles it processes, the more chances for
an unlucky overlap of allocations to raise it, even when nothing is kept. This separates the
two: if the resident memory after each round (after a garbage collection, and again after
glibc's ``malloc_trim`` returns free heap to the system) stays level, the pipeline keeps
nothing per tile; Python allocations that survive from round 2 to the last are listed by
source line (tracemalloc).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.product.store import ProductStore
from pipeline.run.dispatch import tile_job
from pipeline.run.plan import RegionRequest, plan_region
from pipeline.run.tile import complete_tile, prepare_tile


def _trim_heap() -> bool:
    """Give free heap back to the system where the C library can (glibc); say whether it did."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--tile-size", type=int, default=480)
    p.add_argument("--json", default="benchmarks/results/retention.json")
    args = p.parse_args()

    request = RegionRequest(
        aoi=read_aoi(str(DEMO_AOI)),
        start=DEMO_DATES[0],
        end=DEMO_DATES[1],
        stac=str(DEMO_CATALOG),
        tile_size=args.tile_size,
    )
    plan = plan_region(request)
    process = psutil.Process()
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            started = time.perf_counter()
            store = ProductStore.create(f"{tmp}/round-{i}.zarr", plan.grid, request.bands, {})
            job = tile_job(plan, store)
            for tile in plan.tiles:
                complete_tile(job, tile, prepare_tile(job, tile, plan.scenes_over(tile)))
            gc.collect()
            collected = process.memory_info().rss / 2**20
            trimmed = process.memory_info().rss / 2**20 if _trim_heap() else None
            rounds.append(
                {
                    "seconds": round(time.perf_counter() - started, 2),
                    "rss_mb": round(collected, 1),
                    "rss_mb_after_trim": trimmed and round(trimmed, 1),
                }
            )
            print(
                f"round {i + 1:>2}: {len(plan.tiles)} tiles, RSS {collected:.0f} MB"
                + (f", {trimmed:.0f} MB after malloc_trim" if trimmed else ""),
                flush=True,
            )
            if i == 1:  # from here on the caches and pools of the first rounds are warm
                tracemalloc.start()
                baseline = tracemalloc.take_snapshot()
        grown = (
            tracemalloc.take_snapshot().compare_to(baseline, "lineno")[:10]
            if args.rounds > 2
            else []
        )
    kept = [{"where": str(s.traceback), "kib": round(s.size_diff / 1024, 1)} for s in grown]
    for line in kept:
        print(f"  kept since round 2: {line['kib']:8.1f} KiB  {line['where']}")
    result = {
        "aoi": DEMO_AOI.name,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "tiles_per_round": len(plan.tiles),
        "tile_size": args.tile_size,
        "rounds": rounds,
        "python_allocations_kept_since_round_2": kept,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
