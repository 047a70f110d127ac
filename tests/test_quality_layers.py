"""The per-pixel quality layers: hand-checkable cases through the function the region flow
uses, the hallucination-risk rule, and a real run with several diffusion samples."""

import json
from datetime import date
from pathlib import Path

import dask
import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from shapely.geometry import shape

from pipeline.demo import DEMO_CATALOG
from pipeline.geo.bands import NATIVE_RATIO, REFLECTANCE_BANDS, RGB_INDEX
from pipeline.geo.resample import upsample_nearest
from pipeline.inputs.catalog import search
from pipeline.inputs.composite import median_composite
from pipeline.inputs.load import load_reflectance, load_scl
from pipeline.quality.layers import (
    CONSISTENCY_LIMIT,
    DARK_REFLECTANCE,
    INCONSISTENT,
    RELATIVE_UNCERTAINTY_LIMIT,
    RISK_FILL,
    SPECTRAL_ANGLE_LIMIT,
    SPECTRAL_DISTORTION,
    UNCERTAIN,
    judged,
    risk_flag,
    tile_quality,
)

#: 10 m pixels of the synthetic tiles: two 60 m pixels on a side.
SIDE = 12


def composite(seed: int = 0) -> np.ndarray:
    """A 12-band 10 m composite that, like the loader's, is constant over each native pixel."""
    rng = np.random.default_rng(seed)
    bands = []
    for band in REFLECTANCE_BANDS:
        ratio = NATIVE_RATIO[band]
        native = rng.uniform(0.02, 0.5, (SIDE // ratio, SIDE // ratio))
        bands.append(upsample_nearest(native, ratio))
    return np.stack(bands).astype(np.float32)


def sharp(low: np.ndarray) -> np.ndarray:
    """A 2.5 m result whose every band averages back exactly to ``low``."""
    return upsample_nearest(low, 4).astype(np.float32)


def test_a_result_that_averages_back_to_the_input_is_consistent():
    low = composite()
    quality = tile_quality(low, sharp(low), REFLECTANCE_BANDS)
    np.testing.assert_allclose(quality.consistency, 0, atol=1e-7)
    np.testing.assert_allclose(quality.spectral_angle, 0, atol=1e-3)
    assert (quality.hallucination_risk == 0).all()
    assert quality.hallucination_risk.shape == (4 * SIDE, 4 * SIDE)


def test_detail_inside_a_native_pixel_is_no_inconsistency():
    """A 60 m band given 10 m structure that keeps its 60 m means is consistent."""
    low = composite()
    high = sharp(low)
    b01 = REFLECTANCE_BANDS.index("B01")
    high[b01] += np.tile(np.float32([0.01, -0.01]), (4 * SIDE, 2 * SIDE))
    quality = tile_quality(low, high, REFLECTANCE_BANDS)
    np.testing.assert_allclose(quality.consistency, 0, atol=1e-7)


def test_a_constant_offset_gives_the_offset_and_the_angle_of_the_formula():
    low = composite()
    offset = 0.03
    quality = tile_quality(low, sharp(low) + np.float32(offset), REFLECTANCE_BANDS)
    np.testing.assert_allclose(quality.consistency, offset, rtol=1e-5)
    x = low.astype(np.float64)
    y = x + offset
    cosine = (x * y).sum(0) / np.sqrt((x * x).sum(0) * (y * y).sum(0))
    np.testing.assert_allclose(quality.spectral_angle, np.degrees(np.arccos(cosine)), atol=1e-4)
    assert offset > CONSISTENCY_LIMIT
    assert (quality.hallucination_risk & INCONSISTENT).all()


def test_only_the_products_bands_count():
    low = composite()
    high = sharp(low)
    b08 = REFLECTANCE_BANDS.index("B08")
    high[b08] *= 2  # a band left out of the product
    bands = ("B02", "B03", "B04")
    quality = tile_quality(low, high[[REFLECTANCE_BANDS.index(b) for b in bands]], bands)
    np.testing.assert_allclose(quality.consistency, 0, atol=1e-7)


def test_no_data_gets_the_fill_and_its_neighbours_keep_their_values():
    low = composite()
    high = sharp(low) + np.float32(0.002)
    low[:, 0, 0] = np.nan
    high[:, :4, :4] = np.nan
    quality = tile_quality(low, high, REFLECTANCE_BANDS)
    assert np.isnan(quality.consistency[0, 0]) and np.isnan(quality.spectral_angle[0, 0])
    assert (quality.hallucination_risk[:4, :4] == RISK_FILL).all()
    np.testing.assert_allclose(quality.consistency[1:, 1:], 0.002, rtol=1e-4)
    np.testing.assert_allclose(quality.consistency[0, 1:], 0.002, rtol=1e-4)
    assert (quality.hallucination_risk[4:, 4:] == 0).all()
    summary = quality.summary()
    assert summary["mean_consistency"] == pytest.approx(0.002, rel=1e-3)
    assert summary["hallucination_risk_fraction"] == 0.0


def test_a_tile_without_data_is_all_fill_and_its_summary_null():
    """What the flow computes for a tile that no scene covers."""
    low = np.full((12, SIDE, SIDE), np.nan, np.float32)
    quality = tile_quality(low, sharp(low), REFLECTANCE_BANDS)
    assert (quality.hallucination_risk == RISK_FILL).all()
    assert set(quality.summary().values()) == {None}
    assert json.dumps(quality.summary(), allow_nan=False)  # null, never NaN


def test_the_risk_rule_on_a_constructed_case():
    over, under = 2 * CONSISTENCY_LIMIT, CONSISTENCY_LIMIT / 2
    consistency = np.array([[under, over], [under, np.nan]])
    angle = np.array([[2 * SPECTRAL_ANGLE_LIMIT, 2 * SPECTRAL_ANGLE_LIMIT], [0.0, np.nan]])
    relative = np.zeros((8, 8))
    relative[4, 1] = 2 * RELATIVE_UNCERTAINTY_LIMIT  # one 2.5 m pixel in the lower left
    flag = risk_flag(consistency, angle, relative)
    assert flag.dtype == np.uint8 and flag.shape == (8, 8)
    assert (flag[:4, :4] == SPECTRAL_DISTORTION).all()
    assert (flag[:4, 4:] == INCONSISTENT | SPECTRAL_DISTORTION).all()
    assert flag[4, 1] == UNCERTAIN and np.count_nonzero(flag[4:, :4]) == 1
    assert (flag[4:, 4:] == RISK_FILL).all()
    assert (risk_flag(consistency, angle)[4:, :4] == 0).all()  # no samples, no uncertainty bit


def test_uncertainty_counts_relative_to_the_input_with_a_floor_for_dark_pixels():
    low = composite()
    low[RGB_INDEX, :6, :] = 0.2  # bright top half
    low[RGB_INDEX, 6:, :] = DARK_REFLECTANCE / 4  # dark bottom half: the floor applies
    # Half the limit relative to the floor: 2× the limit relative to the dark input itself.
    spread = np.full(
        (3, 4 * SIDE, 4 * SIDE), RELATIVE_UNCERTAINTY_LIMIT * DARK_REFLECTANCE / 2, np.float32
    )
    quality = tile_quality(low, sharp(low), REFLECTANCE_BANDS, spread)
    assert not (quality.hallucination_risk & UNCERTAIN).any()
    spread[:] = 0
    spread[:, :24] = 2 * RELATIVE_UNCERTAINTY_LIMIT * 0.2  # 2× the limit over the bright half
    flag = tile_quality(low, sharp(low), REFLECTANCE_BANDS, spread).hallucination_risk
    assert (flag[:24] == UNCERTAIN).all() and (flag[24:] == 0).all()


def composite_under(ds: xr.Dataset, stac: str) -> tuple[np.ndarray, np.ndarray]:
    """The 10 m composite and clear count over a product's grid, recomputed from ``stac``."""
    transform, (height, width) = ds.attrs["grid_transform"], ds.attrs["grid_shape"]
    x0, y0, size = transform[2], transform[5], transform[0]
    bounds = (x0, y0 - height * size, x0 + width * size, y0)
    start, end = (date.fromisoformat(d) for d in ds.attrs["date_range"])
    items = search(stac, shape(json.loads(ds.attrs["aoi"])), start, end).items
    epsg = ds.rio.crs.to_epsg()
    reflectance = load_reflectance(items, REFLECTANCE_BANDS, epsg, bounds)
    composite, count = median_composite(reflectance, load_scl(items, epsg, bounds))
    composite, count = dask.compute(composite, count)  # one read of the scenes for both
    return composite.values, count.values


def stored_flag(out: Path | str) -> np.ndarray:
    """The hallucination-risk bits as stored (xarray would mask the fill to NaN)."""
    return xr.open_zarr(out, mask_and_scale=False).hallucination_risk.values


def check_quality_layers(ds: xr.Dataset, composite: np.ndarray, result: np.ndarray) -> None:
    """A baseline product's layers: encodings, agreement with ``tile_quality`` over the whole
    grid (tiles nest in 60 m pixels, so tiling changes nothing), never flagged."""
    raw = {"consistency": np.uint16, "spectral_angle": np.uint16, "hallucination_risk": np.uint8}
    fills = {"consistency": 65535, "spectral_angle": 65535, "hallucination_risk": RISK_FILL}
    for name, dtype in raw.items():
        layer = ds[name]
        assert layer.dims == ("y", "x") and layer.encoding["dtype"] == dtype, name
        assert layer.encoding["_FillValue"] == fills[name], name
        assert layer.attrs["grid_mapping"] == "spatial_ref", name
    assert ds.consistency.encoding["scale_factor"] == 1e-4
    assert ds.spectral_angle.encoding["scale_factor"] == 0.01
    assert ds.spectral_angle.attrs["units"] == "degree"
    assert ds.hallucination_risk.attrs["flag_masks"] == [
        INCONSISTENT,
        SPECTRAL_DISTORTION,
        UNCERTAIN,
    ]
    assert ds.attrs["recipe"]["hallucination_risk_rule"]["consistency_limit"] == CONSISTENCY_LIMIT

    expected = tile_quality(composite, result, tuple(ds.band.values))
    stored = {name: ds[name].values[::4, ::4] for name in ("consistency", "spectral_angle")}
    np.testing.assert_allclose(stored["consistency"], expected.consistency, atol=1.5e-4)
    np.testing.assert_allclose(stored["spectral_angle"], expected.spectral_angle, atol=0.1)
    assert np.nanmax(stored["consistency"]) < CONSISTENCY_LIMIT / 2
    assert np.nanmax(stored["spectral_angle"]) < SPECTRAL_ANGLE_LIMIT / 2
    assert (ds.hallucination_risk.values == 0).all()  # no pixel flagged, none without data


def test_diffusion_samples_add_the_uncertainty_to_the_flag(diffusion_product):
    """A real run with --samples 2: the stored flag is the rule applied to its inputs, the
    layers judging the model's own samples (before the RGB guarantee) and the spread."""
    out = diffusion_product
    ds = xr.open_zarr(out)
    low, _ = composite_under(ds, str(DEMO_CATALOG))
    result = ds.reflectance.values.astype(np.float32)
    spread = ds.rgb_uncertainty.values.astype(np.float32)
    consistency, angle = (ds[name].values[::4, ::4] for name in ("consistency", "spectral_angle"))
    expected = judged(consistency, angle, low, spread).hallucination_risk
    flag = stored_flag(out)
    assert (flag & UNCERTAIN).any()
    assert np.mean(flag == expected) > 0.999  # stored values are rounded: a pixel may flip
    # the guaranteed product itself averages back to its input: its RGB is consistent by
    # construction, so the layers can only have judged the samples before the guarantee
    product = tile_quality(low, result, REFLECTANCE_BANDS)
    assert np.nanmax(product.consistency) < np.nanmax(consistency)
    summary = json.loads(next((out / "tiles").glob("*.json")).read_text())["summary"]
    flagged = np.count_nonzero(flag[flag != RISK_FILL]) / np.count_nonzero(flag != RISK_FILL)
    assert summary["hallucination_risk_fraction"] == pytest.approx(flagged, abs=1e-6)
    assert "mean_rgb_uncertainty" in summary
