"""Failures mid-run, on the S3 server and multi-process Dask clusters: the flow killed, a worker
killed, a scene that cannot be read. Re-runs complete only the missing tiles, and the product is
bit-identical to one made without interruption."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.product.schema import stored
from tests.products import DEMO_TILES, DEMO_TILING

ROOT = Path(__file__).resolve().parents[1]
#: Every variable of a product without the RGB spread, as the schema defines them.
VARIABLES = tuple(v.name for v in stored(uncertainty=False))

pytestmark = pytest.mark.slow


def flow(*args: str) -> list[str]:
    # the demo in 6 tiles (the session's demo product's, whose pixels are the uninterrupted
    # run's): enough to stop a run part-way, few enough overview shards to be quick
    return [sys.executable, "-m", "flows.region", *DEMO_TILING, *args]


def markers(s3_server, out: str) -> dict[str, str]:
    """Finished tiles and the time each was written."""
    fs = s3_server.filesystem()
    fs.invalidate_cache()
    found = fs.glob(out.removeprefix("s3://") + "/tiles/*.json")
    return {Path(m).stem: json.loads(fs.cat_file(m))["written"] for m in found}


def wait_for_tiles(s3_server, out: str, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while len(markers(s3_server, out)) < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no tile finished in time"
        time.sleep(0.2)


def pixels(out: str) -> dict[str, np.ndarray]:
    with xr.open_zarr(out) as ds:
        found = {name: ds[name].values for name in VARIABLES}
    with xr.open_zarr(out, group="overviews/1") as level:
        found["overview reflectance"] = level["reflectance"].values
    return found


def assert_same_pixels(out: str, reference: dict[str, np.ndarray]) -> None:
    for name, values in pixels(out).items():
        np.testing.assert_array_equal(values, reference[name], err_msg=name)


@pytest.fixture(scope="module")
def faults_bucket(s3_server) -> str:
    s3_server.create_bucket("faults")
    return "s3://faults"


@pytest.fixture(scope="module")
def reference(demo_product) -> dict[str, np.ndarray]:
    """The pixels of an uninterrupted run: the session's demo product, made with these tiles
    (on local disk: where they are stored changes none)."""
    assert len(list((demo_product / "tiles").glob("*.json"))) == DEMO_TILES
    return pixels(str(demo_product))


def test_a_killed_flow_resumes_with_the_missing_tiles_only(
    s3_server, faults_bucket, dask_client, reference
):
    out = f"{faults_bucket}/killed-flow.zarr"
    # its own session, so that the kill takes the local cluster's processes too, as the end
    # of a pod would
    running = subprocess.Popen(
        flow("--out", out),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_tiles(s3_server, out, 2, running)
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait()
    before = markers(s3_server, out)
    assert 2 <= len(before) < DEMO_TILES

    # the re-run on the session's cluster: resuming does not depend on which cluster runs it
    rerun = subprocess.run(
        flow("--out", out, "--scheduler", dask_client.scheduler.address),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr
    written = DEMO_TILES - len(before)
    assert f"{written} tiles written, {len(before)} already finished" in rerun.stdout
    after = markers(s3_server, out)
    assert {key: after[key] for key in before} == before  # finished tiles were not redone
    assert_same_pixels(out, reference)


def test_a_killed_worker_costs_nothing(s3_server, faults_bucket, dask_client, reference):
    out = f"{faults_bucket}/killed-worker.zarr"
    running = subprocess.Popen(
        flow("--out", out, "--scheduler", dask_client.scheduler.address),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_tiles(s3_server, out, 1, running)
    victim = sorted(dask_client.scheduler_info()["workers"])[0]
    pid = dask_client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)  # its nanny starts a new worker process
    stdout, stderr = running.communicate(timeout=600)
    assert running.returncode == 0, stderr
    assert "0 failed" in stdout
    assert_same_pixels(out, reference)


def test_an_unreadable_scene_is_retried_then_reported(dask_client, tmp_path):
    catalog = tmp_path / "demo"
    shutil.copytree(ROOT / "examples" / "demo", catalog)
    next(catalog.rglob("S2_L2A_DEMO_20230120_N0511/B04.tif")).unlink()
    out = tmp_path / "product.zarr"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.region",
            "--stac",
            str(catalog / "catalog.json"),
            "--start",
            "2023-01-01",
            "--end",
            "2023-01-31",
            "--out",
            str(out),
            "--scheduler",  # the retries are the runner's: any cluster shows them
            dask_client.scheduler.address,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1  # not everything finished
    assert "0 tiles written, 0 already finished, 1 failed" in done.stdout
    # read errors may pass: retried after 2 s, then 4 s, then recorded with their reason
    assert "retrying in 2 s" in done.stderr and "retrying in 4 s" in done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("  failed tile 0_0:")]
    assert len(failed) == 1 and "RasterioIOError" in failed[0] and "B04.tif" in failed[0]
    with xr.open_zarr(out) as ds:
        assert "0_0" in ds.attrs["tiles_failed"]
