"""Local attribution maps: exact for a linear model, zero beyond a known receptive field, and
the explain command on a product of each model pair, with bad input as one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from flows.explain import main
from pipeline.explain.differentiable import fusion_function, rgb_function
from pipeline.explain.lam import Path, detector, integrate
from pipeline.geo.bands import REFLECTANCE_BANDS
from pipeline.models.baselines import Bicubic, GramSchmidt
from pipeline.models.diffusion.rgb import DiffFuSRRGB

#: The trapezoid rule is exact for a model whose gradient does not change along the path (a
#: linear one): only float32 rounding remains, far below this share of the largest value.
LINEAR_ERROR = 1e-5


def keys(d: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = −0.5), written out from its formula."""
    d = np.abs(d)
    near = 1.5 * d**3 - 2.5 * d**2 + 1
    far = -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def footprint(out: int, n: int, factor: int = 4) -> np.ndarray:
    """The weights of the n input pixels in output pixel ``out`` of a bicubic ×factor along
    one axis, pixel centres aligned (the output pixel far from the edges)."""
    source = (out + 0.5) / factor - 0.5
    return keys(source - np.arange(n))


def test_the_attribution_of_bicubic_is_its_kernel_footprint():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3, 16, 16), dtype=np.float32))
    path = Path(steps=3, sigma=2.0)
    row, col, band = 33, 30, 1  # output pixel, away from the edges, in two kernel phases
    window = detector("value", slice(row, row + 1), slice(col, col + 1))
    forward = rgb_function(Bicubic(), (0, 0))
    result = integrate(
        forward, {"pixel": lambda out: window(out[band : band + 1])}, [x], [1], path
    )["pixel"]
    weights = np.outer(footprint(row, 16), footprint(col, 16))
    difference = (x - path.point(x, 0.0)).numpy()
    expected = np.zeros_like(difference)
    expected[band] = weights * difference[band]
    (attribution,) = result.maps
    assert np.abs(attribution - expected).max() < LINEAR_ERROR * np.abs(expected).max()
    assert np.count_nonzero(attribution) == 16  # the 4 × 4 taps of one band, nothing else
    assert result.error < LINEAR_ERROR


def test_gram_schmidt_attribution_is_zero_beyond_its_reach():
    """Gram–Schmidt reads 4 60 m pixels around a pixel (its halo): nothing beyond them."""
    model = GramSchmidt()
    rng = np.random.default_rng(1)
    bands = torch.from_numpy(rng.random((12, 96, 96), dtype=np.float32) * 0.3)
    guide = torch.from_numpy(rng.random((3, 384, 384), dtype=np.float32) * 0.3)
    pixel = detector("value", slice(190, 191), slice(193, 194))  # 10 m pixel (47, 48)
    result = integrate(
        fusion_function(model, [20]),
        {"B11": lambda out: pixel(out["B11"][None])},
        [bands, guide],
        [1, 4],
        Path(steps=2),
    )["B11"]
    low, high = (np.abs(m).sum(axis=0) for m in result.maps)
    reach = slice(47 // 6 * 6 - model.halo, 48 // 6 * 6 + 6 + model.halo)
    outside = np.ones_like(low, bool)
    outside[reach, reach] = False
    assert low[~outside].max() > 0 and high.max() > 0
    assert low[outside].max() == 0
    assert high[np.repeat(np.repeat(outside, 4, 0), 4, 1)].max() == 0
    b11 = REFLECTANCE_BANDS.index("B11")
    assert np.abs(result.maps[0][b11]).sum() > 0.5 * low.sum()  # B11 drives B11 most


def test_diffusion_attribution_stays_in_the_windows_that_make_the_pixel():
    """The diffusion model samples a pixel in the lattice windows over it, each conditioned on
    its own 10 m pixels: the attribution lies inside those windows and nowhere else."""
    model = DiffFuSRRGB(device="cpu")  # the demo weights: windows of 16, overlap 2
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.random((3, 48, 48), dtype=np.float32) * 0.3)
    lr_pixel = (24, 25)
    focus = (slice(24, 25), slice(25, 26))
    forward = rgb_function(model, (0, 0), focus, level=500)
    pixel = detector("value", slice(97, 98), slice(101, 102))
    result = integrate(forward, {"rgb": pixel}, [x], [1], Path(steps=1))["rgb"]
    heat = np.abs(result.maps[0]).sum(axis=0)
    stride = model.window - 2 * model.overlap
    windows = [k * stride - model.overlap for k in range(-1, 6)]
    inside = np.zeros_like(heat, bool)
    for top in (w for w in windows if w <= lr_pixel[0] < w + model.window):
        for left in (w for w in windows if w <= lr_pixel[1] < w + model.window):
            inside[max(top, 0) : top + model.window, max(left, 0) : left + model.window] = True
    assert heat[inside].max() > 0
    assert heat[~inside].max() == 0


def _explain(tmp_path, product, *args: str) -> dict:
    out = tmp_path / "explained"
    assert main(["--product", str(product), "--out", str(out), *args]) == 0
    report = json.loads((out / "explain.json").read_text())
    for stage in report["stages"]:
        image = np.asarray(Image.open(out / stage["figure"]).convert("L"), float)
        assert image.std() > 10  # drawn, not blank
    return report


def test_explain_a_pixel_of_the_baselines_product(demo_product, tmp_path, capsys):
    report = _explain(tmp_path, demo_product, "--point", "500", "300", "--steps", "2")
    assert report["reproduced_rgb_max_abs_diff"] < 1e-4  # the stored rounding only
    stages = {(s["model"], s["stage"]): s for s in report["stages"]}
    assert set(stages) == {
        ("bicubic", "rgb"),
        *(("gram-schmidt", f"fusion {g} m") for g in (10, 20, 60)),
    }
    rgb = stages["bicubic", "rgb"]
    assert rgb["integration_error"] < LINEAR_ERROR  # linear: exact
    assert rgb["share_within_10m_px"]["2"] == 1.0  # bicubic reads two pixels around
    assert set(stages["gram-schmidt", "fusion 20 m"]["input_shares"]) == {
        *REFLECTANCE_BANDS,
        "guide B04",
        "guide B03",
        "guide B02",
    }
    assert "diffusion index" in capsys.readouterr().out


def test_explain_a_pixel_of_the_diffusion_product(diffusion_product, tmp_path):
    """The diffusion RGB's single step and two path steps keep it quick."""
    report = _explain(
        tmp_path,
        diffusion_product,
        "--point",
        "60",
        "60",
        "--steps",
        "2",
        "--noise-level",
        "500",
        "--groups",
        "20",
    )
    assert report["reproduced_rgb_max_abs_diff"] < 1e-4
    assert [(s["model"], s["stage"]) for s in report["stages"]] == [
        ("difffusr", "rgb"),
        ("bicubic", "rgb"),
        ("gram-schmidt", "fusion 20 m"),
    ]
    for stage in report["stages"]:
        assert 0 < stage["diffusion_index"] < 100
        assert 0 < stage["share_within_10m_px"]["1"] <= stage["share_within_10m_px"]["4"] <= 1


def test_explain_a_pixel_of_the_learned_fusion_product(fusion_product, tmp_path):
    """One group of the learned fusion, beside Gram–Schmidt's."""
    report = _explain(
        tmp_path, fusion_product.out, "--point", "24", "24", "--steps", "1", "--groups", "60"
    )
    assert report["reproduced_rgb_max_abs_diff"] < 1e-4
    stages = {(s["model"], s["stage"]): s for s in report["stages"]}
    assert set(stages) == {
        ("bicubic", "rgb"),
        ("difffusr-fusion", "fusion 60 m"),
        ("gram-schmidt", "fusion 60 m"),
    }
    learned = stages["difffusr-fusion", "fusion 60 m"]
    assert learned["detector_change"] != 0 and learned["input_shares"]["guide B04"] > 0


def _no_items(tmp_path) -> str:
    path = tmp_path / "bare.zarr"
    zarr.open_group(str(path), mode="w").attrs["title"] = "a product without its recipe"
    return str(path)


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("outside", ["--point", "5000", "10"], "is outside the product's 1056 x 648 px grid"),
        ("too large", ["--window", "0", "0", "65", "2"], "must be 1 to 64 pixels"),
        ("noise level", ["--point", "5", "5", "--noise-level", "500"], "a noise level applies to"),
    ],
)
def test_bad_input_is_one_line(case, args, message, demo_product, tmp_path, capsys):
    assert main(["--product", str(demo_product), "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def test_a_product_without_recorded_items_is_one_line(tmp_path, capsys):
    assert main(["--product", _no_items(tmp_path), "--point", "1", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "records no source items" in err
