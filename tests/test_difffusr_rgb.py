"""DiffFuSR as the pipeline's RGB model: position-seeded noise, windows, seams, samples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.models import get_fusion_model, get_rgb_model
from pipeline.models.diffusion.noise import position_noise
from pipeline.models.diffusion.rgb import DiffFuSRRGB, _lattice, _profile, device_defaults
from pipeline.models.superresolve import SuperResolver
from pipeline.run.plan import RegionRequest, plan_region

WEIGHTS = str(Path(__file__).parent / "fixtures" / "difffusr" / "sr_small.ckpt")
FAST = {"weights": WEIGHTS, "steps": 3, "window": 16, "overlap": 4, "batch": 4, "device": "cpu"}


def _rgb(seed: int = 3, h: int = 24, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.random((3, h // 4, w // 4)).repeat(4, 1).repeat(4, 2)
    return (0.05 + 0.3 * smooth + 0.02 * rng.random((3, h, w))).astype(np.float32)


def test_noise_is_a_function_of_the_global_position() -> None:
    whole = position_noise(7, 0, 3, -40, 100, 64, 64)
    part = position_noise(7, 0, 3, -30, 120, 16, 20)
    assert np.array_equal(whole[:, 10:26, 20:40], part)
    assert not np.allclose(position_noise(8, 0, 3, -30, 120, 16, 20), part)
    assert not np.allclose(position_noise(7, 1, 3, -30, 120, 16, 20), part)
    assert abs(whole.mean()) < 0.05 and abs(whole.std() - 1) < 0.05
    assert whole.dtype == np.float32


def test_registered_and_reproducible() -> None:
    model = get_rgb_model("difffusr", **FAST)
    assert model.name == "difffusr" and len(model.weights_sha256) == 64
    rgb = _rgb()
    first = model(rgb, (100, 200))
    assert first.shape == (3, 96, 160) and first.dtype == np.float32
    assert np.array_equal(first, model(rgb, (100, 200)))
    assert not np.array_equal(first, model(rgb, (100, 201)))  # the noise follows the pixel


@pytest.mark.parametrize("origin", [0, 5, -13, 1000])
@pytest.mark.parametrize("n", [1, 7, 16, 17, 24, 25, 100])
def test_lattice_windows_cover_the_block_with_weights_summing_to_one(n: int, origin: int) -> None:
    window, overlap = 16, 4
    starts = _lattice(origin, n, window, overlap)
    assert starts[0] <= 0 < starts[0] + window and starts[-1] < n <= starts[-1] + window
    assert all((origin + s + overlap) % (window - 2 * overlap) == 0 for s in starts)
    total = torch.zeros((starts[-1] - starts[0] + window) * 4)
    for i, s in enumerate(starts):
        at = 4 * (s - starts[0])
        total[at : at + 4 * window] += _profile(i, len(starts), window, overlap)
    torch.testing.assert_close(total, torch.ones_like(total))


def test_samples_give_mean_and_spread() -> None:
    rgb = _rgb()
    model = DiffFuSRRGB(**{**FAST, "samples": 3})
    mean, spread = model.sample(rgb, (0, 0))
    one = [DiffFuSRRGB(**{**FAST, "seed": s})(rgb, (0, 0)) for s in range(3)]
    np.testing.assert_allclose(mean, np.mean(one, axis=0), atol=1e-5)
    np.testing.assert_allclose(spread, np.std(one, axis=0), atol=1e-5)
    assert spread.mean() > 0


def test_bad_options_fail_clearly() -> None:
    with pytest.raises(ValueError, match="precision"):
        DiffFuSRRGB(**{**FAST, "precision": "int8"})
    with pytest.raises(ValueError, match="overlap"):
        DiffFuSRRGB(**{**FAST, "overlap": 8})


def test_blocks_in_a_dask_graph_are_deterministic_and_carry_the_spread() -> None:
    """Through the halo wrapper, twice, with different block sizes: same halo noise."""
    resolver = SuperResolver(
        get_rgb_model("difffusr", **{**FAST, "samples": 2}), get_fusion_model("bicubic")
    )
    assert resolver.uncertainty and resolver.out_channels == 15
    rng = np.random.default_rng(0)
    bands = (0.05 + 0.2 * rng.random((12, 48, 48))).astype(np.float32)
    lazy = resolver.apply(
        da.from_array(bands, chunks=(12, 24, 24)), block_size=24, offset=(1000, -2000)
    )
    first = lazy.compute(scheduler="single-threaded")
    assert first.shape == (15, 192, 192) and np.isfinite(first).all()
    again = resolver.apply(
        da.from_array(bands, chunks=(12, 24, 24)), block_size=24, offset=(1000, -2000)
    ).compute(scheduler="threads")
    assert np.array_equal(first, again)
    assert (first[12:] >= 0).all() and first[12:].mean() > 0


def test_windows_of_fill_only_are_not_sampled() -> None:
    """Zero is the fill of no-data pixels: an all-zero window costs nothing and stays 0."""
    rgb = _rgb(h=32, w=48)
    rgb[:, :, 24:] = 0  # the last window (columns 24..40 and beyond) holds fill only
    model = DiffFuSRRGB(**FAST)
    out = model(rgb, (0, 0))
    assert (out[:, :, 4 * 36 :] == 0).all()
    assert (out[:, :, : 4 * 20] != 0).any()


def test_neighbouring_blocks_agree_where_their_tiles_meet() -> None:
    """Two blocks, each a tile plus the model's halo, sample the pixels around their shared
    tile edge alike: the windows there are the same in both (lattice, conditioning, noise).
    The sampler's own halo: without the consistency correction, which adds its reach."""
    model = DiffFuSRRGB(**FAST, consistent=False)
    assert model.halo == FAST["window"]
    rgb = _rgb(h=24, w=64)  # tiles of 32 columns, meeting at column 32; halo 16
    left, right = model(rgb[:, :, :48], (7, 0)), model(rgb[:, :, 16:], (7, 16))
    other_seed = DiffFuSRRGB(**{**FAST, "seed": 1, "consistent": False})(rgb[:, :, :48], (7, 0))
    near = slice(4 * 24, 4 * 40)  # 8 columns either side of the edge
    gap = np.abs(left[:, :, near] - right[:, :, 4 * 8 : 4 * 24])
    assert gap.mean() < 0.02 * np.abs(left - other_seed)[:, :, near].mean()
    assert gap.max() < 0.05


def test_the_window_defaults_to_the_one_the_weights_were_trained_on() -> None:
    """The shipped demo model learnt on 16-pixel LR patches; on 64-pixel windows its output
    drifts far off in brightness, so its file records the window to use."""
    assert DiffFuSRRGB(device="cpu").window == 16
    assert DiffFuSRRGB(weights=WEIGHTS, device="cpu").window == 64  # the reference records none


def test_precision_and_overlap_follow_the_device_unless_given() -> None:
    """auto: fp32 and an eighth of the window on a CPU, recorded nowhere (the defaults
    products always had); bf16 and a 2-pixel overlap on a GPU, recorded in the recipe."""
    cpu = DiffFuSRRGB(**{**FAST, "overlap": None})
    assert (cpu.precision, cpu.overlap) == ("fp32", 2)
    assert cpu.cuda_defaults(given=()) == {"precision": "bf16", "overlap": 2}
    assert cpu.cuda_defaults(given={"overlap": 4}) == {"precision": "bf16"}
    assert DiffFuSRRGB(**{**FAST, "precision": "bf16"}).precision == "bf16"
    assert device_defaults(True, 64) == {"precision": "bf16", "overlap": 2}
    assert device_defaults(True, 8) == {"precision": "bf16", "overlap": 1}
    assert device_defaults(False, 64) == {"precision": "fp32", "overlap": 8}


@pytest.mark.parametrize(
    ("device", "resolved"),
    [
        ("cuda", {"precision": "bf16", "overlap": 2}),
        ("cpu", {}),
    ],
)
def test_a_runner_without_a_gpu_fixes_what_the_gpus_will_sample_with(device, resolved) -> None:
    """Planned on a CPU for CUDA workers, the model keeps the GPU's defaults on its way to
    the workers, and the recipe records them; planned for CPUs, the recipe is as it was."""
    request = RegionRequest(
        read_aoi(str(DEMO_AOI)),
        *DEMO_DATES,
        str(DEMO_CATALOG),
        rgb_model="difffusr",
        rgb_options={"device": device},
    )
    plan = plan_region(request)
    rgb = plan.resolver.rgb
    assert rgb.device == "cpu"  # checked on the runner's CPU either way
    expected = resolved or {"precision": "fp32", "overlap": rgb.window // 8}
    worker = replace(rgb, device="cpu")  # as SuperResolver.on rebuilds it on a worker
    assert {k: getattr(worker, k) for k in expected} == expected
    recipe = plan.provenance()["recipe"]["rgb_model_options"]
    assert recipe == {**resolved, "consistent": True}  # the correction is always recorded
