"""Benchmark the region flow on the demo AOI: wall time, model share, worker memory, task count;
on GPUs also throughput in km² per GPU-hour and GPU utilisation.

    python -m benchmarks.region [--workers 2] [--tile-size 480] [--json PATH]
    python -m benchmarks.region --gpus 1 --rgb-model difffusr --fusion-model difffusr-fusion

Pipeline efficiency is the time spent inside the model function divided by the workers' total
busy time and by their wall-clock capacity (wall time × workers). Peak RSS is each worker
process's high-water mark (getrusage), which includes the interpreter and libraries. The flow
runs ``--repeat`` times into fresh products on the same cluster: the first run includes loading
the models onto the workers, later ones show the steady state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from typing import Any

from distributed import Client

from benchmarks._common import demo_request, peak_rss_mb, settled_rss_mb, write_json
from benchmarks._measure import TimedResolver, measure
from pipeline.demo import DEMO_AOI
from pipeline.geo.bands import RESOLUTION, SCALE
from pipeline.geo.grid import lattice_origin
from pipeline.models.diffusion.cost import tile_windows
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.run.cluster import dask_client
from pipeline.run.plan import Plan, plan_region


def windows_by_layout(plan: Plan) -> int | None:
    """The windows the plan's layout evaluates for its tiles were they full of data
    (:func:`tile_windows`), for the diffusion RGB model; None for another."""
    rgb = plan.resolver.rgb
    if not isinstance(rgb, DiffFuSRRGB):
        return None
    halo = plan.resolver.halo
    inset = rgb.inset(plan.resolver.rgb_margin(halo))
    block = plan.request.block_size
    return sum(
        tile_windows(
            (tile.height // SCALE, tile.width // SCALE),
            halo,
            block,
            rgb.window,
            rgb.overlap,
            lattice_origin(plan.grid.input_box(tile, 0)),
            inset,
        )
        for tile in plan.tiles
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, help="worker processes (default: 2, or one per GPU)")
    p.add_argument("--gpus", type=int, default=0, help="GPUs of a local dask-cuda cluster")
    p.add_argument("--tile-size", type=int, default=480)
    p.add_argument(
        "--block-size",
        type=int,
        default=240,
        help="model block edge, 10 m px; 0: each tile's region is one block",
    )
    p.add_argument("--rgb-model", default="bicubic")
    p.add_argument("--fusion-model", default="gram-schmidt")
    p.add_argument("--steps", type=int, help="DDIM steps of difffusr (default: its own, 20)")
    p.add_argument("--batch", type=int, help="windows per difffusr network call")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="difffusr autocast (default: auto, bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs on the same cluster")
    p.add_argument("--json", default="benchmarks/results/region.json")
    return p.parse_args()


def repeated_runs(
    plan: Plan, client: Client, workers: int, args: argparse.Namespace, tmp: str
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``args.repeat`` runs into fresh products, each with the workers' memory after it, and
    the workers' peak RSS after the last."""
    runs = []
    for i in range(args.repeat):
        run = measure(plan, client, workers, args.gpus, f"{tmp}/bench-{i}.zarr")
        # after each run: whether the same work, repeated, still raises the high-water mark
        rss = client.run(peak_rss_mb)
        settled = client.run(settled_rss_mb)
        runs.append(
            {
                **run,
                "peak_rss_mb_per_worker_so_far": sorted(round(v, 1) for v in rss.values()),
                "rss_mb_per_worker_after_run": sorted(round(v, 1) for v in settled.values()),
            }
        )
    return runs, rss


def main() -> None:
    args = parse_args()
    rgb_options = {k: v for k in ("steps", "batch", "precision") if (v := getattr(args, k))}
    request = demo_request(
        tile_size=args.tile_size,
        block_size=args.block_size or None,
        rgb_model=args.rgb_model,
        rgb_options=rgb_options,
        fusion_model=args.fusion_model,
    )
    started = time.perf_counter()
    plan = plan_region(request)
    timed = TimedResolver.of(plan.resolver)
    plan = dataclasses.replace(plan, resolver=timed)
    planned = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, dask_client(None, args.workers, args.gpus) as client:
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        client.run(lambda: None)  # workers are up before the clock starts
        runs, rss = repeated_runs(plan, client, workers, args, tmp)
    out_pixels = sum(t.height * t.width for t in plan.tiles)
    kind = f"{args.gpus} GPU worker(s)" if args.gpus else "worker processes x 1 thread"
    result = {
        "aoi": str(DEMO_AOI.name),
        "machine": f"{platform.machine()}, {workers} {kind}",
        "models": {"rgb": args.rgb_model, "fusion": args.fusion_model, "rgb_options": rgb_options},
        "tiles": len(plan.tiles),
        "tile_size": args.tile_size,
        "block_size": args.block_size,
        "output_pixels_per_band": out_pixels,
        "output_km2": round(out_pixels * RESOLUTION**2 / 1e6, 3),
        "rgb_windows_of_the_layout": windows_by_layout(plan),
        "plan_seconds": round(planned - started, 3),
        "runs": runs,
        "peak_rss_mb_per_worker": {k: round(v, 1) for k, v in rss.items()},
    }
    print(json.dumps(result, indent=2))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
