"""OpenSR-test and fusion metrics: reference numbers, hand-checkable cases, pixel maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.quality import (
    HALLUCINATION,
    IMPROVEMENT,
    NOT_ASSESSED,
    OMISSION,
    fusion_metrics,
    opensr_metrics,
)

SCALE = 4


def _texture(bands: int, rows: int, cols: int) -> np.ndarray:
    """A deterministic 'scene' in [0, 0.4]: hashed noise, blurred, over smooth gradients.

    Integer hashing instead of a random generator keeps the reference numbers below valid
    whatever the random-number streams of future library versions.
    """
    c, i, j = np.indices((bands, rows, cols), dtype=np.uint32)
    h = (i * np.uint32(73856093)) ^ (j * np.uint32(19349663)) ^ (c * np.uint32(83492791))
    h ^= h >> np.uint32(13)
    h *= np.uint32(0x5BD1E995)
    h ^= h >> np.uint32(15)
    noise = h / 2.0**32
    kernel = np.array([1, 4, 6, 4, 1]) / 16
    for axis in (1, 2):
        for _ in range(2):
            noise = np.apply_along_axis(np.convolve, axis, noise, kernel, mode="same")
    fine = (noise - noise.min()) / (noise.max() - noise.min())
    coarse = 0.5 + 0.5 * np.sin(2 * np.pi * (i / 57 + c / 5)) * np.cos(2 * np.pi * j / 43)
    return (0.4 * (0.5 * fine + 0.5 * coarse)).astype(np.float32)


def _resize(x: np.ndarray, factor: float, mode: str) -> np.ndarray:
    out = F.interpolate(torch.from_numpy(x)[None], scale_factor=factor, mode=mode, antialias=True)
    return out[0].numpy()


def _down(x: np.ndarray) -> np.ndarray:
    return _resize(x, 1 / SCALE, "bilinear")


def _bicubic(x: np.ndarray) -> np.ndarray:
    return _resize(x, SCALE, "bicubic")


# The spec's worked example recipe (HR 4×256×256 in [0, 0.4], LR = down(HR), SR = bicubic ×4
# of LR) on the scene above, and three more cases, as computed by opensr-test 1.3.3 with its
# default configuration.
HR = _texture(4, 256, 256)
LR = _down(HR)
CANVAS = _texture(4, 272, 272)
REFERENCE = {
    "bicubic": {
        "reflectance": 0.0034850279334932566,
        "spectral": 0.8789592385292053,
        "spatial": 0.0,
        "synthesis": 0.005451731383800507,
        "ha_metric": 0.13515079021453857,
        "om_metric": 0.6018372178077698,
        "im_metric": 0.26301196217536926,
    },
    "nodata": {
        "reflectance": 0.0034850279334932566,
        "spectral": 0.8789592385292053,
        "spatial": 0.0,
        "synthesis": 0.005490409675985575,
        "ha_metric": 0.13632944226264954,
        "om_metric": 0.5996775031089783,
        "im_metric": 0.2639930844306946,
    },
    "shifted": {
        "reflectance": 0.03430762514472008,
        "spectral": 5.249188423156738,
        "spatial": 0.8988881707191467,
        "synthesis": 0.009787308983504772,
        "ha_metric": 0.07754901051521301,
        "om_metric": 0.07485402375459671,
        "im_metric": 0.8475970029830933,
    },
    "noise": {
        "reflectance": 0.03260449320077896,
        "spectral": 8.657402038574219,
        "spatial": math.nan,
        "synthesis": 0.03367052599787712,
        "ha_metric": 0.98171067237854,
        "om_metric": 0.011073472909629345,
        "im_metric": 0.007215854711830616,
    },
}


def _case(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lr, sr, hr) of a named reference case."""
    if name in ("bicubic", "nodata"):
        hr = HR.copy()
        if name == "nodata":  # one band missing on a 10×10 patch
            hr[1, 50:60, 50:60] = np.nan
        return LR, _bicubic(LR), hr
    hr = CANVAS[:, 4:260, 4:260]
    if name == "shifted":  # 3 and 2 HR pixels off, brighter: harmonisation must undo both
        return _down(hr), 1.1 * CANVAS[:, 7:263, 6:262] + np.float32(0.01), hr
    noise = CANVAS[::-1, ::-1].copy()  # the scene's texture, unrelated
    return _down(hr), noise[:, :256, :256], hr


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_same_numbers_as_opensr_test(name: str) -> None:
    got = opensr_metrics(*_case(name)).as_opensr_dict()
    for key, expected in REFERENCE[name].items():
        if math.isnan(expected):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(expected, abs=1e-4), key


# Pixel counts per class code (NOT_ASSESSED, IMPROVEMENT, OMISSION, HALLUCINATION) of the
# reference cases' correctness maps inside the border, as opensr-test 1.3.3 classifies them.
CLASS_COUNTS = {
    "bicubic": [35787, 3056, 10404, 929],
    "nodata": [35757, 3102, 10371, 946],
    "shifted": [35206, 14375, 221, 374],
    "noise": [127, 154, 271, 49624],
}


@pytest.mark.parametrize("name", sorted(CLASS_COUNTS))
def test_same_class_map_as_opensr_test(name: str) -> None:
    classes = opensr_metrics(*_case(name)).maps["correctness"][16:-16, 16:-16]
    assert np.bincount(classes.ravel() + 1, minlength=4).tolist() == CLASS_COUNTS[name]


def test_worked_example_reads_as_the_spec_says() -> None:
    """Bicubic adds no detail: consistent with LR, well aligned, omission dominates."""
    got = opensr_metrics(*_case("bicubic"))
    assert got.reflectance < 0.01 and got.spectral < 2 and got.spatial == 0
    assert got.omission > max(got.improvement, got.hallucination)
    assert got.improvement + got.omission + got.hallucination == pytest.approx(1, abs=1e-6)


def test_identity_sr() -> None:
    """SR = HR: consistent with its own downsampling, and every judged pixel an improvement.

    With d_im = 0 and d_om = d_ref the scores are IM = 0, OM = HA = 1, so the improvement
    probability is exactly 1 / (1 + 2·e^(−1/T)) with T = 0.25 on every judged pixel, and the
    judged pixels are those above the 75th percentile of d_ref.
    """
    exact = opensr_metrics(LR, HR, HR, border=0)
    assert exact.reflectance < 1e-6 and exact.spectral < 0.05 and exact.spatial == 0

    got = opensr_metrics(LR, HR, HR)
    assert got.improvement == pytest.approx(1 / (1 + 2 * math.exp(-4)), abs=1e-5)
    assert got.hallucination == pytest.approx(got.omission, abs=1e-7)
    classes = got.maps["correctness"][16:-16, 16:-16]
    judged = classes != NOT_ASSESSED
    assert judged.sum() == classes.size - int(0.75 * classes.size)
    assert (classes[judged] == IMPROVEMENT).all()


def test_constant_offset() -> None:
    """SR = HR + δ: reflectance consistency is δ; histogram matching removes δ for synthesis."""
    offset = np.float32(0.01)
    plain = opensr_metrics(LR, HR, HR, border=0)
    brighter = opensr_metrics(LR, HR + offset, HR, border=0)
    assert brighter.reflectance == pytest.approx(offset, abs=1e-6)
    assert np.nanmax(np.abs(brighter.maps["reflectance"] - offset)) < 1e-6
    assert brighter.spatial == 0
    assert brighter.synthesis == pytest.approx(plain.synthesis, abs=1e-6)
    assert brighter.improvement == pytest.approx(plain.improvement, abs=1e-6)


@pytest.mark.parametrize(("dy", "dx"), [(4, 8), (2, 6), (-3, 1)])
def test_pure_shift_is_recovered_in_lr_pixels(dy: int, dx: int) -> None:
    hr = CANVAS[:, 8:264, 8:264]
    sr = CANVAS[:, 8 + dy : 264 + dy, 8 + dx : 264 + dx]
    got = opensr_metrics(_down(hr), sr, hr)
    assert got.spatial == pytest.approx(math.hypot(dy, dx) / SCALE, abs=0.03)


def test_shift_beyond_five_lr_pixels_is_not_a_measurement() -> None:
    sr = np.roll(HR, 6 * SCALE, axis=2)
    assert math.isnan(opensr_metrics(LR, sr, HR).spatial)


def test_maps_line_up_with_the_inputs() -> None:
    lr, sr, hr = _case("shifted")
    got = opensr_metrics(lr, sr, hr)
    cut = 16 // SCALE
    for name, value in (("reflectance", got.reflectance), ("spectral", got.spectral)):
        layer = got.maps[name]
        assert layer.shape == lr.shape[1:] and layer.dtype == np.float32
        assert np.isnan(layer[:cut]).all() and np.isnan(layer[:, -cut:]).all()
        assert np.isfinite(layer[cut:-cut, cut:-cut]).all()
        assert float(np.nanmean(layer)) == pytest.approx(value, rel=1e-5)
    classes = got.maps["correctness"]
    assert classes.shape == hr.shape[1:] and classes.dtype == np.int8
    assert (classes[:16] == NOT_ASSESSED).all() and (classes[:, -16:] == NOT_ASSESSED).all()
    assert set(np.unique(classes)) <= {NOT_ASSESSED, IMPROVEMENT, OMISSION, HALLUCINATION}


@pytest.mark.parametrize(
    ("lr", "sr", "hr", "kwargs"),
    [
        (LR, HR[:, :-4], HR, {}),  # sr and hr differ
        (LR[:, :-1], HR, HR, {}),  # not an integer scale
        (LR[:2], HR, HR, {}),  # band counts differ
        (LR, HR, HR, {"border": 6}),  # border not a whole number of LR pixels
        (LR, HR, HR, {"rgb_bands": (2, 3, 4)}),  # no band 4
    ],
)
def test_inputs_that_do_not_fit_are_refused(lr, sr, hr, kwargs) -> None:
    with pytest.raises(ValueError):
        opensr_metrics(lr, sr, hr, **kwargs)


def _checkerboard(low: float, high: float) -> np.ndarray:
    return np.where(np.indices((16, 16)).sum(axis=0) % 2, high, low)


def test_fusion_metrics_of_identical_images() -> None:
    truth = HR[:, :32, :32]
    got = fusion_metrics(truth.copy(), truth, ratio=0.25)
    assert got.mean["psnr"] == math.inf and got.mean["mse"] == 0 and got.mean["ergas"] == 0
    for name in ("r2", "cross_correlation", "ssim"):
        assert got.mean[name] == pytest.approx(1, abs=1e-9), name
        assert got.bands[name].shape == (4,)


def test_fusion_metrics_by_hand() -> None:
    """Two checkerboards (variance 0.01, means 0.5 and 0.3), predicted +0.05 and −0.06 off."""
    truth = np.stack([_checkerboard(0.4, 0.6), _checkerboard(0.2, 0.4)])
    prediction = truth + np.array([0.05, -0.06])[:, None, None]
    got = fusion_metrics(prediction, truth, ratio=0.25)
    np.testing.assert_allclose(got.bands["mse"], [0.0025, 0.0036])
    np.testing.assert_allclose(got.bands["psnr"], 10 * np.log10(1 / np.array([0.0025, 0.0036])))
    np.testing.assert_allclose(got.bands["r2"], [0.75, 0.64])
    np.testing.assert_allclose(got.bands["cross_correlation"], [1, 1])
    # RMSE/μ is 0.1 and 0.2: per band 100·¼·0.1 and 100·¼·0.2, overall 25·√((0.01 + 0.04)/2).
    np.testing.assert_allclose(got.bands["ergas"], [2.5, 5.0])
    assert got.mean["ergas"] == pytest.approx(25 * math.sqrt(0.025))
    assert got.mean["mse"] == pytest.approx(0.00305)
    assert (got.bands["ssim"] < 1).all()


def test_fusion_metrics_conventions() -> None:
    """PSNR rises by 20·log10(2) dB when the data range doubles; ERGAS scales with the ratio."""
    truth = HR[0, :32, :32]
    prediction = truth + np.float32(0.01) * np.cos(np.arange(32))
    quarter = fusion_metrics(prediction, truth, ratio=0.25)
    eighth = fusion_metrics(prediction, truth, ratio=0.125, data_range=2.0)
    assert eighth.mean["psnr"] - quarter.mean["psnr"] == pytest.approx(20 * math.log10(2))
    assert eighth.mean["ergas"] == pytest.approx(quarter.mean["ergas"] / 2)
    with pytest.raises(ValueError):
        fusion_metrics(prediction, truth[:-1], ratio=0.25)
