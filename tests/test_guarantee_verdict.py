"""The radiometric guarantee and the verdict together, on a scene the demo weights never saw.

The guarantee makes every product average back to its input, so quality layers measured on
the product would call any model consistent; they judge the models' own output instead. A
run with the demo weights on other data must therefore keep the RGB footprint means exact
and still end with the verdict's warning.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from pipeline.geo.bands import RGB_BANDS
from pipeline.geo.resample import block_mean
from pipeline.product.read import product_input
from tests.products import SMALL_AOI, region, write

ROOT = Path(__file__).resolve().parents[1]


def other_scene(folder: Path) -> str:
    """The demo catalog with every raster mirrored east–west and its reflectance 40 % higher:
    real Sentinel-2 texture, but fields, edges and levels the demo weights never saw."""
    shutil.copytree(ROOT / "examples" / "demo", folder / "catalog")
    for path in (folder / "catalog").rglob("*.tif"):
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read()
        data = np.flip(data, axis=2)
        if path.stem != "SCL":
            brighter = np.clip(data.astype(np.float64) * 1.4, 1, 65535).astype(data.dtype)
            data = np.where(data > 0, brighter, data)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    return str(folder / "catalog" / "catalog.json")


@pytest.fixture(scope="module")
def demo_weights_elsewhere(tmp_path_factory, dask_client):
    folder = tmp_path_factory.mktemp("elsewhere")
    out = folder / "elsewhere.zarr"
    done = region(
        "--stac",
        other_scene(folder),
        "--start",
        "2023-01-01",
        "--end",
        "2023-01-31",
        "--aoi",
        write(folder, "small.geojson", SMALL_AOI),
        "--out",
        str(out),
        "--rgb-model",
        "difffusr",
        "--weights",
        "demo",
        "--steps",
        "2",
        "--scheduler",
        dask_client.scheduler.address,
    )
    return out, done


def test_the_rgb_bands_average_back_to_their_input(demo_weights_elsewhere):
    out, done = demo_weights_elsewhere
    assert done.returncode == 0, done.stderr
    ds = xr.open_zarr(out)
    composite, _ = product_input(ds.attrs)
    for band in RGB_BANDS:
        high = ds.reflectance.sel(band=band).values.astype(np.float64)
        low = composite.sel(band=band).values  # the product's own extent at 10 m
        means = block_mean(high[None], 4)[0]
        valid = np.isfinite(means) & np.isfinite(low)
        assert valid.mean() > 0.9
        # the product stores reflectance in steps of 1e-4: half a step of rounding per pixel
        assert np.abs(means - low)[valid].max() <= 1e-4


def test_the_demo_weights_elsewhere_are_warned_of_and_judged(demo_weights_elsewhere):
    out, done = demo_weights_elsewhere
    lines = done.stderr.strip().splitlines()
    assert any(line.startswith("warning: difffusr runs with the demo weights") for line in lines)
    assert lines[-1].startswith("warning: ") and "hallucination risk" in lines[-1], done.stderr
    summary = xr.open_zarr(out).attrs["quality_summary"]
    assert summary["verdict"] == "hallucination risk"
