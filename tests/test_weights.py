"""Weight files: sources, sha256 pinning, weights-only loading, and the checkpoint conversion.

Runs on the DiffFuSR reference fixture's random-weight checkpoints (``DIFFFUSR_FIXTURES``
points elsewhere if needed); every file is real, only the hub is kept offline.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch
from safetensors.torch import save_file

from flows.convert_checkpoint import main as convert_main
from pipeline.models.weights import (
    FORMAT,
    INFERENCE_PREFIXES,
    WeightsError,
    convert_lightning_checkpoint,
    file_sha256,
    load_state_dict,
    read_checkpoint,
    resolve,
    shipped_weights,
)

REPO = Path(__file__).resolve().parents[1]


def fixtures() -> Path:
    folder = Path(os.environ.get("DIFFFUSR_FIXTURES") or REPO / "tests" / "fixtures" / "difffusr")
    if not (folder / "sr_small.ckpt").is_file():
        pytest.skip(f"DiffFuSR fixture not found in {folder} (set DIFFFUSR_FIXTURES)")
    return folder


@pytest.fixture(scope="module")
def sr_ckpt() -> Path:
    return fixtures() / "sr_small.ckpt"


@pytest.fixture(scope="module")
def checkpoint(sr_ckpt: Path) -> dict:
    return torch.load(sr_ckpt, weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def converted(sr_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("weights") / "sr.safetensors"
    return convert_lightning_checkpoint(sr_ckpt, dst).path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_conversion_keeps_exactly_the_inference_weights(converted, checkpoint, sr_ckpt):
    state, metadata = load_state_dict(converted)
    source = checkpoint["state_dict"]
    assert set(state) == {k for k in source if k.startswith(INFERENCE_PREFIXES)}
    assert {k.split(".")[0] for k in state} == {"ema", "encoder", "E", "diffusion"}
    assert not any(k.startswith(("model.", "E.encoder_k.", "E.queue")) for k in state)
    assert len([k for k in state if k.startswith("diffusion.")]) == 14
    for key, tensor in state.items():
        assert tensor.dtype == source[key].dtype and torch.equal(tensor, source[key]), key
    assert metadata["format"] == FORMAT
    assert metadata["config"] == checkpoint["hyper_parameters"]["lit_model"]["args"]
    assert metadata["source_sha256"] == sha256_of(sr_ckpt)
    assert metadata["global_step"] == str(checkpoint["global_step"])
    assert metadata["unet"] == "ema"


def test_conversion_is_reproducible(converted, sr_ckpt, tmp_path):
    again = convert_lightning_checkpoint(sr_ckpt, tmp_path / "again.safetensors")
    assert again.path.read_bytes() == converted.read_bytes()
    assert again.sha256 == sha256_of(converted)


def test_checkpoint_without_ema_contributes_its_model(checkpoint, tmp_path):
    state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("ema.")}
    torch.save({**checkpoint, "state_dict": state}, tmp_path / "no-ema.ckpt")
    out = convert_lightning_checkpoint(tmp_path / "no-ema.ckpt", tmp_path / "no-ema.safetensors")
    converted, metadata = load_state_dict(out.path)
    assert metadata["unet"] == "model"
    unet = {k for k in converted if k.startswith("ema.")}
    assert unet == {"ema." + k[6:] for k in state if k.startswith("model.")}
    assert all(torch.equal(converted[k], state["model." + k[4:]]) for k in unet)


def test_sha256_is_recorded_and_a_wrong_one_refused(converted):
    digest = sha256_of(converted)
    assert resolve(converted) == resolve(str(converted), digest.upper())
    assert resolve(converted).sha256 == digest
    wrong = "0" * 64
    with pytest.raises(WeightsError) as err:
        resolve(converted, wrong)
    assert wrong in one_line(err) and digest in one_line(err)
    with pytest.raises(WeightsError, match="not a sha256"):
        resolve(converted, "abc")


def test_file_url(converted):
    local = resolve(converted.as_uri())
    assert local.path == converted and local.sha256 == sha256_of(converted)


def test_memory_url_is_cached_under_its_sha256(converted, tmp_path):
    url = f"memory://weights-{uuid.uuid4().hex}/sr.safetensors"
    with fsspec.open(url, "wb") as f:
        f.write(converted.read_bytes())
    digest = sha256_of(converted)
    local = resolve(url, digest, cache_dir=tmp_path)
    assert local.path == tmp_path / f"{digest}.safetensors" and local.sha256 == digest
    assert local.path.read_bytes() == converted.read_bytes()
    assert not list(tmp_path.glob("*.part"))
    fsspec.filesystem("memory").rm(url)
    assert resolve(url, digest, cache_dir=tmp_path).path == local.path  # pinned: no fetch
    assert resolve(url, cache_dir=tmp_path).path == local.path  # fetched once per process
    with pytest.raises(WeightsError) as err:
        resolve(url, cache_dir=tmp_path / "empty")
    assert one_line(err) == f"weights not found: {url}"


def test_memory_url_with_wrong_sha256_leaves_no_file(converted, tmp_path):
    url = f"memory://weights-{uuid.uuid4().hex}/sr.safetensors"
    with fsspec.open(url, "wb") as f:
        f.write(converted.read_bytes())
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        resolve(url, "1" * 64, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.part"))
    fsspec.filesystem("memory").rm(url)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietFiles, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_url(converted, http_folder, tmp_path):
    folder, root = http_folder
    (folder / "sr.safetensors").write_bytes(converted.read_bytes())
    digest = sha256_of(converted)
    local = resolve(f"{root}/sr.safetensors", digest, cache_dir=tmp_path / "cache")
    assert local.path == tmp_path / "cache" / f"{digest}.safetensors"
    assert load_state_dict(local.path)[0].keys() == load_state_dict(converted)[0].keys()
    with pytest.raises(WeightsError) as err:
        resolve(f"{root}/absent.safetensors", cache_dir=tmp_path / "cache")
    assert one_line(err) == f"weights not found: {root}/absent.safetensors"
    assert list((tmp_path / "cache").iterdir()) == [local.path]


def test_unreachable_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/sr.safetensors"
    with pytest.raises(WeightsError) as err:
        resolve(url, cache_dir=tmp_path)
    assert one_line(err).startswith(f"cannot read weights {url}: ")
    assert not list(tmp_path.iterdir())


def test_hub_reference_offline_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = f"hf://s2sr-tests/absent-{uuid.uuid4().hex[:8]}@main/difffusr.safetensors"
    with pytest.raises(WeightsError) as err:
        resolve(source)
    message = one_line(err)
    assert message.startswith(f"cannot reach the Hugging Face hub for {source}: offline")
    assert "local path / fsspec URL" in message


def test_pinned_hub_reference_resolves_offline_from_the_cache(converted, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    digest = sha256_of(converted)
    (tmp_path / f"{digest}.safetensors").write_bytes(converted.read_bytes())
    local = resolve("hf://s2sr-tests/absent@v1/sr.safetensors", digest, cache_dir=tmp_path)
    assert local.path == tmp_path / f"{digest}.safetensors" and local.sha256 == digest


def test_malformed_hub_reference(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match="expected hf://<org>/<repo>"):
        resolve("hf://just-a-repo")


class EasyDict(dict):
    """Pickles like ``easydict.EasyDict``: a dict subclass mirroring its items as attributes."""

    def __init__(self, d: dict | None = None) -> None:
        super().__init__()
        for key, value in (d or {}).items():
            setattr(self, key, value)

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, dict) and not isinstance(value, EasyDict):
            value = EasyDict(value)
        super().__setattr__(name, value)
        super().__setitem__(name, value)

    __setitem__ = __setattr__


def test_easydict_hyper_parameters_load_as_plain_dicts(checkpoint, tmp_path, monkeypatch):
    module = types.ModuleType("easydict")
    module.EasyDict = EasyDict
    monkeypatch.setattr(EasyDict, "__module__", "easydict")
    monkeypatch.setitem(sys.modules, "easydict", module)
    config = checkpoint["hyper_parameters"]
    torch.save({**checkpoint, "hyper_parameters": EasyDict(config)}, tmp_path / "easy.ckpt")
    monkeypatch.delitem(sys.modules, "easydict")  # loading must not need the class
    assert b"easydict" in (tmp_path / "easy.ckpt").read_bytes()
    with pytest.raises(Exception, match="easydict.EasyDict"):
        torch.load(tmp_path / "easy.ckpt", weights_only=True)
    _, metadata = load_state_dict(tmp_path / "easy.ckpt")
    assert metadata == config and type(metadata["lit_model"]["args"]["encoder"]) is dict
    out = convert_lightning_checkpoint(tmp_path / "easy.ckpt", tmp_path / "easy.safetensors")
    assert load_state_dict(out.path)[1]["config"] == config["lit_model"]["args"]


def _touch(path: str) -> None:
    Path(path).touch()


class Payload:
    """Runs ``call(argument)`` when unpickled, unless the unpickler refuses it."""

    def __init__(self, call, argument: str) -> None:
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("call", [os.system, _touch], ids=["os.system", "module-function"])
def test_code_in_a_checkpoint_is_refused_never_run(call, checkpoint, tmp_path):
    marker = tmp_path / "ran"
    argument = f"touch {marker}" if call is os.system else str(marker)
    torch.save({"state_dict": {}, "callbacks": Payload(call, argument)}, tmp_path / "evil.ckpt")
    with pytest.raises(WeightsError) as err:
        load_state_dict(tmp_path / "evil.ckpt")
    assert "refused to load" in one_line(err) and "GLOBAL" in one_line(err)
    assert not marker.exists()


def test_raw_state_dicts_and_non_weight_files(tmp_path):
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor(7)}
    torch.save(tensors, tmp_path / "raw.pt")
    save_file(tensors, tmp_path / "raw.safetensors")
    for name in ("raw.pt", "raw.safetensors"):
        state, metadata = load_state_dict(tmp_path / name)
        assert metadata == {} and state.keys() == tensors.keys()
        assert all(torch.equal(state[k], tensors[k]) for k in tensors)
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(WeightsError, match="not a safetensors file or PyTorch checkpoint"):
        load_state_dict(tmp_path / "notes.txt")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "raw.safetensors")


def test_fusion_checkpoint_is_not_an_sr_checkpoint(tmp_path):
    with pytest.raises(WeightsError) as err:
        convert_lightning_checkpoint(fixtures() / "fusion_small.ckpt", tmp_path / "x.safetensors")
    assert "not a Lightning checkpoint of the DiffFuSR SR model" in one_line(err)
    assert not (tmp_path / "x.safetensors").exists()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.convert_checkpoint", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_cli_converts_and_prints_the_sha256(sr_ckpt, converted, tmp_path):
    done = cli(str(sr_ckpt), str(tmp_path / "out.safetensors"), "--sha256", sha256_of(sr_ckpt))
    assert done.returncode == 0, done.stderr
    digest = sha256_of(tmp_path / "out.safetensors")
    assert digest == sha256_of(converted)
    assert f"sha256 {digest}" in done.stdout.splitlines()
    assert f"{(tmp_path / 'out.safetensors').stat().st_size:,} bytes" in done.stdout


def test_cli_offline_hub_reference_is_one_line_and_exit_2(tmp_path):
    done = cli(
        "hf://s2sr-tests/absent/sr.ckpt", str(tmp_path / "out.safetensors"), HF_HUB_OFFLINE="1"
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot reach the Hugging Face hub for hf://")
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""


@pytest.mark.parametrize(
    ("src", "extra", "expected"),
    [
        ("missing.ckpt", (), "weights not found"),
        ("fusion_small.ckpt", (), "not a Lightning checkpoint of the DiffFuSR SR model"),
        ("sr_small_io.safetensors", (), "not a PyTorch checkpoint"),
        ("sr_small.ckpt", ("--sha256", "f" * 64), "sha256 mismatch"),
        ("sr_small.ckpt", ("--bogus",), "unrecognized arguments"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(src, extra, expected, tmp_path, capsys):
    """In-process (the subprocess tests above cover the module entry point)."""
    argv = [str(fixtures() / src), str(tmp_path / "out.safetensors"), *extra]
    try:
        code = convert_main(argv)
    except SystemExit as stop:  # argparse's usage errors
        code = stop.code
    stderr = capsys.readouterr().err
    assert code == 2
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and expected in stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as stop:
        convert_main(["--help"])
    assert stop.value.code == 0 and "safetensors" in capsys.readouterr().out


def test_converted_header_is_valid_json_with_sorted_metadata(converted):
    size = int.from_bytes(converted.read_bytes()[:8], "little")
    header = json.loads(converted.read_bytes()[8 : 8 + size])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    assert (8 + size) % 8 == 0


@pytest.mark.parametrize("name", ["difffusr-demo", "difffusr-fusion-demo"])
def test_shipped_weights_are_the_ones_their_model_card_describes(name):
    """A retrained file must come with its updated card: the card's sha256 is the file's."""
    weights = Path(shipped_weights(f"{name}.safetensors"))
    card = weights.with_suffix(".md").read_text()
    stated = re.findall(r"sha256 `([0-9a-f]{64})`", card)
    assert stated == [file_sha256(weights)]
