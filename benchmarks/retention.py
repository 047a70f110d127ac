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
import platform
import tempfile
import time
import tracemalloc
from typing import Any

from benchmarks._common import demo_request, rss_mb, write_json
from pipeline.demo import DEMO_AOI
from pipeline.product.store import ProductStore
from pipeline.run.dispatch import tile_job
from pipeline.run.plan import Plan, plan_region
from pipeline.run.tile import complete_tile, prepare_tile


def _trim_heap() -> bool:
    """Give free heap back to the system where the C library can (glibc); say whether it did."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


def one_round(plan: Plan, out: str) -> dict[str, Any]:
    """Every tile of ``plan`` in this process into a new product, then the resident memory
    after a garbage collection and, where the C library can, after trimming its heap."""
    started = time.perf_counter()
    store = ProductStore.create(out, plan.grid, plan.request.bands, {})
    job = tile_job(plan, store)
    for tile in plan.tiles:
        complete_tile(job, tile, prepare_tile(job, tile, plan.scenes_over(tile)))
    gc.collect()
    collected = rss_mb()
    trimmed = rss_mb() if _trim_heap() else None
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "rss_mb": round(collected, 1),
        "rss_mb_after_trim": trimmed and round(trimmed, 1),
    }


def rounds_kept(plan: Plan, rounds: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The memory after each of ``rounds`` rounds, and the Python allocations that grew most
    from round 2 to the last."""
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            done.append(one_round(plan, f"{tmp}/round-{i}.zarr"))
            collected, trimmed = done[-1]["rss_mb"], done[-1]["rss_mb_after_trim"]
            print(
                f"round {i + 1:>2}: {len(plan.tiles)} tiles, RSS {collected:.0f} MB"
                + (f", {trimmed:.0f} MB after malloc_trim" if trimmed else ""),
                flush=True,
            )
            if i == 1:  # from here on the caches and pools of the first rounds are warm
                tracemalloc.start()
                baseline = tracemalloc.take_snapshot()
        grown = (
            tracemalloc.take_snapshot().compare_to(baseline, "lineno")[:10] if rounds > 2 else []
        )
    kept = [{"where": str(s.traceback), "kib": round(s.size_diff / 1024, 1)} for s in grown]
    return done, kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--tile-size", type=int, default=480)
    p.add_argument("--json", default="benchmarks/results/retention.json")
    args = p.parse_args()
    plan = plan_region(demo_request(tile_size=args.tile_size))
    rounds, kept = rounds_kept(plan, args.rounds)
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
    write_json(args.json, result)


if __name__ == "__main__":
    main()
