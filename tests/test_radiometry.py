"""The radiometric guarantee: exact footprint means, a smooth correction, a bounded reach,
no-data left alone; and the RGB stage's guarantee on a scene the demo weights never saw."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.geo.blocks import map_with_halo
from pipeline.geo.grid import LATTICE
from pipeline.geo.resample import block_mean, upsample_cubic, upsample_nearest
from pipeline.inputs.memory import sentinel_composite
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.radiometry import TAPS, correction_reach, make_consistent
from pipeline.quality.footprints import blockiness


def means(high: np.ndarray, footprint: int) -> np.ndarray:
    return block_mean(np.asarray(high, np.float64)[None], footprint)[0]


def bright_model(native: np.ndarray, footprint: int, seed: int = 0) -> np.ndarray:
    """What a model too bright by 0.05, with structure of its own, makes of ``native``."""
    rng = np.random.default_rng(seed)
    h, w = (n * footprint for n in native.shape)
    y, x = np.mgrid[0:h, 0:w]
    texture = 0.02 * np.sin(x / 3.0) * np.cos(y / 5.0) + 0.01 * rng.standard_normal((h, w))
    return (upsample_cubic(native[None], footprint)[0] + 0.05 + texture).astype(np.float32)


def smooth_native(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    """Reflectance-like native pixels: smooth fields and edges between 0.03 and 0.4."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((shape[0] // 3 + 1, shape[1] // 3 + 1))
    field = upsample_cubic(coarse[None], 3)[0][: shape[0], : shape[1]]
    return (0.03 + 0.37 * np.clip(field, 0, 1)).astype(np.float32)


@pytest.mark.parametrize("footprint", [4, 8, 24])
def test_footprint_means_are_met(footprint: int) -> None:
    rng = np.random.default_rng(footprint)
    random_native = rng.random((7, 5)).astype(np.float32)
    random_high = rng.random((7 * footprint, 5 * footprint)).astype(np.float32)
    native = smooth_native((12, 9))
    for high, target in ((random_high, random_native), (bright_model(native, footprint), native)):
        out = make_consistent(high, target, footprint)
        assert out.dtype == np.float32 and out.shape == high.shape
        assert np.abs(means(out, footprint) - target).max() <= 1e-6
        assert np.abs(means(high, footprint) - target).max() > 0.01  # there was work to do


def test_the_correction_is_smooth_and_no_blockier_than_bicubic() -> None:
    native = smooth_native((30, 36))
    high = bright_model(native, 4)
    out = make_consistent(high, native, 4)
    correction = out.astype(np.float64) - high
    residual = native - means(high, 4)
    # The field crosses footprint edges as it varies inside them: no larger steps there than
    # inside, and less blocky than a bicubic interpolation of the residual ...
    steps = np.abs(np.diff(correction, axis=1))
    edge = np.arange(1, correction.shape[1]) % 4 == 0
    assert steps[:, edge].max() <= 1.01 * steps[:, ~edge].max()
    assert blockiness(correction, 4) < blockiness(upsample_cubic(residual[None], 4)[0], 4)
    # ... where one constant per footprint steps and is flat inside.
    shift = upsample_nearest(residual, 4)
    assert blockiness(shift, 4) == np.inf
    assert blockiness(out, 4) <= blockiness(upsample_cubic(native[None], 4)[0], 4)
    assert blockiness(high + shift, 4) > blockiness(out, 4) + 0.1


def test_no_data_is_left_alone_and_lends_nothing_to_its_neighbours() -> None:
    native = smooth_native((18, 24))
    valid = np.ones(native.shape, bool)
    valid[5:11, 8:15] = False  # a hole of no-data: native filled with 0 ...
    native = np.where(valid, native, np.float32(0))
    high = bright_model(native, 8)
    hole = upsample_nearest(~valid, 8)
    garbage = np.where(hole, np.float32(0.6), high)  # ... and anything from the model there
    nan = np.where(hole, np.float32(np.nan), high)
    outs = [make_consistent(x, native, 8, valid) for x in (high, garbage, nan)]
    for out in outs:
        assert np.abs(means(out, 8) - native)[valid].max() <= 1e-6
        assert np.array_equal(outs[0][~hole], out[~hole])  # the hole's content plays no part
    assert np.isnan(outs[2][hole]).all() and np.isfinite(outs[2][~hole]).all()
    # Unmasked, the hole's residual spreads into valid footprints near it (still exact).
    spread = make_consistent(garbage, native, 8)
    assert np.abs(spread - outs[1])[~hole].max() > 0.01
    assert np.abs(means(spread, 8) - native).max() <= 1e-6
    # NaN in the native values marks no-data too.
    nan_native = np.where(valid, native, np.float32(np.nan))
    assert np.array_equal(make_consistent(high, nan_native, 8)[~hole], outs[0][~hole])


def test_a_dark_scene_under_a_bright_model_is_not_corrected_below_zero() -> None:
    """Water at 0.01 under a model output of 0.3–0.6: subtracting the residual would leave
    negative reflectance, which storage clips; those footprints are flattened instead."""
    rng = np.random.default_rng(2)
    native = np.full((6, 8), 0.01, np.float32)
    native[2:4, 3:6] = 0.3
    high = (0.3 + 0.3 * rng.random((24, 32))).astype(np.float32)
    out = make_consistent(high, native, 4)
    assert out.min() >= 0 and out.min() < 1e-6  # reached 0 where it had to, not below
    assert np.abs(means(out, 4) - native).max() <= 1e-6
    assert np.ptp(out[8:16, 12:24]) > 0.1  # the bright footprints keep the model's detail


def _tile_function(footprint: int):
    """A block function of (native, model input) at native resolution: a model that works
    footprint by footprint (no halo of its own), then the correction."""

    def run(block: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        model = upsample_nearest(block[1], footprint) * np.float32(1.2) + np.float32(0.01)
        return make_consistent(model, block[0], footprint)[None]

    return run


@pytest.mark.parametrize("footprint", [4, 24])
def test_blocks_with_the_reach_as_halo_equal_the_whole_array(footprint: int) -> None:
    rng = np.random.default_rng(5)
    native = smooth_native((40, 44))
    data = np.stack([native, native + 0.02 * rng.random(native.shape, np.float32)])
    whole = _tile_function(footprint)(data, (0, 0))
    reach = correction_reach(1)  # in native pixels, the array's own
    assert reach == TAPS + 1
    lazy = map_with_halo(
        da.from_array(data, chunks=(2, 13, 15)), _tile_function(footprint), reach, footprint, 1
    )
    np.testing.assert_array_equal(lazy.compute(scheduler="single-threaded"), whole)
    short = map_with_halo(
        da.from_array(data, chunks=(2, 13, 15)), _tile_function(footprint), reach - 1, footprint, 1
    )
    assert not np.array_equal(short.compute(scheduler="single-threaded"), whole)


@pytest.fixture(scope="module")
def unseen_rgb() -> np.ndarray:
    """A scene the demo weights never saw: a held-out demo patch (eastern strip), mirrored
    and transposed, 40 % brighter, with a corner of no-data (0, as the pipeline fills it)."""
    image = sentinel_composite(
        str(DEMO_CATALOG),
        read_aoi(str(DEMO_AOI)),
        *DEMO_DATES,
        ("B04", "B03", "B02"),
        lattice=LATTICE,
    ).image
    patch = image[:, 60:76, -20:-4][:, ::-1].transpose(0, 2, 1) * np.float32(1.4)
    assert np.isfinite(patch).all()
    patch = np.ascontiguousarray(patch, dtype=np.float32)
    patch[:, :3, :5] = 0
    return patch


def test_difffusr_keeps_the_input_radiometry_on_an_unseen_scene(unseen_rgb) -> None:
    """The shipped demo weights, off their training data: with the guarantee every band of
    every 10 m pixel with data averages back to the input; without it they drift."""
    rgb = unseen_rgb
    valid = (rgb != 0).any(axis=0)
    model = DiffFuSRRGB(steps=2, device="cpu")
    assert model.consistent and model.halo == model.window + correction_reach(1)
    out = model(rgb, (0, 0))
    raw = DiffFuSRRGB(steps=2, device="cpu", consistent=False)(rgb, (0, 0))
    for band in range(3):
        error = np.abs(means(out[band], 4) - rgb[band])
        assert error[valid].max() <= 1e-5
    drift = np.abs(block_mean(raw.astype(np.float64), 4) - rgb)[:, valid]
    assert drift.max() > 1e-3
    # The correction is all that differs: the same samples, averaged back to the input.
    correction = out.astype(np.float64) - raw
    assert (
        np.abs(block_mean(correction, 4) - (rgb - block_mean(raw.astype(np.float64), 4)))[
            :, valid
        ].max()
        <= 1e-5
    )
    assert abs(blockiness(correction[:, 16:, 24:], 4)) < 0.2
