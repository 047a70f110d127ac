"""SR network sizes from the checkpoint, from its run's hparams.yaml, or from the tensor shapes.

The SR fixture checkpoint stripped of its hyper-parameters stands for a published checkpoint
that does not record its sizes; it must load and sample exactly as the original does.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.errors import WeightsError
from pipeline.models.diffusion.network import DiffFuSRConfig
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.diffusion.sizes import config_from_shapes, network_config
from pipeline.models.weights import (
    convert_lightning_checkpoint,
    load_state_dict,
    sibling,
    tensor_shapes,
)
from tests.conftest import FIXTURES
from tests.products import region

ORIGINAL = FIXTURES / "sr_small.ckpt"
FAST = {"steps": 2, "window": 16, "overlap": 4, "batch": 4, "device": "cpu"}


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def _rgb() -> np.ndarray:
    rng = np.random.default_rng(5)
    return (0.05 + 0.3 * rng.random((3, 24, 24))).astype(np.float32)


@pytest.fixture(scope="module")
def reference() -> tuple[DiffFuSRConfig, np.ndarray]:
    """The sizes the original checkpoint records, and what it samples."""
    model = DiffFuSRRGB(weights=str(ORIGINAL), **FAST)
    return model.network, model(_rgb(), (8, 16))


def run_folder(tmp_path: Path, stripped: Path, yaml_text: str | None, where: str) -> Path:
    """A training run's folder: ``checkpoints/last.ckpt``, and ``hparams.yaml`` at ``where``
    relative to the checkpoint's folder."""
    checkpoint = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    shutil.copyfile(stripped, checkpoint)
    if yaml_text is not None:
        (checkpoint.parent / where).write_text(yaml_text)
    return checkpoint


@pytest.mark.parametrize("where", ["hparams.yaml", "../hparams.yaml"])
def test_hparams_yaml_beside_or_one_up_gives_the_sizes(
    where, sr_without_hparams, reference, tmp_path
):
    stripped, text = sr_without_hparams
    assert "hyper_parameters" not in torch.load(stripped, weights_only=True)
    checkpoint = run_folder(tmp_path, stripped, text, where)
    model = DiffFuSRRGB(weights=str(checkpoint), **FAST)
    assert model.network == reference[0]
    assert np.array_equal(model(_rgb(), (8, 16)), reference[1])


class EasyDict(dict):
    """Pickles and dumps like ``easydict.EasyDict``: a dict mirroring its items as attributes."""

    def __init__(self, d: dict | None = None) -> None:
        super().__init__()
        for key, value in (d or {}).items():
            setattr(self, key, value)

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, dict) and not isinstance(value, EasyDict):
            value = EasyDict(value)
        if isinstance(value, list):
            value = tuple(value)
        super().__setattr__(name, value)
        super().__setitem__(name, value)


def test_hparams_yaml_as_lightning_writes_easydicts(
    tmp_path, monkeypatch, reference, sr_without_hparams
):
    """Lightning dumps the reference's EasyDict hyper-parameters with Python tags; they are
    read as the plain data they hold, and no object is constructed."""
    module = types.ModuleType("easydict")
    module.EasyDict = EasyDict
    monkeypatch.setitem(sys.modules, "easydict", module)
    monkeypatch.setattr(EasyDict, "__module__", "easydict")
    config = json.loads((FIXTURES / "sr_small_config.json").read_text())
    text = yaml.dump({k: EasyDict(v) for k, v in config.items()})
    assert "!!python/object/new:easydict.EasyDict" in text and "!!python/tuple" in text
    checkpoint = run_folder(tmp_path, sr_without_hparams[0], text, "../hparams.yaml")
    assert network_config(str(checkpoint), checkpoint) == reference[0]


def test_any_other_python_tag_is_refused(tmp_path, sr_without_hparams):
    text = "lit_model: !!python/object/apply:os.system ['echo hi']\n"
    checkpoint = run_folder(tmp_path, sr_without_hparams[0], text, "hparams.yaml")
    with pytest.raises(WeightsError) as err:
        network_config(str(checkpoint), checkpoint)
    assert one_line(err).startswith(
        f"{checkpoint.parent / 'hparams.yaml'}: not a readable "
        "hparams.yaml: could not determine a constructor"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lit_model: {args: [unclosed\n", "not a readable hparams.yaml"),
        ("trainer: {max_epochs: 3}\n", "not the hparams.yaml of a DiffFuSR SR run"),
        ("lit_model: {args: {scale: 4}}\n", "the hyper-parameters lack the network size"),
    ],
)
def test_an_unusable_hparams_yaml_is_one_line_not_skipped(
    text, expected, tmp_path, sr_without_hparams
):
    checkpoint = run_folder(tmp_path, sr_without_hparams[0], text, "hparams.yaml")
    with pytest.raises(WeightsError) as err:
        DiffFuSRRGB(weights=str(checkpoint), **FAST)
    assert expected in one_line(err)


def test_without_hparams_the_tensor_shapes_give_the_sizes(tmp_path, reference, sr_without_hparams):
    checkpoint = run_folder(tmp_path, sr_without_hparams[0], None, "")
    model = DiffFuSRRGB(weights=str(checkpoint), **FAST)
    assert model.network == reference[0]
    assert np.array_equal(model(_rgb(), (8, 16)), reference[1])


def test_the_paper_sizes_from_the_published_key_listing():
    """The key listing of the paper's SR model (random weights, shapes only) gives the
    paper's configuration, five levels with attention at the deepest."""
    listing = json.loads((FIXTURES / "sr_large_keys.json").read_text())["keys"]
    shapes = {row["key"]: row["shape"] for row in listing}
    assert config_from_shapes(shapes, "large") == DiffFuSRConfig()


def test_a_size_that_cannot_be_inferred_is_named(sr_without_hparams):
    shapes, _ = tensor_shapes(sr_without_hparams[0])
    del shapes["ema.first_conv_x.weight"]
    with pytest.raises(WeightsError) as err:
        config_from_shapes(shapes, "w.ckpt")
    assert one_line(err) == (
        "w.ckpt: no network sizes recorded and none inferable from the "
        "tensors: the U-Net width needs ema.first_conv_x.weight, which "
        "the weights lack"
    )


@pytest.mark.parametrize(
    ("source", "relative", "expected"),
    [
        (
            "hf://org/repo/logs/v1/checkpoints/last.ckpt",
            "../hparams.yaml",
            "hf://org/repo/logs/v1/hparams.yaml",
        ),
        ("hf://org/repo@v2/a/last.ckpt", "hparams.yaml", "hf://org/repo@v2/a/hparams.yaml"),
        ("hf://org/repo/last.ckpt", "../hparams.yaml", None),  # above the repository
        (
            "s3://bucket/run/checkpoints/last.ckpt",
            "../hparams.yaml",
            "s3://bucket/run/hparams.yaml",
        ),
        ("https://example.org/w.ckpt?sig=1", "hparams.yaml", None),
        ("runs/v0/checkpoints/last.ckpt", "../hparams.yaml", "runs/v0/hparams.yaml"),
    ],
)
def test_sibling_sources(source, relative, expected):
    assert sibling(source, relative) == expected


def test_cli_corrupt_hparams_yaml_is_one_line_and_exit_2(tmp_path, sr_without_hparams):
    checkpoint = run_folder(tmp_path, sr_without_hparams[0], "lit_model: [", "../hparams.yaml")
    done = region(
        "--rgb-model",
        "difffusr",
        "--weights",
        str(checkpoint),
        "--dry-run",
        "--out",
        str(tmp_path / "never.zarr"),
    )
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: {checkpoint.parent.parent / 'hparams.yaml'}: not a readable hparams.yaml"
    )
    assert done.stderr.count("\n") == 1


def test_tensor_shapes_read_no_data_and_agree_with_the_tensors(tmp_path):
    converted = convert_lightning_checkpoint(ORIGINAL, tmp_path / "sr.safetensors").path
    for path in (ORIGINAL, converted):
        shapes, metadata = tensor_shapes(path)
        state, recorded = load_state_dict(path)
        assert shapes == {k: tuple(v.shape) for k, v in state.items()}
        assert metadata == recorded
