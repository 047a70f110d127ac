"""The region flow measured on a Dask cluster, for the benchmarks that run it: the time inside
the models (reported by the workers as events), the task stream, GPU utilisation. A helper
module, not a benchmark."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, get_task_stream, get_worker

from benchmarks._common import sampling
from pipeline.geo.bands import RESOLUTION, RGB_INDEX
from pipeline.models.diffusion.cost import executed_over_useful, sampled_windows
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.superresolve import SuperResolver, model_input
from pipeline.product.store import ProductStore
from pipeline.run.dispatch import run_tiles
from pipeline.run.plan import Plan

MODEL_EVENT = "benchmark-model-seconds"


@dataclasses.dataclass(frozen=True)
class TimedResolver(SuperResolver):
    """The plan's resolver, reporting the time inside each model call and the diffusion
    windows it evaluated as a worker event.

    A tile's model task also runs its quality layers and write, so the task stream cannot
    isolate the models.
    """

    @classmethod
    def of(cls, resolver: SuperResolver) -> TimedResolver:
        """``resolver`` with every setting it has, timed."""
        fields = dataclasses.fields(resolver)
        return cls(**{f.name: getattr(resolver, f.name) for f in fields})

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
        "failures": dict(list(summary.failed.items())[:3]),
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
