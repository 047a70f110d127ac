"""Dask clusters: a local one with worker processes, or an existing scheduler by address."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster

from pipeline.errors import ClusterError


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2) -> Iterator[Client]:
    """A client of ``scheduler`` or, without one, of a local cluster of ``workers`` processes.

    Local workers run one thread each: the model stages use whole cores through NumPy, and a
    process per core keeps the GIL out of the way.
    """
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise ClusterError(f"cannot reach Dask scheduler {scheduler}: {err}") from None
        with client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,  # failed tiles are reported by the flow, once each
            # the scheduler serves HTTP even without a dashboard: any free port, not 8787
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
