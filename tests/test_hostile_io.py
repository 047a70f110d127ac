"""Hostile and clumsy I/O, on the suite's real servers: assets that answer 404 or 403, a COG cut
short, a server that resets or never answers, a catalog that hangs, a missing bucket, a scheduler
that dies, Ctrl-C, a full disk, a concurrent ``--overwrite``, a product that is all no data.

Every case ends with its documented exit code and one clear line, never a traceback (from the
flow or its workers), and no secret of a URL (user-info, token, signature, access key) reaches
the product or either stream: the STAC API is given as ``http://user:password@host/?token=...``
and the assets are signed URLs on the S3 server. A read error is never no data: the tile fails,
is not marked finished, and the next run retries it.

The flow runs in this process (``flows.region.main``) on the session's Dask cluster, a failed
tile tried twice, 50 ms apart (the flow's own policy, three tries 2 s and 4 s apart, is tested
in ``test_faults.py``).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from pyproj import Transformer

from flows.region import main
from pipeline.inputs.catalog import DEMO_CATALOG
from pipeline.run import dispatch
from pipeline.run.retry import RetryPolicy
from tests.products import SMALL_AOI
from tests.servers import SilentServer

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "hostile"
USER, PASSWORD, TOKEN = "alice", "pa55w0rd-9f2c", "tok-3f9a1c7e"
#: What must never be written or printed: the STAC URL's password and token, the assets'
#: signatures and the S3 keys (the access key id is part of every signed URL).
SECRETS = (PASSWORD, TOKEN, "Signature=", "s2sr-test-key", "s2sr-test-secret")
#: The session's S3 server and the flow's own network time limit in the hanging cases.
QUICK_TIMEOUT = "1"

pytestmark = pytest.mark.slow


# -- the catalog: the demo's three scenes once per case, each case in a year of its own ---------


@dataclass(frozen=True)
class Served:
    """What the cases read: the STAC API (with user-info and a token), the S3 file system, the
    servers that hang or reset, and the year of each case's scenes."""

    stac: str
    fs: Any
    silent: SilentServer
    reset: SilentServer
    years: dict[str, int]
    missing: str  # the S3 key of the asset that answers 404 until it is uploaded

    def dates(self, case: str) -> list[str]:
        year = self.years[case]
        return ["--start", f"{year}-01-01", "--end", f"{year}-01-31"]


def _signed(fs: Any, key: str) -> str:
    return fs.sign(f"{BUCKET}/{key}", expiration=3600)


def _cloudy(scl: Path) -> bytes:
    """The SCL file with every pixel cloud (class 9, high probability)."""
    with rasterio.open(scl) as src:
        profile, shape = src.profile, src.shape
    memory = rasterio.MemoryFile()
    with memory.open(**profile) as dst:
        dst.write(np.full(shape, 9, profile["dtype"]), 1)
    return memory.read()


#: Per case: which assets of which scene are changed, and to what (given the served parts).
ASSET_CASES: dict[str, Callable[[Any, SilentServer, SilentServer, str, Path], dict]] = {
    "plain": lambda fs, silent, reset, scene, folder: {},
    "404": lambda fs, silent, reset, scene, folder: (
        {"B04": _signed(fs, f"missing/{scene}/B04.tif")} if scene.endswith("20230120_N0511") else {}
    ),
    "403": lambda fs, silent, reset, scene, folder: (
        {
            "B04": re.sub(
                r"Signature=[^&]+", "Signature=forged", _signed(fs, f"scenes/{scene}/B04.tif")
            )
        }
        if scene.endswith("20230120_N0511")
        else {}
    ),
    "cut": lambda fs, silent, reset, scene, folder: (
        {"B04": _signed(fs, f"cut/{scene}/B04.tif")} if scene.endswith("20230120_N0511") else {}
    ),
    "reset": lambda fs, silent, reset, scene, folder: (
        {"B04": f"{reset.url}/{scene}/B04.tif?sig={TOKEN}"}
        if scene.endswith("20230120_N0511")
        else {}
    ),
    "silent": lambda fs, silent, reset, scene, folder: (
        {"B04": f"{silent.url}/{scene}/B04.tif?sig={TOKEN}"}
        if scene.endswith("20230120_N0511")
        else {}
    ),
    "cloudy": lambda fs, silent, reset, scene, folder: {
        "SCL": _signed(fs, f"cloudy/{scene}/SCL.tif")
    },
}


def _api_root(url: str) -> dict:
    """The landing page of a STAC API at ``url`` that offers item search."""
    return {
        "type": "Catalog",
        "id": "hanging",
        "description": "search never answers",
        "stac_version": "1.0.0",
        "conformsTo": [
            "https://api.stacspec.org/v1.0.0/core",
            "https://api.stacspec.org/v1.0.0/item-search",
        ],
        "links": [
            {"rel": "self", "href": f"{url}/"},
            {"rel": "root", "href": f"{url}/"},
            {
                "rel": "search",
                "href": f"{url}/search",
                "method": "POST",
                "type": "application/geo+json",
            },
        ],
    }


@pytest.fixture(scope="module")
def served(s3_server, rustac_api) -> Iterator[Served]:
    """The demo's scenes on S3 behind signed URLs, and a STAC API with each case's items."""
    fs = s3_server.filesystem()
    s3_server.upload_dir(DEMO_CATALOG.parent / "sentinel-2-l2a-demo", f"{BUCKET}/scenes")
    catalog = pystac.read_file(str(DEMO_CATALOG))
    collection = next(catalog.get_children())
    scenes = list(collection.get_items())
    for item in scenes:
        folder = Path(item.assets["B04"].get_absolute_href()).parent
        data = (folder / "B04.tif").read_bytes()
        fs.pipe(f"{BUCKET}/cut/{item.id}/B04.tif", data[: len(data) // 3])
        fs.pipe(f"{BUCKET}/cloudy/{item.id}/SCL.tif", _cloudy(folder / "SCL.tif"))
    silent, reset = SilentServer().start(), SilentServer(reset=True).start()
    silent.answers["/"] = _api_root(silent.url)  # a STAC API whose search never answers
    years = {case: 2031 + i for i, case in enumerate(ASSET_CASES)}
    items = []
    for case, changed in ASSET_CASES.items():
        for item in scenes:
            doc = copy.deepcopy(item.to_dict(include_self_link=False))
            folder = Path(item.assets["B04"].get_absolute_href()).parent
            for asset in doc["assets"].values():
                name = Path(asset["href"]).name
                asset["href"] = _signed(fs, f"scenes/{item.id}/{name}")
            for key, href in changed(fs, silent, reset, item.id, folder).items():
                doc["assets"][key]["href"] = href
            doc["id"] = f"{item.id}-{case}"
            doc["properties"]["datetime"] = doc["properties"]["datetime"].replace(
                "2023", str(years[case])
            )
            doc["links"] = []
            items.append(doc)
    collection_doc = collection.to_dict(include_self_link=False)
    collection_doc["links"] = []
    collection_doc["extent"]["temporal"]["interval"] = [[None, None]]
    url = rustac_api(collection_doc, items)
    stac = url.replace("http://", f"http://{USER}:{PASSWORD}@") + f"/?token={TOKEN}"
    missing = f"{BUCKET}/missing/{scenes[1].id}/B04.tif"
    try:
        yield Served(stac, fs, silent, reset, years, missing)
    finally:
        silent.stop()
        reset.stop()


@pytest.fixture(scope="module")
def quick_retries() -> Iterator[None]:
    """A tile tried twice, 50 ms apart, instead of three times, 2 s then 4 s apart."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            dispatch, "RetryPolicy", functools.partial(RetryPolicy, attempts=2, first_delay=0.05)
        )
        yield


# -- running the flow and judging what it left ---------------------------------------------------


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def last(self) -> str:
        """The last line of stderr."""
        return self.err.strip().splitlines()[-1]


def run(capfd, *argv: str) -> Ran:
    """``python -m flows.region ARGV`` in this process (and the workers' output with it)."""
    gc.collect()  # what earlier tests left to collect says so now, not within the run
    capfd.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    out, err = capfd.readouterr()
    return Ran(code, out, err)


def check_clean(ran: Ran, product: Path | None = None) -> None:
    """No traceback, no Dask failure dump, no secret in either stream or any byte of the
    product."""
    both = ran.out + ran.err
    for banned in ("Traceback", "Compute Failed", "KeyboardInterrupt"):
        assert banned not in both, both
    for secret in SECRETS:
        assert secret not in both, f"{secret!r} printed:\n{both}"
    if product is not None and product.exists():
        for path in product.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for secret in SECRETS:
                    assert secret.encode() not in data, f"{secret!r} written in {path}"


def tree_digest(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def aoi(tmp_path: Path) -> str:
    path = tmp_path / "small.geojson"
    path.write_text(SMALL_AOI)
    return str(path)


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input: the arguments (given the served parts, the scheduler, a folder),
    the environment, the exit code, a pattern that a line of stderr matches, and what else
    must hold of the product (None: it must not exist)."""

    name: str
    argv: Callable[[Served, str, Path], list[str]]
    code: int
    line: str
    env: dict[str, str] = field(default_factory=dict)
    product: Callable[[Path, Served], None] | None = None


def _tile_failed(out: Path, served: Served) -> None:
    """The tile is recorded failed, not marked finished, and its reason has no secret."""
    assert not (out / "tiles" / "0_0.json").exists()
    with xr.open_zarr(out) as ds:
        assert list(ds.attrs["tiles_failed"]) == ["0_0"]
        assert (
            ds.attrs["stac"]
            == ds.attrs["recipe"]["stac"]
            == served.stac.split("?")[0].replace(f"{USER}:{PASSWORD}@", "")
        )


def _no_data(out: Path, served: Served) -> None:
    with xr.open_zarr(out) as ds:
        assert ds.attrs["quality_summary"]["valid_fraction"] == 0
        assert int(ds.clear_count.max()) == 0


def _empty_part(out: Path, served: Served) -> None:
    """The AOI's part where no scene is: a tile of no data, written and finished."""
    with xr.open_zarr(out) as ds:
        half = ds.reflectance.sizes["x"] // 2
        assert ds.reflectance[:, :, :half].notnull().any()
        assert not ds.reflectance[:, :, -half:].notnull().any()
    assert sorted(p.stem for p in (out / "tiles").glob("*.json")) == ["0_0", "0_1"]


def _asset_case(case: str) -> Callable[[Served, str, Path], list[str]]:
    return lambda s, scheduler, tmp: [
        "--stac",
        s.stac,
        *s.dates(case),
        "--aoi",
        aoi(tmp),
        "--scheduler",
        scheduler,
    ]


def _far_part(tmp: Path) -> str:
    """SMALL_AOI and a square 3 km east of the demo's scenes, as one MultiPolygon."""
    near = json.loads(SMALL_AOI)["coordinates"]
    to_lonlat = Transformer.from_crs(32719, 4326, always_xy=True)
    x, y = 606_600, 4_699_280
    ring = [
        list(to_lonlat.transform(x + dx, y + dy))
        for dx, dy in ((0, 0), (200, 0), (200, 200), (0, 200), (0, 0))
    ]
    path = tmp / "two-parts.geojson"
    path.write_text(json.dumps({"type": "MultiPolygon", "coordinates": [near, [ring]]}))
    return str(path)


CASES = [
    Case(
        "asset answers 403 (a forged signature)",
        _asset_case("403"),
        1,
        r"^  failed tile 0_0: ReadError: Error opening 'http://127\.0\.0\.1:\d+/hostile/scenes/"
        r"\S+/B04\.tif': RasterioIOError\('HTTP response code: 403",
        product=_tile_failed,
    ),
    Case(
        "asset cut short",
        _asset_case("cut"),
        1,
        r"^  failed tile 0_0: ReadError: Error reading Window\(.*\) from 'http://127\.0\.0\.1:"
        r"\d+/hostile/cut/\S+/B04\.tif': RasterioIOError\('Read",
        product=_tile_failed,
    ),
    Case(
        "asset server resets the connection",
        _asset_case("reset"),
        1,
        r"^  failed tile 0_0: ReadError: Error opening 'http://127\.0\.0\.1:\d+/\S+/B04\.tif': "
        r"RasterioIOError\('CURL error: .*(reset|[Ee]mpty reply|connect)",
        product=_tile_failed,
    ),
    Case(
        "asset server never answers",
        _asset_case("silent"),
        1,
        r"^  failed tile 0_0: ReadError: Error opening 'http://127\.0\.0\.1:\d+/\S+/B04\.tif': "
        r"RasterioIOError\('CURL error: Operation too slow",
        env={"S2SR_TIMEOUT": QUICK_TIMEOUT},
        product=_tile_failed,
    ),
    Case(
        "STAC root never answers",
        lambda s, scheduler, tmp: [
            "--stac",
            f"{s.silent.url}/stac/?token={TOKEN}",
            "--start",
            "2023-01-01",
            "--end",
            "2023-01-31",
        ],
        2,
        r"^error: cannot reach STAC catalog http://127\.0\.0\.1:\d+/stac/: no answer in 1 s "
        r"\(\$S2SR_TIMEOUT sets how long to wait\)$",
        env={"S2SR_TIMEOUT": QUICK_TIMEOUT},
    ),
    Case(
        "STAC search never answers",
        lambda s, scheduler, tmp: [
            "--stac",
            f"{s.silent.url}/?token={TOKEN}",
            "--start",
            "2023-01-01",
            "--end",
            "2023-01-31",
        ],
        2,
        r"^error: cannot search STAC API http://127\.0\.0\.1:\d+/: no answer in 1 s "
        r"\(\$S2SR_TIMEOUT sets how long to wait\)$",
        env={"S2SR_TIMEOUT": QUICK_TIMEOUT},
    ),
    Case(
        "--workers -1",
        lambda s, scheduler, tmp: ["--workers", "-1"],
        2,
        r"^error: argument --workers: must be at least 1, got -1 "
        r"\(see --help\)$",
    ),
    Case(
        "--workers 0",
        lambda s, scheduler, tmp: ["--workers", "0"],
        2,
        r"^error: argument --workers: must be at least 1, got 0",
    ),
    Case(
        "$S2SR_TIMEOUT not a number",
        lambda s, scheduler, tmp: [],
        2,
        r"^error: \$S2SR_TIMEOUT must be a positive number of seconds, got 'soon'$",
        env={"S2SR_TIMEOUT": "soon"},
    ),
    Case(
        "an AOI part where no scene is",
        lambda s, scheduler, tmp: ["--aoi", _far_part(tmp), "--scheduler", scheduler],
        0,
        r"tiles:.*2/2",
        product=_empty_part,
    ),
    Case(
        "every scene cloudy: all no data",
        _asset_case("cloudy"),
        0,
        r"^warning: all 1 finished tiles are no data: no clear observation of the AOI",
        product=_no_data,
    ),
]


@pytest.mark.usefixtures("quick_retries")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_io(case: Case, served, dask_client, tmp_path, capfd, monkeypatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "product.zarr"
    argv = case.argv(served, dask_client.scheduler.address, tmp_path)
    ran = run(capfd, *argv, "--out", str(out))
    assert ran.code == case.code, ran.err
    assert any(re.search(case.line, line) for line in ran.err.splitlines()), ran.err
    check_clean(ran, out)
    if case.product is None:
        assert not out.exists()
    else:
        case.product(out, served)
    if case.code == 2:
        assert len(ran.err.strip().splitlines()) == 1, ran.err


# -- scenarios: what a run leaves for the next one ------------------------------------------


def markers(out: Path) -> list[str]:
    return sorted(p.stem for p in (out / "tiles").glob("*.json"))


def wait_for(condition: Callable[[], bool], alive: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert alive(), f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.02)


@pytest.mark.usefixtures("quick_retries")
def test_a_missing_asset_fails_the_tile_until_it_reads(served, dask_client, tmp_path, capfd):
    """An asset answers 404 (on the flow's own cluster, whose workers print nothing of it): the
    tile fails and is not finished. The asset back but the disk full as the run finishes: the
    tile is written, the summary printed, exit 1. Space again: the product is finished."""
    out = tmp_path / "product.zarr"
    argv = ["--stac", served.stac, *served.dates("404"), "--aoi", aoi(tmp_path), "--out", str(out)]
    first = run(capfd, *argv, "--workers", "1")
    assert first.code == 1, first.err
    assert re.search(
        r"^  failed tile 0_0: ReadError: Error opening 'http://127\.0\.0\.1:\d+/"
        r"hostile/missing/\S+/B04\.tif': RasterioIOError\('HTTP response code: 404",
        first.err,
        re.M,
    ), first.err
    assert "retrying in 0.05 s" in first.err
    check_clean(first, out)
    _tile_failed(out, served)

    scene = served.missing.split("/")[-2]
    served.fs.put_file(
        str(DEMO_CATALOG.parent / "sentinel-2-l2a-demo" / scene / "B04.tif"), served.missing
    )
    item = out / "stac" / "item.json"
    item.unlink()
    item.symlink_to("/dev/full")  # writes there fail as on a full disk: ENOSPC
    scheduler = ["--scheduler", dask_client.scheduler.address]
    full = run(capfd, *argv, *scheduler)
    assert full.code == 1, full.err
    assert "1 tiles written, 0 already finished, 0 failed" in full.out
    assert full.last() == (
        f"error: cannot write stac/item.json to {out}: No space left on device"
    ), full.err
    check_clean(full, out)
    assert markers(out) == ["0_0"]

    item.unlink()
    again = run(capfd, *argv, *scheduler)
    assert again.code == 0, again.err
    assert "0 tiles written, 1 already finished, 0 failed" in again.out
    check_clean(again, out)
    with xr.open_zarr(out) as ds:
        assert ds.attrs["tiles_failed"] == {}
        assert ds.reflectance.sel(band="B04").notnull().all()


def test_ctrl_c_and_a_concurrent_overwrite(dask_client, tmp_path, capfd):
    """While a run writes the product (in its own process, with its own cluster), another
    with --overwrite is refused and changes nothing; then Ctrl-C ends the first with exit
    130 and one line, from neither its workers nor a traceback, and its lease is gone."""
    out = tmp_path / "product.zarr"
    # 77 small tiles: the first run is still writing tiles while the second is refused
    argv = ["--tile-size", "96", "--out", str(out)]
    writing = subprocess.Popen(
        [sys.executable, "-m", "flows.region", *argv, "--workers", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C in a terminal: SIGINT to every process of the group
        # as in a terminal, whatever this test process does with SIGINT: a Python started
        # with SIGINT ignored keeps ignoring it, and the run would end as if never stopped
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: bool(markers(out)), lambda: writing.poll() is None, "a finished tile")
        before = markers(out)
        second = run(capfd, *argv, "--overwrite", "--scheduler", dask_client.scheduler.address)
        assert writing.poll() is None, "the first run ended before the second was refused"
        os.killpg(writing.pid, signal.SIGINT)
        stdout, stderr = writing.communicate(timeout=60)
    finally:
        if writing.poll() is None:
            os.killpg(writing.pid, signal.SIGKILL)
            writing.wait()
    assert second.code == 2, second.err
    assert re.fullmatch(
        r"error: another run is writing \S+ \(process \d+ on \S+ since \S+\); "
        r"--overwrite would delete its tiles: wait for it to end\n",
        second.err,
    )
    assert set(before) <= set(markers(out))  # nothing deleted
    interrupted = Ran(writing.returncode, stdout, stderr)
    assert interrupted.code == 130, stderr
    assert interrupted.last() == "interrupted: finished tiles are kept; re-run to complete the rest"
    check_clean(interrupted)
    assert not (out / "leases").exists()


@pytest.mark.usefixtures("quick_retries")
def test_a_lost_scheduler_ends_the_run_with_its_summary(tmp_path, capfd, monkeypatch):
    """The scheduler goes away mid-run: the client gives up after $S2SR_TIMEOUT, the run ends
    with the summary and one line, exit 1, and the tiles written are kept."""
    from distributed import LocalCluster

    monkeypatch.setenv("S2SR_TIMEOUT", QUICK_TIMEOUT)
    out = tmp_path / "product.zarr"
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
    )
    running = threading.Event()

    def close_the_scheduler() -> None:
        wait_for(lambda: bool(markers(out)), running.is_set, "a finished tile")
        cluster.sync(cluster.scheduler.close)

    try:
        running.set()
        closer = threading.Thread(target=close_the_scheduler, daemon=True)
        closer.start()
        ran = run(
            capfd, "--tile-size", "480", "--out", str(out), "--scheduler", cluster.scheduler_address
        )
        running.clear()
    finally:
        with contextlib.suppress(Exception):
            cluster.close(timeout=2)
    assert ran.code == 1, ran.err
    assert re.search(
        r"^error: lost the Dask scheduler tcp://127\.0\.0\.1:\d+ before \d+ tiles "
        r"were done: the tiles written are kept; re-run to complete the rest$",
        ran.err,
        re.M,
    ), ran.err
    assert re.search(r"^\d+ tiles written, 0 already finished, 0 failed", ran.out, re.M)
    check_clean(ran, out)
    assert markers(out) and not (out / "leases").exists()
