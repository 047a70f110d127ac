"""Loading onto the 10 m grid: BOA offsets per baseline, no-data, exact native pixels."""

from datetime import datetime

import numpy as np
import pytest

from pipeline.errors import CatalogError
from pipeline.geo.resample import block_mean
from pipeline.inputs.load import boa_offset, check_assets, load_reflectance, load_scl
from tests.scenes import ORIGIN, write_scene

# 60 m x 120 m of ground: 6 x 12 pixels at 10 m, 3 x 6 at 20 m, 1 x 2 at 60 m.
BOUNDS = (ORIGIN[0], ORIGIN[1] - 60, ORIGIN[0] + 120, ORIGIN[1])
WHEN = datetime(2023, 1, 10)


def scene(tmp_path, baseline, value, **kwargs):
    dn = {
        "B04": np.full((6, 12), value, np.uint16),
        "B05": np.full((3, 6), value, np.uint16),
        "B01": np.full((1, 2), value, np.uint16),
    }
    return write_scene(tmp_path, f"s{baseline}", WHEN, dn, baseline=baseline, **kwargs)


@pytest.mark.parametrize(
    "baseline, dn, extra",
    [
        ("03.01", 1500, {}),  # before 04.00: DN = reflectance x 10000
        ("05.11", 2500, {}),  # from 04.00 on: DN carries the +1000 BOA offset
        ("05.11", 1500, {"earthsearch:boa_offset_applied": True}),  # catalog removed it
    ],
)
def test_reflectance_per_processing_baseline(tmp_path, baseline, dn, extra):
    item = scene(tmp_path, baseline, dn, extra_properties=extra)
    refl = load_reflectance([item], ["B01", "B04", "B05"], 32719, BOUNDS).compute()
    assert refl.dtype == np.float32
    assert refl.shape == (1, 3, 6, 12)
    np.testing.assert_allclose(refl.values, 0.15, rtol=1e-6)


def test_offset_rules():
    import pystac

    def item(props):
        return pystac.Item("x", None, None, WHEN, props)

    assert boa_offset(item({"s2:processing_baseline": "04.00"})) == -1000
    assert boa_offset(item({"s2:processing_baseline": "02.14"})) == 0
    assert boa_offset(item({})) == 0


def test_nodata_stays_nan_and_native_pixels_are_recoverable(tmp_path):
    rng = np.random.default_rng(3)
    b04 = rng.integers(1001, 9000, (6, 12)).astype(np.uint16)
    b05 = rng.integers(1001, 9000, (3, 6)).astype(np.uint16)
    b01 = np.array([[1200, 3400]], np.uint16)
    b04[0, :4] = 0  # a no-data edge
    item = write_scene(
        tmp_path, "native", WHEN, {"B01": b01, "B04": b04, "B05": b05}, baseline="03.01"
    )
    refl = load_reflectance([item], ["B01", "B04", "B05"], 32719, BOUNDS).compute().values[0]
    assert np.isnan(refl[1, 0, :4]).all() and np.isfinite(refl[1, 1:]).all()
    # every native 20 m / 60 m pixel is repeated exactly over its 2x2 / 6x6 pixels at 10 m
    for band, native, ratio in ((2, b05, 2), (0, b01, 6)):
        expected = np.repeat(np.repeat(native / np.float32(10000), ratio, 0), ratio, 1)
        np.testing.assert_array_equal(refl[band], expected.astype(np.float32))
    np.testing.assert_allclose(block_mean(refl[2:3], 2)[0], b05 / 10000, rtol=1e-6)


def test_earth_search_asset_names_and_scl(tmp_path):
    keys = {"B04": "red", "B05": "rededge1", "B01": "coastal", "SCL": "scl"}
    scl = np.full((3, 6), 4, np.uint8)
    scl[0, 0] = 9
    item = scene(tmp_path, "05.11", 2500, asset_keys=keys, scl=scl)
    refl = load_reflectance([item], ["B01", "B04", "B05"], 32719, BOUNDS).compute()
    np.testing.assert_allclose(refl.values, 0.15, rtol=1e-6)
    classes = load_scl([item], 32719, BOUNDS).compute().values[0]
    assert classes[0, 0] == 9 and classes[1, 1] == 9 and classes[2, 2] == 4


def test_missing_band_names_the_item(tmp_path):
    item = scene(tmp_path, "05.11", 2500, scl=np.full((3, 6), 4, np.uint8))
    check_assets([item], ["B01", "B04"])
    with pytest.raises(CatalogError, match="item s05.11 has no asset for B12"):
        check_assets([item], ["B04", "B12"])
