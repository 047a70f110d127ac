"""Wald-protocol training of the fusion networks: degradation, windows, runs, resume, the CLI."""

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import scipy.ndimage
import torch
from rasterio.windows import from_bounds

from flows.train_fusion import main
from pipeline.demo import DEMO_CATALOG
from pipeline.errors import UserError
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import REFLECTANCE_BANDS
from pipeline.geo.grid import LATTICE
from pipeline.geo.resample import block_mean
from pipeline.inputs.memory import sentinel_composite
from pipeline.models.fusion.network import FUSION_GROUPS_BY_RESOLUTION
from pipeline.models.fusion.weights import load_fusion_network
from pipeline.protocol.sensor import degradation_taps, degrade
from pipeline.train.fusion import (
    FusionTrainConfig,
    FusionTrainer,
    FusionWaldData,
    NetworkSize,
    open_fusion_run,
    wald_batch,
)
from pipeline.train.runs import CHECKPOINT, LOG, WEIGHTS
from pipeline.train.sources import TrainingDataError

DEMO_AOI = Path(__file__).resolve().parents[1] / "examples" / "demo.geojson"
DATES = (date(2023, 1, 1), date(2023, 1, 31))
TINY = NetworkSize(features=4, blocks=1, growth=4, residual=True)
TINY_ARGS = [
    "--features",
    "4",
    "--blocks",
    "1",
    "--growth",
    "4",
    "--batch-size",
    "2",
    "--patch-10m",
    "16",
    "--patch-20m",
    "16",
    "--val-patches",
    "2",
    "--threads",
    "1",
]


@contextmanager
def one_thread() -> Iterator[None]:
    """Bit-identical results need the same thread count in the runs compared; one thread is
    also the fastest for these tiny networks on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def single_threaded() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="module")
def composite():
    return sentinel_composite(
        str(DEMO_CATALOG), read_aoi(str(DEMO_AOI)), *DATES, REFLECTANCE_BANDS, lattice=LATTICE
    )


def settings(**changes) -> FusionTrainConfig:
    base = FusionTrainConfig(
        steps=4,
        batch_size=2,
        patch_10m=16,
        patch_20m=16,
        val_every=2,
        val_patches=2,
        ckpt_every=100,
    )
    return replace(base, **changes)


def start(run_dir: Path, composite, cfg: FusionTrainConfig, resume: bool = False) -> FusionTrainer:
    data = FusionWaldData(composite.image, cfg, 0.25)
    return open_fusion_run(run_dir, TINY, cfg, data, {"aoi": str(DEMO_AOI)}, resume)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LOG).read_text().splitlines()]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


# --- degradation ----------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [4, 8, 24])
def test_degrade_keeps_a_constant_constant_and_divides_the_size(ratio):
    x = torch.full((2, 3, 48, 48), 0.2371)
    out = degrade(x, ratio)
    assert out.shape == (2, 3, 48 // ratio, 48 // ratio)
    torch.testing.assert_close(out, torch.full_like(out, 0.2371))
    assert float(degradation_taps(ratio).sum()) == pytest.approx(1, abs=1e-6)


def test_degrade_is_the_blur_then_the_block_mean_of_its_footprint():
    x = torch.rand(1, 2, 48, 48, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(degrade(x, 8, sigma=0)[0], block_mean(x[0].numpy(), 8), atol=1e-6)
    s = 0.39 * 8
    radius = math.ceil(3 * s)
    blurred = scipy.ndimage.gaussian_filter(
        x[0].double().numpy(), sigma=(0, s, s), mode="nearest", radius=(0, radius, radius)
    )
    np.testing.assert_allclose(degrade(x, 8, sigma=0.39)[0], block_mean(blurred, 8), atol=1e-6)

    impulse = torch.zeros(1, 1, 48, 48)
    impulse[0, 0, 20, 27] = 1.0  # inside LR pixel (2, 3) of the ×8 grid
    sharp, blurred = degrade(impulse, 8, sigma=0)[0, 0], degrade(impulse, 8)[0, 0]
    assert torch.nonzero(sharp).tolist() == [[2, 3]] and float(sharp[2, 3]) == 1 / 64
    assert blurred[2, 3] == blurred.max() and (blurred > 0).sum() > 1  # spreads to neighbours
    assert float(blurred.sum()) == pytest.approx(1 / 64, rel=1e-5)  # and keeps the energy


@pytest.mark.parametrize("resolution", [10, 20, 60])
def test_wald_batch_shapes_and_a_constant_scene(resolution):
    g = FUSION_GROUPS_BY_RESOLUTION[resolution]
    patch = 24
    scene = np.full((3, 12, patch * g.ratio_10m, patch * g.ratio_10m), 0.125, np.float32)
    batch = wald_batch(scene, g, sigma=0.39)
    assert batch.guide.shape == (3, 3, patch, patch)
    assert batch.ms.shape == (3, len(g.inputs), patch, patch)
    assert batch.target.shape == (3, len(g.outputs), patch, patch)
    for t in (batch.guide, batch.ms, batch.target, batch.baseline(g)):
        torch.testing.assert_close(t, torch.full_like(t, 0.125))


def test_block_mean_of_the_composite_is_the_native_20m_grid(composite):
    """The composite's bounds are on the scenes' 60 m lattice, so each native 20 m pixel is a
    2 × 2 block of it; the demo ground never changes, so clear native pixels are its values."""
    item = pystac.read_file(
        str(
            DEMO_CATALOG.parent
            / "sentinel-2-l2a-demo"
            / "S2_L2A_DEMO_20230110_N0301"
            / "S2_L2A_DEMO_20230110_N0301.json"
        )
    )
    folder = Path(item.get_self_href()).parent
    with rasterio.open(folder / "B11.tif") as ds:
        window = from_bounds(*composite.bounds, ds.transform)
        assert window.col_off == int(window.col_off) and window.row_off == int(window.row_off)
        native = ds.read(1, window=window).astype(np.float32) / 10000  # baseline 03.01
    with rasterio.open(folder / "SCL.tif") as ds:
        clear = np.isin(ds.read(1, window=window), (4, 5, 6))
    recovered = block_mean(composite.image[[REFLECTANCE_BANDS.index("B11")]], 2)[0]
    seen = clear & np.isfinite(recovered)
    assert seen.mean() > 0.5
    np.testing.assert_allclose(recovered[seen], native[seen], atol=1e-6)


# --- windows --------------------------------------------------------------------------------


def test_validation_windows_never_touch_training_columns(composite):
    cfg = settings()
    data = FusionWaldData(composite.image, cfg, 0.25)
    width = composite.image.shape[2]
    assert data.cut % 6 == 0 and abs(data.cut - 0.75 * width) <= 3
    rng = np.random.default_rng(0)
    for g in cfg.selected:
        k, p = g.ratio_10m, cfg.patch(g)
        train = data.windows(g, "train", 300, rng)
        assert ((train[:, 1] + p) * k <= data.cut).all()
        assert np.isfinite(data.footprints(g, train, p)).all()
        if data.has_windows(g, "test"):
            test = data.windows(g, "test", 300, rng)
            assert (test[:, 1] * k >= data.cut).all() and ((test[:, 1] + p) * k <= width).all()
            assert np.isfinite(data.footprints(g, test, p)).all()
    # the demo is 2.6 km wide: its eastern quarter holds no 24 × 60 m window
    assert data.has_windows(FUSION_GROUPS_BY_RESOLUTION[20], "test") and not data.has_windows(
        FUSION_GROUPS_BY_RESOLUTION[60], "test"
    )


def test_a_group_without_a_training_window_is_refused_by_name(composite):
    with pytest.raises(TrainingDataError, match="the 60 m group has no clear 48 px window"):
        FusionWaldData(composite.image, settings(patch_60m=48), 0.25)
    with pytest.raises(ValueError, match="multiple of 24"):
        settings(patch_60m=36)


# --- runs -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, composite) -> FusionTrainer:
    """A finished four-step run of all three groups, shared by the tests that only read it."""
    trainer = start(tmp_path_factory.mktemp("run"), composite, settings())
    with one_thread():
        assert trainer.run()
    return trainer


def test_a_run_logs_finite_losses_and_ergas_and_checkpoints(trained):
    rows = records(trained.run_dir)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for r in steps for v in r.values())
    assert {"loss_10m", "loss_20m", "loss_60m"} <= steps[0].keys()
    val = [r for r in rows if "loss" not in r]
    assert [r["step"] for r in val] == [2, 4]
    assert {"ergas_10m", "bilinear_ergas_10m", "ergas_20m", "bilinear_ergas_20m"} <= val[0].keys()
    assert "ergas_60m" not in val[0]  # nothing held out for it on the demo
    assert all(v > 0 and math.isfinite(v) for r in val for v in r.values())
    checkpoint = torch.load(trained.run_dir / CHECKPOINT, weights_only=True)
    assert checkpoint["global_step"] == 4 and len(checkpoint["optimizer_states"]) == 3
    assert checkpoint["hyper_parameters"]["network"] == {
        "features": 4,
        "blocks": 1,
        "growth": 4,
        "residual": True,
    }


def test_exported_weights_load_with_load_fusion_network(trained):
    exported = trained.export()
    assert exported.path == trained.run_dir / WEIGHTS
    net, metadata = load_fusion_network(exported.path)
    assert (net.features, net.blocks, net.growth, net.residual) == (4, 1, 4, True)
    assert json.loads(metadata["steps"]) == 4
    assert metadata["trained_groups"] == [10, 20, 60]
    assert metadata["data"] == {"aoi": str(DEMO_AOI)}
    weights = trained.net.state_dict()
    assert all(torch.equal(v, weights[k]) for k, v in net.state_dict().items())


def test_a_stopped_run_resumed_repeats_the_uninterrupted_one_bit_for_bit(
    tmp_path, composite, trained
):
    stopped = start(tmp_path, composite, settings())
    assert not stopped.run(stop=lambda: stopped.step >= 2)
    resumed = start(tmp_path, composite, settings(), resume=True)
    assert resumed.step == 2
    assert resumed.run()
    a = torch.load(trained.run_dir / CHECKPOINT, weights_only=True)
    b = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for before, after in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for s, t in zip(before["state"].values(), after["state"].values(), strict=True):
            assert torch.equal(s["exp_avg_sq"], t["exp_avg_sq"])
    assert without_time(records(trained.run_dir)) == without_time(records(tmp_path))


def test_resume_refuses_other_settings_and_a_new_run_an_old_directory(tmp_path, composite, trained):
    with pytest.raises(UserError, match="already holds a run"):
        start(trained.run_dir, composite, settings())
    with pytest.raises(UserError, match="train lr = 0.0001, not 0.0002"):
        start(trained.run_dir, composite, settings(lr=2e-4), resume=True)
    with pytest.raises(UserError, match="groups"):
        start(trained.run_dir, composite, settings(groups=(10, 20)), resume=True)
    with pytest.raises(UserError, match="nothing to resume"):
        start(tmp_path, composite, settings(), resume=True)


# --- the command line -----------------------------------------------------------------------


def exit_code(argv: list[str]) -> int:
    """``main``'s return value, or the code of the SystemExit its argument parser raises."""
    try:
        return main(argv)
    except SystemExit as exit:
        return exit.code


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--groups", "30"], "invalid choice"),
        (["--patch-60m", "30"], "multiple of 24"),
        (["--patch-20m", "0"], "not a positive integer"),
        (["--features", "6"], "multiple of 4"),
        (["--steps", "0"], "steps must be at least 1"),
        (["--test-fraction", "1.5"], "--test-fraction"),
        (["--start", "2023-02-01", "--end", "2023-01-01"], "after"),
        (["--stac", "https://example.invalid/stac"], "--start and --end"),
        (["--device", "nonsense"], "--device nonsense"),
        (["--patch-60m", "48"], "60 m group"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert exit_code(["--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and message in err


def test_cli_trains_on_the_demo_catalog_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--out", str(run), "--groups", "20", "10", *TINY_ARGS]
    assert main([*args, "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert f"--fusion-model difffusr-fusion --fusion-weights {run / WEIGHTS}" in out
    assert "60 m network(s) keep their initial weights" in out
    _, metadata = load_fusion_network(run / WEIGHTS)
    assert metadata["trained_groups"] == [10, 20]
    assert main([*args, "--steps", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--steps", "2", "--resume"]) == 0
    assert [r["step"] for r in records(run) if "loss" in r] == [1, 2]
    data = torch.load(run / CHECKPOINT, weights_only=True)["hyper_parameters"]["data"]
    assert data["start"] == "2023-01-01" and data["epsg"] == 32719
    assert data["stac"] == data["aoi"] == "demo"  # not this checkout's paths
