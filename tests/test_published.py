"""The published checkpoints by name, through a hub server on 127.0.0.1 (``hub`` fixture).

The server holds the DiffFuSR repository's layout with the reference fixtures' random
checkpoints at the published paths: ``naip-harm`` without hyper-parameters beside its run's
``hparams.yaml`` (as the reference loads it), ``gsd-v64`` a second-generation fusion
checkpoint at the published sizes, ``gsd-v35`` a small first-generation one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from huggingface_hub.utils import _http as hub_http

from pipeline.errors import WeightsError
from pipeline.models import weights as weights_module
from pipeline.models.diffusion.rgb import DEMO_WEIGHTS as RGB_DEMO
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.fusion.model import DEMO_WEIGHTS as FUSION_DEMO
from pipeline.models.fusion.model import DiffFuSRFusion
from pipeline.models.fusion.mtf import MTFFusionNetwork
from pipeline.models.fusion.network import FusionNetwork
from pipeline.models.published import (
    HUB_REPO,
    PUBLISHED,
    TRUST_FILE,
    fetch,
    weight_source,
)
from tests.conftest import FIXTURES, Hub
from tests.products import box_aoi, region, write

ROOT = Path(__file__).resolve().parents[1]
NAMES = [(model, name) for model, named in PUBLISHED.items() for name in named]
FAST = {"steps": 2, "window": 16, "overlap": 4, "batch": 4, "device": "cpu"}
DEMOS = {"difffusr": RGB_DEMO, "difffusr-fusion": FUSION_DEMO}
#: A second-generation fusion checkpoint at the published sizes (random weights).
MTF = FIXTURES.parent / "difffusr-mtf" / "fusion_mtf.ckpt"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


@pytest.fixture
def published(hub: Hub, sr_without_hparams) -> dict[str, Path]:
    """Every name's file on the hub server; the served file of each name."""
    stripped, hparams = sr_without_hparams
    files = {}
    for model, name in NAMES:
        checkpoint = PUBLISHED[model][name]
        source = {"naip-harm": stripped, "gsd-v64": MTF}.get(name) or FIXTURES / (
            "sr_small.ckpt" if model == "difffusr" else "fusion_small.ckpt"
        )
        files[name] = hub.put(HUB_REPO, checkpoint.path, source)
    hub.put(HUB_REPO, PUBLISHED["difffusr"]["naip-harm"].hparams, hparams.encode())
    return files


def resolve_name(model: str, name: str, sha256: str | None = None):
    return fetch(model, weight_source(model, name, DEMOS[model]), sha256)


def next_process(monkeypatch) -> None:
    """Forget what this process fetched, as a new run would."""
    monkeypatch.setattr(weights_module, "_FETCHED", {})


def trusted(hub: Hub) -> dict:
    return json.loads((Path(hub.env["S2SR_CACHE"]) / "weights" / TRUST_FILE).read_text())


@pytest.mark.parametrize(("model", "name"), NAMES)
def test_every_name_downloads_through_the_hub(model, name, hub, published):
    checkpoint = PUBLISHED[model][name]
    local = resolve_name(model, name)
    assert local.path.is_relative_to(Path(hub.env["HF_HOME"]))
    assert local.path.read_bytes() == published[name].read_bytes()
    assert local.sha256 == sha256_of(published[name])
    assert f"GET {checkpoint.path}" in hub.requests()
    entry = trusted(hub)[f"hf://{HUB_REPO}/{checkpoint.path}"]
    assert (entry["name"], entry["sha256"]) == (name, local.sha256)


def test_named_weights_build_the_models(hub, published):
    """``naip-harm`` has no hyper-parameters: its sizes come from its run's hparams.yaml on
    the hub, and it samples as the checkpoint that records them."""
    model = DiffFuSRRGB(weights="naip-harm", **FAST)
    original = DiffFuSRRGB(weights=str(FIXTURES / "sr_small.ckpt"), **FAST)
    assert model.weights == PUBLISHED["difffusr"]["naip-harm"].source
    assert model.weights_sha256 == sha256_of(published["naip-harm"])
    assert model.network == original.network
    assert f"GET {PUBLISHED['difffusr']['naip-harm'].hparams}" in hub.requests()
    rgb = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32) * 0.3
    assert np.array_equal(model(rgb, (0, 0)), original(rgb, (0, 0)))
    for name, generation in (("gsd-v64", MTFFusionNetwork), ("gsd-v35", FusionNetwork)):
        fusion = DiffFuSRFusion(weights=name, device="cpu")
        assert fusion.weights_sha256 == sha256_of(published[name])
        assert isinstance(fusion._network(), generation)


def test_demo_by_name_is_the_shipped_file():
    assert DiffFuSRFusion(weights="demo", device="cpu").weights == FUSION_DEMO
    assert DiffFuSRFusion(device="cpu").weights == FUSION_DEMO
    assert weight_source("difffusr", "demo", RGB_DEMO) == RGB_DEMO


def test_the_next_run_uses_the_cache(hub, published, monkeypatch):
    path = PUBLISHED["difffusr"]["naip"].path
    first = resolve_name("difffusr", "naip")
    assert hub.requests() == [f"HEAD {path}", f"GET {path}"]
    next_process(monkeypatch)
    assert resolve_name("difffusr", "naip") == first
    assert hub.requests() == [f"HEAD {path}", f"GET {path}", f"HEAD {path}"]  # no download
    next_process(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_name("difffusr", "naip") == first
    assert len(hub.requests()) == 3  # offline: not even a HEAD


def test_a_changed_file_upstream_is_refused_until_its_sha256_is_given(hub, published, monkeypatch):
    first = resolve_name("difffusr", "naip")
    checkpoint = PUBLISHED["difffusr"]["naip"]
    changed = hub.put(HUB_REPO, checkpoint.path, published["naip-harm"])
    new = sha256_of(changed)
    next_process(monkeypatch)
    with pytest.raises(WeightsError) as err:
        resolve_name("difffusr", "naip")
    assert one_line(err) == (
        f"weights naip ({checkpoint.source}) changed since first used: sha256 {new}, "
        f"remembered {first.sha256} in {Path(hub.env['S2SR_CACHE']) / 'weights' / TRUST_FILE}; "
        f"to use the new file, give --weights-sha256 {new}"
    )
    assert trusted(hub)[checkpoint.source]["sha256"] == first.sha256
    assert resolve_name("difffusr", "naip", new).sha256 == new
    assert trusted(hub)[checkpoint.source]["sha256"] == new
    next_process(monkeypatch)
    assert resolve_name("difffusr", "naip").sha256 == new


def test_an_explicit_pin_is_still_checked(hub, published):
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        resolve_name("difffusr-fusion", "gsd-v64", "0" * 64)


def test_a_path_not_on_the_hub_is_named_with_how_to_give_another(hub, published):
    checkpoint = PUBLISHED["difffusr-fusion"]["gsd-v64"]
    hub.remove(HUB_REPO, checkpoint.path)
    with pytest.raises(WeightsError) as err:
        DiffFuSRFusion(weights="gsd-v64", device="cpu")
    assert one_line(err) == (
        f"weights gsd-v64: {checkpoint.source} is not on the Hugging Face hub (the published "
        f"paths may be off by a folder name); give the right one with --fusion-weights "
        f"hf://{HUB_REPO}/<path>, or a local file with --fusion-weights FILE"
    )


def test_an_unreachable_hub_says_how_to_get_them(hub, monkeypatch):
    """After the hub client's retries (their 23 s of back-off skipped here, and counted)."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    waits: list[float] = []
    clock = {k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    monkeypatch.setattr(hub_http, "time", SimpleNamespace(**{**clock, "sleep": waits.append}))
    checkpoint = PUBLISHED["difffusr"]["naip-harm"]
    with pytest.raises(WeightsError) as err:
        DiffFuSRRGB(weights="naip-harm", device="cpu")
    message = one_line(err)
    assert message.startswith(
        "weights naip-harm are not in the local hub cache and the hub cannot be reached ("
    )
    assert message.endswith(
        f"download them once with `hf download {HUB_REPO} "
        f"{checkpoint.path}` (or copy a hub cache and point HF_HOME at "
        "it), or give a local file with --weights FILE"
    )
    assert waits  # tried again before giving up


def test_a_copy_in_the_weights_cache_serves_a_pinned_name_offline(hub, monkeypatch):
    """Pre-seeding without a hub cache: the file under its sha256 in the weights cache."""
    seeded = Path(hub.env["S2SR_CACHE"]) / "weights"
    seeded.mkdir(parents=True)
    digest = sha256_of(FIXTURES / "fusion_small.ckpt")
    shutil.copyfile(FIXTURES / "fusion_small.ckpt", seeded / f"{digest}.ckpt")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    local = resolve_name("difffusr-fusion", "gsd-v35", digest)
    assert local.path == seeded / f"{digest}.ckpt"
    assert hub.requests() == []


@pytest.mark.parametrize(
    ("model", "name"),
    [("difffusr", "naip-harmonised"), ("difffusr", "gsd-v64"), ("difffusr-fusion", "naip-harm")],
)
def test_an_unknown_name_lists_the_names(model, name):
    with pytest.raises(WeightsError) as err:
        weight_source(model, name, DEMOS[model])
    names = ", ".join([*PUBLISHED[model], "demo"])
    assert one_line(err) == (
        f"unknown weights name {name!r} for {model}: the names are "
        f"{names}, or give a file path or URL"
    )


def other_catalog(tmp_path: Path) -> str:
    """The demo catalog under another path: data that is not the demo, for the CLI."""
    shutil.copytree(ROOT / "examples" / "demo", tmp_path / "catalog")
    return str(tmp_path / "catalog" / "catalog.json")


def test_cli_named_weights_dry_run(hub, published, tmp_path):
    done = region(
        "--rgb-model",
        "difffusr",
        "--weights",
        "naip-harm",
        "--dry-run",
        "--out",
        str(tmp_path / "never.zarr"),
    )
    assert done.returncode == 0, done.stderr
    sha = sha256_of(published["naip-harm"])
    assert (
        f"weights naip-harm: sha256 {sha} (NAIP degraded to 10 m, harmonised to "
        "Sentinel-2; MIT licence)" in done.stderr
    )
    assert "rgb=difffusr" in done.stdout


def test_cli_outside_the_demo_uses_the_published_weights_or_says_how_to_get_them(
    hub, published, tmp_path, monkeypatch
):
    learned = [
        "--stac",
        other_catalog(tmp_path),
        "--start",
        "2023-01-01",
        "--end",
        "2023-01-31",
        "--rgb-model",
        "difffusr",
        "--fusion-model",
        "difffusr-fusion",
        "--dry-run",
        "--out",
        str(tmp_path / "never.zarr"),
    ]
    done = region(*learned)
    assert done.returncode == 0, done.stderr
    for name in ("naip-harm", "gsd-v64"):
        assert f"weights {name}: sha256 {sha256_of(published[name])}" in done.stderr
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = region(*learned)  # from the hub cache
    assert again.returncode == 0, again.stderr
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    offline = region(*learned)
    assert offline.returncode == 2
    assert offline.stderr.startswith("error: weights naip-harm are not in the local hub cache")
    assert f"`hf download {HUB_REPO} {PUBLISHED['difffusr']['naip-harm'].path}`" in offline.stderr
    assert offline.stderr.count("\n") == 1


def test_cli_demo_weights_on_other_data_warn(tmp_path):
    done = region(
        "--stac",
        other_catalog(tmp_path),
        "--start",
        "2023-01-01",
        "--end",
        "2023-01-31",
        "--rgb-model",
        "difffusr",
        "--weights",
        "demo",
        "--dry-run",
        "--out",
        str(tmp_path / "never.zarr"),
    )
    assert done.returncode == 0, done.stderr
    assert (
        "warning: difffusr runs with the demo weights, trained on the demo scene only; "
        "expect poor results elsewhere (the published ones: --weights naip-harm)"
    ) in done.stderr
    on_demo = region("--rgb-model", "difffusr", "--dry-run", "--out", str(tmp_path / "x.zarr"))
    assert on_demo.returncode == 0 and "warning" not in on_demo.stderr


def test_benchmark_takes_the_names(hub, published, tmp_path, capsys):
    from flows.benchmark import main

    code = main(
        [
            "--rgb-models",
            "difffusr",
            "--fusion-models",
            "difffusr-fusion",
            "--weights",
            "naip-harm",
            "--fusion-weights",
            "gsd-v35",
            "--steps",
            "1",
            "--max-images",
            "1",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    stderr = capsys.readouterr().err
    for name in ("naip-harm", "gsd-v35"):
        assert f"weights {name}: sha256 {sha256_of(published[name])}" in stderr
    report = (tmp_path / "out" / "benchmark.md").read_text()
    assert f"weights naip-harm sha256 {sha256_of(published['naip-harm'])[:12]}…" in report


#: A small AOI in the scene's south-west corner: the tile's halo reaches past the scene there,
#: and windows without data are not sampled: fewer paper-size windows to sample.
CORNER_AOI = box_aoi(-67.6600, -47.8612, -67.6570, -47.8592)


def test_a_run_on_other_data_samples_with_the_published_weights_on_its_workers(
    hub, published, tmp_path
):
    """The workers fetch the named weights again, each in its own process, from the hub."""
    out = tmp_path / "product.zarr"
    done = region(
        "--stac",
        other_catalog(tmp_path),
        "--start",
        "2023-01-01",
        "--end",
        "2023-01-31",
        "--aoi",
        write(tmp_path, "corner.geojson", CORNER_AOI),
        "--rgb-model",
        "difffusr",
        "--steps",
        "1",
        "--workers",
        "1",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    path = PUBLISHED["difffusr"]["naip-harm"].path
    assert hub.requests().count(f"HEAD {path}") >= 2  # the run, then its worker
    assert hub.requests().count(f"GET {path}") == 1  # one download, in the shared cache
    ds = xr.open_zarr(out)
    assert ds.attrs["recipe"]["rgb_model_sha256"] == sha256_of(published["naip-harm"])
    assert np.isfinite(ds.reflectance.sel(band="B04").values).any()
