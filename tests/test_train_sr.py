"""DiffFuSR RGB training: losses, reference checkpoint layout, exact resume, export, the CLI."""

import json
import math
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from flows.train_sr import main
from pipeline.errors import UserError
from pipeline.models.diffusion.network import DiffFuSR, DiffFuSRConfig
from pipeline.models.diffusion.unet import UNetConfig
from pipeline.models.weights import load_state_dict
from pipeline.train.runs import CHECKPOINT, LOG, WEIGHTS
from pipeline.train.sources import FolderSource
from pipeline.train.sr import TrainConfig, Trainer, open_run

#: The smallest network the layout allows: one U-Net level, one RRDB block.
TINY = DiffFuSRConfig(
    unet=UNetConfig(inner_channel=32, channel_mults=(1,), res_blocks=1, attn_strides=()),
    encoder_blocks=1,
)
TINY_ARGS = [
    "--inner-channel",
    "32",
    "--channel-mults",
    "1",
    "--res-blocks",
    "1",
    "--attn-strides",
    "--encoder-blocks",
    "1",
    "--batch-size",
    "2",
    "--patch",
    "32",
    "--val-patches",
    "2",
    "--val-steps",
    "2",
    "--threads",
    "1",
]

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Bit-identical results need the same thread count in the runs compared; one thread is
    also the fastest for these tiny networks on a shared machine."""
    with threads(1):
        yield


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Two textured 8-bit RGB PNGs, as a NAIP-like folder."""
    folder = tmp_path_factory.mktemp("images")
    y, x = np.mgrid[0:80, 0:96]
    for i in range(2):
        texture = 120 + 60 * np.sin(x / (3 + i)) * np.cos(y / 5) + 10 * np.arange(3)[:, None, None]
        data = np.clip(texture, 0, 255).astype(np.uint8)
        with rasterio.open(
            folder / f"im{i}.png", "w", driver="PNG", width=96, height=80, count=3, dtype="uint8"
        ) as ds:
            ds.write(data)
    return folder


def settings(**changes) -> TrainConfig:
    base = TrainConfig(
        steps=3, batch_size=2, patch=32, val_every=2, val_patches=2, val_steps=2, ckpt_every=100
    )
    return replace(base, **changes)


def start(run_dir: Path, images: Path, cfg: TrainConfig, resume: bool = False) -> Trainer:
    return open_run(
        run_dir,
        TINY,
        cfg,
        FolderSource(str(images), cfg.window),
        FolderSource(str(images), cfg.patch),
        {"images": str(images)},
        resume,
    )


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, images) -> Trainer:
    """A finished three-step run, shared by the tests that only read it."""
    trainer = start(tmp_path_factory.mktemp("run"), images, settings())
    with threads(1):
        assert trainer.run()
    return trainer


def test_steps_give_finite_losses_validation_and_a_reference_layout_checkpoint(trained):
    rows = records(trained.run_dir)
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for r in train:
        assert all(math.isfinite(v) for v in r.values())
        assert r["loss"] == pytest.approx(r["denoise"] + r["aux"] + 0.05 * r["contrast"])
    val = [r for r in rows if "val_psnr" in r]
    assert [r["step"] for r in val] == [2, 3]  # every val_every steps, and at the end
    assert all(math.isfinite(r["val_psnr"]) and 0 < r["bicubic_ssim"] <= 1 for r in val)

    checkpoint = torch.load(trained.run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    reference = DiffFuSR(TINY, training=True).state_dict()
    state = checkpoint["state_dict"]
    assert list(state) == list(reference)
    assert all(state[k].shape == reference[k].shape for k in reference)
    assert checkpoint["global_step"] == 3
    args = checkpoint["hyper_parameters"]["lit_model"]["args"]
    assert DiffFuSRConfig.from_lit_args(args) == TINY
    ema, model = "ema.final_conv.block.3.weight", "model.final_conv.block.3.weight"
    assert not torch.equal(state[ema], state[model])  # the EMA lags the trained U-Net


def test_a_stopped_run_resumed_repeats_the_uninterrupted_one_bit_for_bit(tmp_path, images, trained):
    stopped = start(tmp_path, images, settings())
    assert not stopped.run(stop=lambda: stopped.step >= 1)
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["global_step"] == 1
    resumed = start(tmp_path, images, settings(), resume=True)
    assert resumed.step == 1
    assert resumed.run()

    a = torch.load(trained.run_dir / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert a["global_step"] == b["global_step"] == 3
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    moments = [
        (s["exp_avg_sq"], t["exp_avg_sq"])
        for s, t in zip(
            a["optimizer_states"][0]["state"].values(),
            b["optimizer_states"][0]["state"].values(),
            strict=True,
        )
    ]
    assert all(torch.equal(x, y) for x, y in moments)
    assert without_time(records(trained.run_dir)) == without_time(records(tmp_path))


def test_resume_refuses_other_settings_and_a_new_run_refuses_an_old_directory(
    tmp_path, images, trained
):
    with pytest.raises(UserError, match="already holds a run"):
        start(trained.run_dir, images, settings())
    with pytest.raises(UserError, match="lr"):
        start(trained.run_dir, images, settings(lr=2e-4), resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        start(tmp_path, images, settings(), resume=True)


def test_exported_weights_load_into_the_inference_model(trained):
    exported = trained.export()
    assert exported.path == trained.run_dir / WEIGHTS
    state, metadata = load_state_dict(exported.path)
    assert metadata["format"] == "difffusr-sr"
    assert DiffFuSRConfig.from_lit_args(metadata["config"]) == TINY
    assert metadata["window"] == "8"  # the LR side of the 32-pixel training patches
    net = DiffFuSR(TINY)
    net.load_weights(state)
    weights = trained.net.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "folder"], "--images"),
        (["--patch", "30"], "patch 30"),
        (["--patch", "34"], "multiple of"),
        (["--source", "folder", "--images", "/nonexistent/images"], "not found"),
        (["--start", "2023-02-01", "--end", "2023-01-01"], "after"),
        (["--stac", "https://example.invalid/stac"], "--start and --end"),
        (["--steps", "many"], "invalid int"),
        (["--source", "folder", "--images", ".", "--stac", "x"], "--stac"),
        (["--inner-channel", "48"], "multiple of 32"),
        (["--encoder-blocks", "0"], "not a positive integer"),
        (["--device", "nonsense"], "--device nonsense"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert exit_code(["--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and message in err


def exit_code(argv: list[str]) -> int:
    """``main``'s return value, or the code of the SystemExit its argument parser raises."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


def test_cli_trains_on_the_demo_sentinel2_catalog_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--out", str(run), "--steps", "1", *TINY_ARGS]) == 0
    assert (run / WEIGHTS).is_file()
    assert main(["--out", str(run), "--steps", "1", *TINY_ARGS]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["--out", str(run), "--steps", "2", "--resume", *TINY_ARGS]) == 0
    assert [r["step"] for r in records(run) if "loss" in r] == [1, 2]
    data = torch.load(run / CHECKPOINT, weights_only=True)["hyper_parameters"]["data"]
    assert data["source"] == "sentinel2" and data["start"] == "2023-01-01"


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, images, capsys):
    run, finished = tmp_path / "run", threading.Event()

    def interrupt_after_the_first_step() -> None:
        while not finished.wait(0.05):
            if (run / LOG).exists() and (run / LOG).read_text():
                os.kill(os.getpid(), signal.SIGINT)
                return

    threading.Thread(target=interrupt_after_the_first_step, daemon=True).start()
    try:
        code = main(
            [
                "--out",
                str(run),
                "--source",
                "folder",
                "--images",
                str(images),
                "--steps",
                "1000",
                "--val-every",
                "1000",
                *TINY_ARGS,
            ]
        )
    finally:
        finished.set()
    assert code == 130
    step = torch.load(run / CHECKPOINT, weights_only=True)["global_step"]
    assert 1 <= step < 1000 and f"interrupted at step {step}" in capsys.readouterr().err
