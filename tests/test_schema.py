"""The product schema agrees with the quality layers it describes and with what the store
writes, so that a layer added in one place and not the other fails here."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr
from pyproj import CRS

from pipeline.geo.grid import OutputGrid
from pipeline.product.schema import (
    QUALITY_LAYERS,
    REFLECTANCE,
    VARIABLES,
    bytes_per_pixel,
    stored,
)
from pipeline.product.store import ProductStore
from pipeline.quality.layers import QualityLayers, risk_flag

#: One tile's grid.
GRID = OutputGrid(CRS.from_epsg(32633), 500000.0, 5000000.0, 96, 96, 96)
BANDS = ("B02", "B03", "B04", "B08")


def test_quality_layers_match_their_computation():
    consistency = np.full((4, 4), 0.002, np.float32)
    angle = np.full((4, 4), 1.0, np.float32)
    layers = QualityLayers(consistency, angle, risk_flag(consistency, angle))
    assert list(layers.on_output_grid()) == [layer.name for layer in QUALITY_LAYERS]
    keys = [layer.summary.key for layer in QUALITY_LAYERS]
    assert list(layers.summary()) == list(QualityLayers.SUMMARY_KEYS) == keys


def test_summary_keys_and_names_are_unique():
    assert (
        len({v.name for v in VARIABLES})
        == len({v.summary.key for v in VARIABLES})
        == len(VARIABLES)
    )


@pytest.mark.filterwarnings("ignore:Object at tiles")  # the markers' folder is not a node
@pytest.mark.parametrize("uncertainty", [False, True])
def test_the_store_writes_the_schema(tmp_path, uncertainty):
    url = str(tmp_path / "out.zarr")
    ProductStore.create(url, GRID, BANDS, {}, uncertainty=uncertainty)
    group = zarr.open_group(url, mode="r")
    for variable in stored(uncertainty):
        array = group[variable.name]
        assert array.dtype == np.dtype(variable.dtype) and array.fill_value == variable.fill
        assert array.shape == variable.shape(BANDS, GRID.height, GRID.width)
        assert list(array.metadata.dimension_names) == variable.dimensions()
        assert variable.cf_attributes().items() <= dict(array.attrs).items()
    names = {v.name for v in VARIABLES} - {v.name for v in stored(uncertainty)}
    assert not names & set(group.array_keys())
    # the size estimate counts what the store writes: one 2.5 m pixel of every array
    written = sum(group[v.name].nbytes // (GRID.height * GRID.width) for v in stored(uncertainty))
    assert bytes_per_pixel(BANDS, uncertainty) == written


def test_scaled_values_decode_with_their_cf_attributes():
    values = np.array([[np.nan, 0.0, 0.1234, 0.5]], np.float32)
    encoded = REFLECTANCE.encode(values)
    attrs = REFLECTANCE.cf_attributes()
    ds = xr.Dataset({"v": (("y", "x"), encoded, attrs)})
    decoded = xr.decode_cf(ds)["v"].values
    assert np.isnan(decoded[0, 0]) and decoded[0, 2] == pytest.approx(0.1234)
