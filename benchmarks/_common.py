"""What several benchmarks share: the demo region, timing, memory readings and writing the
result. A helper module, not a benchmark: it runs nothing of its own."""

from __future__ import annotations

import gc
import json
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psutil
import torch

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.inputs.composite import clear_sky
from pipeline.run.plan import RegionRequest, plan_region

T = TypeVar("T")


def demo_request(**options: Any) -> RegionRequest:
    """The region flow's request for the demo AOI, catalog and dates, with ``options``."""
    return RegionRequest(
        aoi=read_aoi(str(DEMO_AOI)),
        start=DEMO_DATES[0],
        end=DEMO_DATES[1],
        stac=str(DEMO_CATALOG),
        **options,
    )


def demo_composite(crop: int) -> np.ndarray:
    """The demo's 12-band clear-sky median composite at 10 m on the product's 60 m lattice,
    no-data filled with 0 as the pipeline fills it for the models; its top-left ``crop`` ×
    ``crop`` pixels when ``crop`` is not 0."""
    plan = plan_region(demo_request())
    epsg, bounds = plan.grid.crs.to_epsg(), plan.grid.bounds
    composite, _ = clear_sky(plan.items, epsg, bounds)
    image = np.asarray(composite.values, dtype=np.float32)
    if crop:
        image = image[:, :crop, :crop]
    return np.where(np.isfinite(image).all(axis=0), image, np.float32(0))


def timed(fn: Callable[[], T], repeats: int, device: torch.device) -> tuple[float, T]:
    """Median wall time of ``fn`` over ``repeats`` calls, and its last result; the device's
    queue is drained around each call, so that a GPU's time is the work's, not its launch."""
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's architecture and the instruction set PyTorch uses on it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.backends.cpu.get_cpu_capability()}"


def peak_rss_mb() -> float:
    """This process's resident memory high-water mark."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now."""
    return psutil.Process().memory_info().rss / 2**20


def settled_rss_mb() -> float:
    """Resident memory now, after a garbage collection: what the process keeps between runs."""
    gc.collect()
    return rss_mb()


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


def write_json(path: str | Path, result: Any) -> Path:
    """``result`` as indented JSON at ``path`` (folders made as needed); says where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path
