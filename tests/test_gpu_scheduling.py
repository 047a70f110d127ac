"""The scheduling of the model stage on GPU clusters, shown on CPU workers that offer the same
``GPU`` resource a dask-cuda worker offers (no GPU is needed to check the scheduling)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster, get_worker

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.models.superresolve import SuperResolver
from pipeline.product.store import ProductStore
from pipeline.run.cluster import GPU_RESOURCE, has_gpu_workers
from pipeline.run.dispatch import run_tiles
from pipeline.run.plan import RegionRequest, plan_region
from tests.products import SMALL_AOI, region, write

MODEL_CALL = "test-model-call"


@dataclasses.dataclass(frozen=True)
class LoggedResolver(SuperResolver):
    """Records when each model call starts and stops on its worker, to see overlaps."""

    def block(self, bands, origin, *args):
        started = time.monotonic()
        time.sleep(0.2)  # long enough for a second thread to start a call if it may
        out = super().block(bands, origin, *args)
        get_worker().log_event(MODEL_CALL, (get_worker().address, started, time.monotonic()))
        return out


def cluster(gpu: bool) -> LocalCluster:
    """One worker with two threads: two tiles' model calls can overlap unless a resource
    forbids it. The worker runs in this process (no worker process to start, no second import
    of the pipeline): the resource decides the scheduling, not where the worker runs."""
    return LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
        resources={GPU_RESOURCE: 1} if gpu else None,
    )


def run(tmp_path: Path, gpu: bool) -> tuple[Path, list[tuple[str, float, float]]]:
    request = RegionRequest(
        aoi=read_aoi(str(DEMO_AOI)),
        start=DEMO_DATES[0],
        end=DEMO_DATES[1],
        stac=str(DEMO_CATALOG),
        tile_size=480,
        bands=("B02", "B03", "B04", "B08"),  # the 10 m bands: the scheduling is the same, quicker
    )
    plan = plan_region(request)
    fields = {f.name: getattr(plan.resolver, f.name) for f in dataclasses.fields(SuperResolver)}
    plan = dataclasses.replace(plan, resolver=LoggedResolver(**fields))
    out = tmp_path / f"{'gpu' if gpu else 'cpu'}.zarr"
    with cluster(gpu) as local, Client(local) as client:
        assert has_gpu_workers(client) is gpu
        store = ProductStore.create(str(out), plan.grid, request.bands, {})
        summary = run_tiles(plan, store, client)
        assert not summary.failed and len(summary.done) == len(plan.tiles) > 2
        calls = [event for _, event in client.get_events(MODEL_CALL)]
    return out, calls


def overlaps(calls: list[tuple[str, float, float]]) -> int:
    spans = sorted((start, stop) for _, start, stop in calls)
    return sum(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


@pytest.mark.slow
def test_model_calls_claim_the_gpu_and_change_no_pixel(tmp_path):
    gpu_out, gpu_calls = run(tmp_path, gpu=True)
    cpu_out, cpu_calls = run(tmp_path, gpu=False)
    assert overlaps(gpu_calls) == 0, "two model calls ran at once on one GPU worker"
    assert overlaps(cpu_calls) > 0, "without the resource the two threads should overlap"
    with xr.open_zarr(gpu_out) as a, xr.open_zarr(cpu_out) as b:
        for name in ("reflectance", "clear_count", "consistency", "hallucination_risk"):
            np.testing.assert_array_equal(a[name].values, b[name].values)


def _cuda_cluster_available() -> bool:
    try:
        import dask_cuda  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_cluster_available(), reason="needs a CUDA device and dask-cuda")
def test_the_learned_models_on_a_local_cuda_cluster_agree_with_the_cpu(tmp_path):
    """The CLI's own dask-cuda cluster: one worker per GPU, the model tasks claiming it."""
    aoi = write(tmp_path, "small.geojson", SMALL_AOI)
    learned = (
        "--aoi",
        aoi,
        "--rgb-model",
        "difffusr",
        "--steps",
        "4",
        "--fusion-model",
        "difffusr-fusion",
    )
    gpu = region(*learned, "--out", str(tmp_path / "gpu.zarr"))
    cpu = region(*learned, "--out", str(tmp_path / "cpu.zarr"), "--device", "cpu")
    assert gpu.returncode == 0 and cpu.returncode == 0, gpu.stderr + cpu.stderr
    with xr.open_zarr(tmp_path / "gpu.zarr") as a, xr.open_zarr(tmp_path / "cpu.zarr") as b:
        # the same computation in another order of float operations
        np.testing.assert_allclose(a.reflectance.values, b.reflectance.values, atol=2e-3)
        assert np.abs(a.reflectance.values - b.reflectance.values).mean() < 1e-4
