"""Overviews: values against direct 2 × 2 means of the level below, nodata, georeferencing,
the multiscales description, resume."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from affine import Affine
from pyproj import CRS

from pipeline.geo.grid import OutputGrid, Tile
from pipeline.product.overviews import (
    build_overviews,
    level_count,
    level_one_with_tiles,
    multiscales_attrs,
    reduce_2x2,
)
from pipeline.product.store import ProductStore
from pipeline.quality.layers import INCONSISTENT, RISK_FILL, SPECTRAL_DISTORTION

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

BANDS = ("B03", "B08")
# Odd edges on purpose: 250 x 150 px in 96 px tiles, so levels have odd sizes and part tiles.
GRID = OutputGrid(CRS.from_epsg(32719), 600000.0, 4700020.0, 250, 150, 96)
MEAN_LAYERS = ("consistency", "spectral_angle")


def tiles() -> dict[str, Tile]:
    return {t.key: t for t in GRID.all_tiles()}


def write(store: ProductStore, tile: Tile, seed: int, level_one: bool = False) -> None:
    """A tile with scattered no-data pixels, a no-data corner and every flag value."""
    rng = np.random.default_rng(seed)
    shape = (tile.height, tile.width)
    reflectance = rng.uniform(0.01, 0.6, (len(BANDS), *shape)).astype(np.float32)
    reflectance[:, rng.random(shape) < 0.3] = np.nan
    reflectance[:, :8, :8] = np.nan
    missing = np.isnan(reflectance[0])
    count = np.where(missing, 0, rng.integers(1, 9, shape))
    quality = {
        name: np.where(missing, np.nan, rng.uniform(0, 0.5, shape)).astype(np.float32)
        for name in MEAN_LAYERS
    }
    flags = rng.choice([0, 0, 0, INCONSISTENT, SPECTRAL_DISTORTION], shape).astype(np.uint8)
    quality["hallucination_risk"] = np.where(missing, RISK_FILL, flags)
    store.write_tile(GRID, tile, reflectance, count, {}, quality=quality, level_one=level_one)


def new_product(path: Path) -> ProductStore:
    store = ProductStore.create(str(path), GRID, BANDS, {})
    for seed, key in enumerate(("0_0", "0_1", "1_0", "1_2")):  # 0_2 and 1_1 never written
        write(store, tiles()[key], seed)
    return store


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, dask_client) -> ProductStore:
    """A product with its overviews, for the tests that only read it."""
    store = new_product(tmp_path_factory.mktemp("overviews") / "ov.zarr")
    assert finish(store, dask_client) == {}
    return store


def versions(store: ProductStore) -> dict[str, str]:
    return {m["tile"]: m["written"] for m in store.markers()}


def finish(store: ProductStore, client, with_level_one: tuple[str, ...] = ()) -> dict[str, str]:
    failed = build_overviews(store, GRID, client, versions(store), with_level_one)
    store.finalize(multiscales_attrs(GRID))
    return failed


def block_reference(values: np.ndarray, how: str) -> np.ndarray:
    """The 2 × 2 reduction done directly in numpy on decoded values (NaN = no data)."""
    *lead, h, w = values.shape
    padded = np.full((*lead, h + h % 2, w + w % 2), np.nan)
    padded[..., :h, :w] = values
    blocks = padded.reshape(*lead, (h + 1) // 2, 2, (w + 1) // 2, 2)
    if how == "mean":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of an all-NaN block
            return np.nanmean(blocks, axis=(-3, -1))
    valid = ~np.isnan(blocks)
    bits = np.where(valid, blocks, 0).astype(np.uint8)
    out = np.bitwise_or.reduce(bits, axis=(-3, -1)).astype(float)
    out[~valid.any(axis=(-3, -1))] = np.nan
    return out


def test_reduce_leaves_nodata_out_and_keeps_empty_blocks_empty():
    values = np.array([[0, 4, 0, 0, 7], [2, 0, 0, 0, 9]], np.uint16)
    np.testing.assert_array_equal(reduce_2x2(values, 0, "average"), [[3, 0, 8]])
    flags = np.array([[1, 255, 255], [2, 0, 255]], np.uint8)
    np.testing.assert_array_equal(reduce_2x2(flags, 255, "bitwise_or"), [[3, 255]])


def test_every_level_is_the_2x2_mean_of_the_level_below(built):
    product = built
    levels = level_count(GRID)
    assert levels == 4  # 250 px down to 16, within one 24 px inner chunk
    below = xr.open_zarr(product.url, chunks=None).load()
    for level in range(1, levels + 1):
        ds = xr.open_zarr(product.url, group=f"overviews/{level}", chunks=None).load()
        for name in ("reflectance", *MEAN_LAYERS):
            scale = ds[name].encoding["scale_factor"]
            np.testing.assert_allclose(
                ds[name].values,
                block_reference(below[name].values, "mean"),
                atol=scale / 2 + 1e-9,
                equal_nan=True,
                err_msg=f"{name} at level {level}",
            )
        np.testing.assert_array_equal(
            ds.hallucination_risk.values, block_reference(below.hallucination_risk.values, "or")
        )
        counts = below.clear_count.values.astype(float)
        expected = np.rint(
            np.nan_to_num(block_reference(np.where(counts > 0, counts, np.nan), "mean"))
        )
        np.testing.assert_array_equal(ds.clear_count.values, expected)
        # No data stays no data: no clear observation exactly where there is no reflectance.
        np.testing.assert_array_equal(ds.reflectance.isnull().all("band"), ds.clear_count == 0)
        below = ds
    level1 = xr.open_zarr(product.url, group="overviews/1")
    never_written = level1.reflectance.isel(y=slice(48, 75), x=slice(48, 96))  # tile 1_1
    assert never_written.isnull().all()


def test_levels_are_georeferenced_and_described(built):
    product = built
    root = xr.open_zarr(product.url)
    layout = root.attrs["multiscales"]["layout"]
    assert [entry["asset"] for entry in layout] == [".", *(f"overviews/{k}" for k in range(1, 5))]
    assert root.attrs["zarr_conventions"][0]["name"] == "multiscales"
    for level, entry in enumerate(layout):
        ds = xr.open_zarr(product.url, group=None if level == 0 else entry["asset"])
        size = 2.5 * 2**level
        shape = (-(-150 // 2**level), -(-250 // 2**level))
        assert ds.reflectance.shape == (len(BANDS), *shape) == (len(BANDS), *entry["spatial:shape"])
        assert ds.rio.crs == GRID.crs
        assert ds.reflectance.rio.transform() == Affine(size, 0, 600000.0, 0, -size, 4700020.0)
        assert list(ds.rio.transform())[:6] == entry["spatial:transform"]
        assert ds.reflectance.attrs["spatial:transform"] == entry["spatial:transform"]
        assert ds.reflectance.attrs["spatial:shape"] == entry["spatial:shape"]
        assert ds.x.values[0] == 600000.0 + size / 2
        assert list(ds.band.values) == list(BANDS)
    flag = zarr.open_array(product.url, path="overviews/1/hallucination_risk", mode="r")
    assert flag.attrs["resampling_method"] == "bitwise_or"


def test_rerun_rebuilds_only_what_changed(tmp_path, dask_client):
    product = new_product(tmp_path / "ov.zarr")
    finish(product, dask_client)
    markers = Path(product.url) / "tiles" / "overviews"

    def snapshot() -> dict[str, str]:
        return {str(p.relative_to(markers)): p.read_text() for p in markers.rglob("*.json")}

    first = snapshot()
    assert sorted(first) == ["1/0_0.json", "1/0_1.json", "2/0_0.json", "3/0_0.json", "4/0_0.json"]
    assert finish(product, dask_client) == {}
    assert snapshot() == first  # nothing changed, nothing rebuilt

    write(product, tiles()["1_1"], 9)  # a new tile under level-1 shard 0_0
    finish(product, dask_client)
    again = snapshot()
    changed = sorted(k for k in first if json.loads(again[k]) != json.loads(first[k]))
    assert changed == ["1/0_0.json", "2/0_0.json", "3/0_0.json", "4/0_0.json"]
    level1 = xr.open_zarr(product.url, group="overviews/1")
    assert level1.reflectance.isel(y=slice(48, 75), x=slice(48, 96)).notnull().any()


def test_level_one_written_with_each_tile_is_the_one_built_from_the_product(
    tmp_path, dask_client, built
):
    """Tiles that write their own level 1 (as a region run's do) give the very pixels that
    building it from level 0 gives, and the builder then reads no tile back for it."""
    store = ProductStore.create(str(tmp_path / "with-tiles.zarr"), GRID, BANDS, {})
    assert level_one_with_tiles(store, GRID)
    keys = ("0_0", "0_1", "1_0", "1_2")
    for seed, key in enumerate(keys):
        write(store, tiles()[key], seed, level_one=True)
    assert finish(store, dask_client, keys) == {}
    assert not (Path(store.url) / "tiles" / "overviews" / "1").exists()  # nothing built
    for level in ("overviews/1", "overviews/2"):
        with_tiles = zarr.open_group(store.url, path=level, mode="r")
        from_product = zarr.open_group(built.url, path=level, mode="r")
        for name in ("reflectance", "clear_count", *MEAN_LAYERS, "hallucination_risk"):
            np.testing.assert_array_equal(
                with_tiles[name][:], from_product[name][:], err_msg=f"{level}/{name}"
            )
    level_one = zarr.open_array(store.url, path="overviews/1/reflectance", mode="r")
    assert level_one.shards[-2:] == (GRID.tile_size // 2,) * 2  # one shard per tile
