"""SCL masking and the clear-sky temporal median."""

import numpy as np
import xarray as xr

from pipeline.inputs.composite import clear_mask, median_composite


def stack(values, scl):
    refl = xr.DataArray(np.asarray(values, np.float32), dims=("time", "band", "y", "x"))
    return refl, xr.DataArray(np.asarray(scl, np.float32), dims=("time", "y", "x"))


def test_masked_classes():
    scl = xr.DataArray(np.arange(12, dtype=np.float32), dims="x")
    clear = clear_mask(scl).values
    assert clear.tolist() == [
        False,
        False,
        True,
        False,
        True,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert clear_mask(scl, mask_snow=False).values[11]
    assert not clear_mask(xr.DataArray([np.nan], dims="x")).values[0]


def test_median_of_clear_observations_and_count():
    # One pixel seen 4 times: cloud (9), clear, clear, shadow (3); a second never clear.
    values = [[[[0.9, 0.5]]], [[[0.1, 0.5]]], [[[0.3, 0.5]]], [[[0.02, 0.5]]]]
    scl = [[[9, 9]], [[4, 8]], [[5, 10]], [[3, 3]]]
    refl, classes = stack(values, scl)
    median, count = median_composite(refl.chunk(), classes.chunk())
    median, count = median.compute(), count.compute()
    np.testing.assert_allclose(median.values[0, 0], [0.2, np.nan])
    assert count.values[0].tolist() == [2, 0]
    assert count.dtype == np.uint8 and median.dtype == np.float32


def test_observation_with_a_missing_band_is_not_clear():
    values = [[[[0.1]], [[np.nan]]], [[[0.4]], [[0.6]]]]
    refl, classes = stack(values, [[[4]], [[4]]])
    median, count = median_composite(refl.chunk(), classes.chunk())
    np.testing.assert_allclose(median.values[:, 0, 0], [0.4, 0.6])
    assert int(count.values[0, 0]) == 1
