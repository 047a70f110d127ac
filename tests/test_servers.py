"""The test harness itself: each real server starts, answers and behaves as the suite needs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.servers import RustacServer, S3Server, ServerError, ServerProcess, http_json


def _collection(cid: str) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "description": "harness test collection",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[10.0, 50.0, 12.0, 52.0]]},
            "temporal": {"interval": [["2024-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


def _item(cid: str, iid: str, lon: float, lat: float, when: str, cloud: float) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": iid,
        "collection": cid,
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[lon, lat], [lon + 0.5, lat], [lon + 0.5, lat + 0.5], [lon, lat + 0.5], [lon, lat]]
            ],
        },
        "bbox": [lon, lat, lon + 0.5, lat + 0.5],
        "properties": {"datetime": when, "eo:cloud_cover": cloud},
        "links": [],
        "assets": {"B04": {"href": f"s3://no-bucket/{iid}/B04.tif", "type": "image/tiff"}},
    }


# --------------------------------------------------------------------------------------------
# S3


def test_s3_round_trip(s3_server: S3Server, tmp_path: Path) -> None:
    s3_server.create_bucket("harness-rt")
    fs = s3_server.filesystem()
    fs.pipe("harness-rt/a/hello.txt", b"hello")
    assert fs.cat("harness-rt/a/hello.txt") == b"hello"

    (tmp_path / "sub").mkdir()
    (tmp_path / "one.bin").write_bytes(b"1")
    (tmp_path / "sub" / "two.bin").write_bytes(b"22")
    urls = s3_server.upload_dir(tmp_path, "s3://harness-up/pre/fix")
    assert urls == ["s3://harness-up/pre/fix/one.bin", "s3://harness-up/pre/fix/sub/two.bin"]
    assert fs.cat("harness-up/pre/fix/sub/two.bin") == b"22"

    # s3fs with no options reads the endpoint and keys from the environment the fixture set.
    import s3fs

    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
    env_fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert env_fs.cat("s3://harness-rt/a/hello.txt") == b"hello"


def test_s3_rejects_wrong_credentials(s3_server: S3Server) -> None:
    s3_server.create_bucket("harness-auth")
    s3_server.filesystem().pipe("harness-auth/secret.txt", b"s")
    wrong_secret = s3_server.filesystem(secret="not-the-secret")
    wrong_key = s3_server.filesystem(key="not-the-key")
    anonymous = s3_server.filesystem(anon=True, key=None, secret=None)
    for fs in (wrong_secret, wrong_key, anonymous):
        with pytest.raises(PermissionError):
            fs.cat("harness-auth/secret.txt")
        with pytest.raises(PermissionError):
            fs.pipe("harness-auth/intruder.txt", b"x")
    assert not s3_server.filesystem().exists("harness-auth/intruder.txt")


def test_zarr_v3_group_on_s3(s3_server: S3Server) -> None:
    import zarr

    s3_server.create_bucket("harness-zarr")
    url = "s3://harness-zarr/x.zarr"
    group = zarr.open_group(url, mode="w", storage_options=s3_server.storage_options())
    arr = group.create_array("band", shape=(6, 8), chunks=(3, 4), dtype="uint16", fill_value=0)
    arr[:] = np.arange(48, dtype="uint16").reshape(6, 8)
    group.attrs["crs"] = "EPSG:32632"

    again = zarr.open_group(url, mode="r", storage_options=s3_server.storage_options())
    assert again.metadata.zarr_format == 3
    assert again.attrs["crs"] == "EPSG:32632"
    np.testing.assert_array_equal(again["band"][:], np.arange(48).reshape(6, 8))
    keys = set(s3_server.filesystem().find("harness-zarr/x.zarr"))
    assert "harness-zarr/x.zarr/zarr.json" in keys
    assert "harness-zarr/x.zarr/band/c/1/1" in keys


def test_rasterio_reads_geotiff_from_s3(s3_server: S3Server, tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    data = np.arange(32 * 48, dtype="uint16").reshape(32, 48)
    src = tmp_path / "tile" / "B04.tif"
    src.parent.mkdir()
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=48,
        height=32,
        count=1,
        dtype="uint16",
        crs="EPSG:32632",
        transform=from_origin(600000, 5600000, 10, 10),
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(data, 1)
    (url,) = s3_server.upload_dir(src.parent, "harness-tif/T32")
    assert url == "s3://harness-tif/T32/B04.tif"

    # Configured only through the environment (AWS_S3_ENDPOINT, AWS_HTTPS, ...).
    with rasterio.open(url) as ds:
        assert ds.crs.to_epsg() == 32632
        assert ds.res == (10.0, 10.0)
        np.testing.assert_array_equal(ds.read(1), data)
        window = rasterio.windows.Window(16, 8, 16, 16)
        np.testing.assert_array_equal(ds.read(1, window=window), data[8:24, 16:32])


# --------------------------------------------------------------------------------------------
# STAC APIs


def test_rustac_api_search(rustac_api: Any) -> None:
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses

    cid = "harness-rustac"
    items = [
        _item(cid, "inside", 10.2, 50.2, "2024-06-01T10:00:00Z", 5.0),
        _item(cid, "far-away", 11.5, 51.5, "2024-06-01T10:00:00Z", 5.0),
        _item(cid, "too-early", 10.2, 50.2, "2024-02-01T10:00:00Z", 5.0),
    ]
    url = rustac_api(_collection(cid), items)
    assert url.startswith("http://127.0.0.1:")

    client = Client.open(url)
    assert client.conforms_to(ConformanceClasses.ITEM_SEARCH)
    conforms = http_json(f"{url}/conformance")["conformsTo"]
    assert not any(c.endswith("#query") or "filter" in c for c in conforms)

    search = client.search(
        collections=[cid], bbox=[10.3, 50.3, 10.4, 50.4], datetime="2024-05-01/2024-07-01"
    )
    found = list(search.items())
    assert [i.id for i in found] == ["inside"]
    assert found[0].assets["B04"].href == "s3://no-bucket/inside/B04.tif"


def test_stac_fixtures_require_absolute_hrefs() -> None:
    cid = "harness-relative"
    item = _item(cid, "rel", 10.0, 50.0, "2024-06-01T10:00:00Z", 1.0)
    item["assets"]["B04"]["href"] = "./B04.tif"
    with pytest.raises(ValueError, match="not absolute"):
        RustacServer(_collection(cid), [item])


def test_pgstac_api_query_and_filter(pgstac_api: Any) -> None:
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses

    cid = "harness-pgstac"
    items = [
        _item(cid, "clear", 10.2, 50.2, "2024-06-01T10:00:00Z", 5.0),
        _item(cid, "cloudy", 10.2, 50.2, "2024-06-02T10:00:00Z", 80.0),
        _item(cid, "elsewhere", 11.5, 51.5, "2024-06-03T10:00:00Z", 1.0),
    ]
    url = pgstac_api(_collection(cid), items)
    client = Client.open(url)
    assert client.conforms_to(ConformanceClasses.QUERY)
    assert client.conforms_to(ConformanceClasses.FILTER)

    common: dict[str, Any] = {
        "collections": [cid],
        "bbox": [10.3, 50.3, 10.4, 50.4],
        "datetime": "2024-05-01/2024-07-01",
    }
    everything = {i.id for i in client.search(**common).items()}
    assert everything == {"clear", "cloudy"}

    by_query = client.search(**common, query={"eo:cloud_cover": {"lt": 20}})
    assert [i.id for i in by_query.items()] == ["clear"]

    cql2_json = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 20]}
    by_filter = client.search(**common, filter=cql2_json, filter_lang="cql2-json")
    assert [i.id for i in by_filter.items()] == ["clear"]

    # CQL2 text goes in a GET query string (POST bodies take CQL2 JSON only).
    by_text = client.search(
        **common, filter="eo:cloud_cover >= 20", filter_lang="cql2-text", method="GET"
    )
    assert [i.id for i in by_text.items()] == ["cloudy"]


# --------------------------------------------------------------------------------------------
# Dask


def _worker_facts() -> tuple[int, str | None, bytes]:
    import os

    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)  # configured by the inherited env
    return os.getpid(), os.environ.get("AWS_S3_ENDPOINT"), fs.cat("harness-dask/ping.txt")


def test_dask_workers_are_processes_with_s3_env(dask_client: Any, s3_server: S3Server) -> None:
    s3_server.create_bucket("harness-dask")
    s3_server.filesystem().pipe("harness-dask/ping.txt", b"pong")
    workers = list(dask_client.scheduler_info()["workers"])
    assert len(workers) == 2
    results = [dask_client.submit(_worker_facts, workers=[w], pure=False).result() for w in workers]
    pids = {pid for pid, _, _ in results}
    assert len(pids) == 2 and os.getpid() not in pids
    for _, endpoint, payload in results:
        assert endpoint == f"127.0.0.1:{s3_server.port}"
        assert payload == b"pong"


# --------------------------------------------------------------------------------------------
# Failure reporting


def test_server_that_dies_reports_its_log_tail(tmp_path: Path) -> None:
    proc = ServerProcess(
        "doomed",
        [sys.executable, "-c", "print('listening failed: boom', flush=True); raise SystemExit(3)"],
        log_path=tmp_path / "doomed.log",
    )
    proc.start()
    try:
        with pytest.raises(ServerError, match=r"(?s)exited \(code 3\).*listening failed: boom"):
            proc.wait_ready(lambda: False, timeout=30, what="ready")
    finally:
        proc.stop()


def test_server_that_hangs_times_out(tmp_path: Path) -> None:
    proc = ServerProcess(
        "sleepy",
        [sys.executable, "-c", "import time; print('still booting', flush=True); time.sleep(60)"],
        log_path=tmp_path / "sleepy.log",
    )
    proc.start()
    try:
        with pytest.raises(ServerError, match=r"(?s)no ready within 1 s.*still booting"):
            proc.wait_ready(lambda: False, timeout=1, what="ready")
    finally:
        proc.stop()
    assert not proc.alive
