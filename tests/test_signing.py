"""Planetary Computer's signed assets, on a local stand-in for its token API and blob store
(:class:`tests.servers.SasServer`): the hrefs are signed on the workers just before each
read, tokens are renewed when one is issued already expired or runs out mid-run, and no
token reaches the product, the output or the workers' logs."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.errors import RasterioIOError

from flows.region import main
from pipeline.errors import UserError
from pipeline.inputs.signing import PC_TOKEN_API, TOKEN_API_ENV, Signer, signer_for
from tests.products import DEMO_TILES, DEMO_TILING
from tests.servers import SasServer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo" / "sentinel-2-l2a-demo"
PC_API = "https://planetarycomputer.microsoft.com/api/stac/v1"
COLLECTION = "sentinel-2-l2a"
#: Tokens live 4 s (renewed after 2 s); token 2 is refused after 12 requests.
LIFETIME, REVOKE_AFTER = 4.0, 12


@pytest.fixture(scope="module")
def sas_server():
    with SasServer(DEMO, lifetime=LIFETIME, revoke_after=REVOKE_AFTER) as server:
        yield server


def planetary_catalog(server: SasServer, folder: Path) -> str:
    """The demo's items as Planetary Computer would list them: collection ``sentinel-2-l2a``,
    the same asset keys, unsigned hrefs into its blob store."""
    features = []
    for path in sorted(DEMO.glob("*/*.json")):
        item = json.loads(path.read_text())
        item["collection"], item["links"] = COLLECTION, []
        for asset in item["assets"].values():
            asset["href"] = server.href(f"{path.parent.name}/{PurePosixPath(asset['href']).name}")
        features.append(item)
    catalog = folder / "pc-items.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return str(catalog)


@pytest.mark.parametrize(
    ("stac", "collection", "sign", "expected"),
    [
        (PC_API, COLLECTION, "auto", Signer(COLLECTION, PC_TOKEN_API)),
        (PC_API, COLLECTION, "none", None),
        ("https://earth-search.aws.element84.com/v1", "sentinel-2-c1-l2a", "auto", None),
        ("items.json", COLLECTION, "planetary-computer", Signer(COLLECTION, PC_TOKEN_API)),
        (None, None, "auto", None),  # the demo
        (PC_API, None, "auto", UserError),
    ],
)
def test_which_catalogs_are_signed(stac, collection, sign, expected, monkeypatch):
    monkeypatch.delenv(TOKEN_API_ENV, raising=False)
    if expected is UserError:
        with pytest.raises(UserError, match="needs --collection"):
            signer_for(stac, collection, sign)
    else:
        assert signer_for(stac, collection, sign) == expected


def test_signing_without_a_collection_is_refused_in_one_line(capsys):
    assert (
        main(
            [
                "--stac",
                "items.json",
                "--start",
                "2023-01-01",
                "--end",
                "2023-01-31",
                "--sign",
                "planetary-computer",
                "--dry-run",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --sign planetary-computer needs --collection (its tokens are per "
        "collection), e.g. --collection sentinel-2-l2a"
    ]


@pytest.mark.slow
def test_a_run_signs_each_read_and_outlives_its_tokens(
    sas_server, dask_client, demo_product, tmp_path, monkeypatch, capfd
):
    # the blob store refuses what is not signed
    with pytest.raises(RasterioIOError, match="403"):
        rasterio.open(sas_server.href("S2_L2A_DEMO_20230130_N0511/B02.tif"))

    monkeypatch.setenv(TOKEN_API_ENV, sas_server.token_api)
    before = len(sas_server.log())
    out = tmp_path / "pc.zarr"
    dask_client.get_worker_logs()  # the logs so far are not this run's
    code = main(
        [
            "--stac",
            planetary_catalog(sas_server, tmp_path),
            "--collection",
            COLLECTION,
            "--sign",
            "planetary-computer",
            "--start",
            "2023-01-01",
            "--end",
            "2023-01-31",
            *DEMO_TILING,
            "--out",
            str(out),
            "--scheduler",
            dask_client.scheduler.address,
        ]
    )
    printed = capfd.readouterr()
    assert code == 0, printed.err
    assert f"{DEMO_TILES} tiles written, 0 already finished, 0 failed" in printed.out

    log = sas_server.log()[before:]
    tokens = [line.split() for line in log if line.startswith("TOKEN")]
    reads = [line.split() for line in log if not line.startswith("TOKEN")]
    assert {t[2] for t in tokens} == {COLLECTION}
    assert ["GET", "403", "1"] in [r[:3] for r in reads] or ["HEAD", "403", "1"] in [
        r[:3] for r in reads
    ], "the token issued already expired was never refused"
    by_token_two = [r[1] for r in reads if r[2] == "2"]
    assert "200" in by_token_two and "403" in by_token_two, "token 2 did not run out mid-run"
    assert len(tokens) >= 3  # renewed after the refusals
    assert all(r[2] != "-" for r in reads), "a read went out unsigned"

    # the same pixels as the demo read from local files
    with xr.open_zarr(out) as signed, xr.open_zarr(demo_product) as local:
        for name in ("reflectance", "clear_count", "hallucination_risk"):
            np.testing.assert_array_equal(signed[name].values, local[name].values, name)
        assert signed.attrs["asset_signing"] == "planetary-computer"
        assert "?" not in signed.attrs["stac"]

    # no token anywhere: product bytes, the command's output, the workers' logs
    product = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file()).decode("latin-1")
    metadata = "".join(p.read_text() for p in out.rglob("*.json"))
    logs = json.dumps(dask_client.get_worker_logs())
    for secret in [t[3] for t in tokens] + ["sig="]:
        for where, text in (
            ("product", product if "=" not in secret else metadata),
            ("stdout", printed.out),
            ("stderr", printed.err),
            ("worker logs", logs),
        ):
            assert secret not in text, f"{secret!r} in the {where}"
