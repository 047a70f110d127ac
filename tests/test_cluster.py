"""The flow's own local cluster (``pipeline.run.cluster.dask_client`` without a scheduler)."""

from __future__ import annotations

import time

from distributed import get_worker

from pipeline.run.cluster import dask_client


def _busy(seconds: float) -> int:
    """Keep the worker thread busy, then count the profiles the worker has kept."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))
    time.sleep(1.1)  # one more profile cycle (1 s) after the work
    return len(get_worker().profile_history)


def test_local_workers_keep_no_profiles():
    # with Dask's profiler on, every second of work adds a profile the worker keeps
    with dask_client(None, 1) as client:
        assert client.submit(_busy, 1.5).result() == 0
