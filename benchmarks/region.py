"""Benchmark the region flow on the demo AOI: wall time, model share, worker memory, task count;
on GPUs also throughput in km² per GPU-hour and GPU utilisation.

    python benchmarks/region.py [--workers 2] [--tile-size 480] [--json PATH]
    python benchmarks/region.py --gpus 1 --rgb-model difffusr --fusion-model difffusr-fusion

Pipeline efficiency is the time spent inside the model function divided by the workers' total
busy time and by their wall-clock capacity (wall time × workers). Peak RSS is each worker
process's high-water mark (getrusage), which includes the interpreter and libraries. The flow
runs ``--repeat`` times into fresh products on the same cluster: the first run includes loading
the models onto the workers, later ones show the steady state.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from distributed import Client, get_task_stream, get_worker

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import RESOLUTION, RGB_INDEX, SCALE
from pipeline.geo.grid import lattice_origin
from pipeline.models.diffusion.cost import executed_over_useful, sampled_windows, tile_windows
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.superresolve import SuperResolver, model_input
from pipeline.product.store import ProductStore
from pipeline.run.cluster import dask_client
from pipeline.run.dispatch import run_tiles
from pipeline.run.plan import Plan, RegionRequest, plan_region

MODEL_EVENT = "benchmark-model-seconds"


@dataclasses.dataclass(frozen=True)
class TimedResolver(SuperResolver):
    """The plan's resolver, reporting the time inside each model call and the diffusion
    windows it evaluated as a worker event.

    A tile's model task also runs its quality layers and write, so the task stream cannot
    isolate the models.
    """

    def block(self, bands, origin, fusion_block=None, margin=0):
        started = time.time()
        out = super().block(bands, origin, fusion_block, margin)
        windows = 0
        if isinstance(self.rgb, DiffFuSRRGB):
            rgb = model_input(bands)[1][RGB_INDEX]
            needed = self.rgb.needed(rgb.shape[1:], self.rgb_margin(margin))
            windows = sampled_windows(rgb, origin, self.rgb.window, self.rgb.overlap, needed)
        get_worker().log_event(MODEL_EVENT, (get_worker().address, started, time.time(), windows))
        return out


def windows_by_layout(plan: Plan) -> int | None:
    """The windows the plan's layout evaluates for its tiles were they full of data
    (:func:`tile_windows`), for the diffusion RGB model; None for another."""
    rgb = plan.resolver.rgb
    if not isinstance(rgb, DiffFuSRRGB):
        return None
    halo = plan.resolver.halo
    inset = rgb.inset(plan.resolver.rgb_margin(halo))
    total = 0
    for tile in plan.tiles:
        origin = lattice_origin(plan.grid.input_box(tile, 0))
        shape = (tile.height // SCALE, tile.width // SCALE)
        layout = (halo, plan.request.block_size, rgb.window, rgb.overlap, origin, inset)
        total += tile_windows(shape, *layout)
    return total


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _settled_rss_mb() -> float:
    """Resident memory now, after a garbage collection: what the process keeps between runs."""
    gc.collect()
    return _rss_mb()


@contextmanager
def sampling(read: Callable[[], list[float]], every: float) -> Iterator[list[float]]:
    """What ``read()`` returns, gathered every ``every`` seconds while the block runs."""
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every):
            samples.extend(read())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


@contextmanager
def gpu_utilisation(gpus: int, every: float = 0.1) -> Iterator[list[float]]:
    """Samples of each GPU's utilisation (percent of time a kernel ran), taken by NVML while
    the block runs; empty without GPUs."""
    if not gpus:
        yield []
        return
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(gpus)]
    try:
        with sampling(
            lambda: [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles], every
        ) as samples:
            yield samples
    finally:
        pynvml.nvmlShutdown()


def most_at_once(calls: list[tuple[str, float, float]]) -> int:
    """The most model calls that ran at the same time on one worker (1 on a GPU worker)."""
    most = 0
    for worker in {w for w, _, _ in calls}:
        # a call's stop sorts before another's start at the same instant
        edges = sorted(
            edge for w, start, stop in calls if w == worker for edge in ((start, 1), (stop, -1))
        )
        running = 0
        for _, step in edges:
            running += step
            most = max(most, running)
    return most


def measure(plan: Plan, client: Client, workers: int, gpus: int, out: str) -> dict:
    """One run of every tile of ``plan`` into a new product at ``out``."""
    store = ProductStore.create(
        out, plan.grid, plan.request.bands, {}, uncertainty=plan.resolver.uncertainty
    )
    before = len(client.get_events(MODEL_EVENT))  # earlier runs' events are in the log too
    started = time.perf_counter()
    with get_task_stream(client) as stream, gpu_utilisation(gpus) as utilisation:
        summary = run_tiles(plan, store, client)
    wall = time.perf_counter() - started
    events = [event for _, event in client.get_events(MODEL_EVENT)[before:]]
    calls = [(worker, start, stop) for worker, start, stop, _ in events]
    model = sum(stop - start for _, start, stop in calls)
    windows = sum(event[3] for event in events)
    durations: dict[str, float] = {}
    for task in stream.data:
        prefix = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        prefix = str(prefix).split("-")[0]
        busy = sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
        durations[prefix] = durations.get(prefix, 0.0) + busy
    busy_total = sum(durations.values())
    out_pixels = sum(t.height * t.width for t in plan.tiles)
    km2 = out_pixels * RESOLUTION**2 / 1e6
    result = {
        "failed_tiles": len(summary.failed),
        "run_wall_seconds": round(wall, 3),
        "output_megapixels_per_second": round(out_pixels / wall / 1e6, 3),
        "tasks": len(stream.data),
        "task_seconds_by_prefix": {k: round(v, 3) for k, v in sorted(durations.items())},
        "model_seconds": round(model, 3),
        "model_share_of_busy_time": round(model / busy_total, 4) if busy_total else None,
        "model_share_of_worker_capacity": round(model / (wall * workers), 4),
        "most_model_calls_at_once_on_a_worker": most_at_once(calls),
    }
    rgb = plan.resolver.rgb
    if isinstance(rgb, DiffFuSRRGB):
        # every window costs the same: executed / useful FLOPs is a ratio of pixels
        result["rgb_windows_evaluated"] = windows
        result["rgb_executed_over_useful"] = round(
            executed_over_useful(windows, rgb.window, out_pixels), 4
        )
    if gpus:
        result["km2_per_gpu_hour"] = round(km2 / (wall / 3600 * gpus), 1)
        result["gpu_utilisation_percent_mean"] = (
            round(sum(utilisation) / len(utilisation), 1) if utilisation else None
        )
        result["gpu_utilisation_samples"] = len(utilisation)
    return result


def main() -> None:
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
    args = p.parse_args()

    rgb_options = {k: v for k in ("steps", "batch", "precision") if (v := getattr(args, k))}
    request = RegionRequest(
        aoi=read_aoi(str(DEMO_AOI)),
        start=DEMO_DATES[0],
        end=DEMO_DATES[1],
        stac=str(DEMO_CATALOG),
        tile_size=args.tile_size,
        block_size=args.block_size or None,
        rgb_model=args.rgb_model,
        rgb_options=rgb_options,
        fusion_model=args.fusion_model,
    )
    started = time.perf_counter()
    plan = plan_region(request)
    timed = TimedResolver(plan.resolver.rgb, plan.resolver.fusion)
    plan = dataclasses.replace(plan, resolver=timed)
    planned = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, dask_client(None, args.workers, args.gpus) as client:
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        client.run(lambda: None)  # workers are up before the clock starts
        runs = []
        for i in range(args.repeat):
            run = measure(plan, client, workers, args.gpus, f"{tmp}/bench-{i}.zarr")
            # after each run: whether the same work, repeated, still raises the high-water mark
            rss = client.run(_peak_rss_mb)
            settled = client.run(_settled_rss_mb)
            runs.append(
                {
                    **run,
                    "peak_rss_mb_per_worker_so_far": sorted(round(v, 1) for v in rss.values()),
                    "rss_mb_per_worker_after_run": sorted(round(v, 1) for v in settled.values()),
                }
            )
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
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
