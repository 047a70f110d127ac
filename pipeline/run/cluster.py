"""Dask clusters: a local one (CPU worker processes, or one dask-cuda worker per GPU), or an
existing scheduler by address.

GPU workers advertise a ``GPU`` resource of 1; the tiles' model tasks ask for half of it (see
:data:`GPU_RESOURCE`), so that they run on GPU workers only, two at a time: one tile's models
on the GPU while the tile before writes, and the worker's other threads (and plain CPU
workers, if the cluster has some) load and composite the next tiles.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster
from distributed.comm.addressing import parse_address
from distributed.comm.registry import get_backend
from distributed.utils import silence_logging_cmgr

from pipeline.errors import ClusterError, reason
from pipeline.network import timeout

#: The worker resource that the tiles' model tasks claim (a share each, see
#: :data:`pipeline.run.dispatch.MODEL_SHARE`); ``dask cuda worker`` needs ``--resources GPU=1``
#: to offer it.
GPU_RESOURCE = "GPU"

#: The scheduler address the Dask Kubernetes operator gives a DaskJob's runner.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Seconds to reach a scheduler, or to reach it again after losing it: it is on the cluster's
#: own network, a few milliseconds away when it is there at all.
SCHEDULER_TIMEOUT = 10.0

_QUIET = {
    "host": "127.0.0.1",
    "dashboard_address": None,
    # failed tiles are reported by the flow, once each: not also by the worker that ran them
    # (its "Compute Failed" block with the task and the traceback is logged as an ERROR)
    "silence_logs": logging.CRITICAL,
    # the scheduler serves HTTP even without a dashboard: any free port, not 8787
    "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
}


def scheduler_address(text: str) -> str:
    """``text`` when it is an address Dask can connect to (``tcp://host:port``, ``tls://``,
    ``ws://``...), else ValueError: a malformed one is refused before any work is planned."""
    try:
        scheme, location = parse_address(text)
        get_backend(scheme).get_address_host(location)
    except ValueError as err:
        raise ValueError(f"not a Dask scheduler address: {text!r} ({reason(err)})") from None
    return text


def cuda_devices() -> int:
    """How many CUDA devices this process sees (0 without a CUDA build of torch)."""
    import torch  # only asked when a learned model may use a GPU: torch is slow to import

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def runs_on_cuda(device: str | None) -> bool:
    """Whether a model asked to run on ``device`` runs on CUDA, as this process can tell:
    the device named, else this machine's (that of a local cluster's workers). A runner
    without a GPU that drives a GPU cluster is told so with ``--device cuda``."""
    return device.startswith("cuda") if device else cuda_devices() > 0


@contextmanager
def dask_client(
    scheduler: str | None = None, workers: int | None = None, gpus: int = 0
) -> Iterator[Client]:
    """A client of ``scheduler`` or, without one, of a local cluster.

    With ``gpus`` > 0 the local cluster is a dask-cuda one: one worker per GPU (``workers``
    of them at most), each pinned to its device and offering one ``GPU`` resource, with a
    thread per CPU core it can share for the stages around the models. Otherwise it has
    ``workers`` (default 2) processes of one thread each: the model stages use whole cores
    through NumPy, and a process per core keeps the GIL out of the way.

    The client waits :data:`SCHEDULER_TIMEOUT` seconds for the scheduler (or
    :func:`pipeline.network.timeout`'s, if shorter), when connecting and when reconnecting
    after losing it (then its futures are cancelled, see
    :func:`pipeline.run.dispatch.run_tiles`); Dask's own log lines stay quiet, the caller
    reports what went wrong.
    """
    if scheduler:
        with silence_logging_cmgr(logging.CRITICAL):
            try:
                client = Client(scheduler, timeout=min(SCHEDULER_TIMEOUT, timeout()))
            except (OSError, TimeoutError) as err:
                raise ClusterError(f"cannot reach Dask scheduler {scheduler}: {err}") from None
            with client:
                yield client
        return
    with _local_cluster(workers, gpus) as cluster, Client(cluster) as client:
        yield client


#: Dask's statistical profiler samples every worker thread's stack every 10 ms and keeps the
#: last 1000 one-second profiles for the dashboard. A local cluster serves no dashboard, and
#: the kept profiles grow a worker's memory with every second of work (180 tiles in 2.3
#: minutes: +20 MB with them, +6 MB without), so its workers run without it.
_NO_PROFILER = {"distributed.worker.profile.enabled": False}


def _local_cluster(workers: int | None, gpus: int) -> LocalCluster:
    # a nanny hands the configuration it was created under to its worker process
    with dask.config.set(_NO_PROFILER), _workers_ignore_ctrl_c():
        return _new_local_cluster(workers, gpus)


@contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Ctrl-C in a terminal interrupts every process of its group: the worker processes
    started meanwhile ignore it (an ignored signal stays ignored in a new process), so that
    only the runner stops, closes the cluster and says so, rather than each worker printing
    its own traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may change how a signal is handled
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _new_local_cluster(workers: int | None, gpus: int) -> LocalCluster:
    if gpus <= 0:
        return LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True, **_QUIET)
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ClusterError(
            "a GPU is present but dask-cuda is not installed: pip install 's2sr[gpu]', "
            "or run on the CPU with --device cpu"
        ) from None
    count = min(gpus, workers) if workers else gpus
    return LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=list(range(count)),
        threads_per_worker=max(2, (os.cpu_count() or 2) // count),
        resources={GPU_RESOURCE: 1},
        **_QUIET,
    )


def has_gpu_workers(client: Client) -> bool:
    """Whether any worker of the cluster offers the ``GPU`` resource."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return any(GPU_RESOURCE in (w.get("resources") or {}) for w in workers.values())
