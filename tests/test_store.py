"""The Zarr product: round trip through xarray, georeferencing, sharding, markers, resume."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from affine import Affine
from pyproj import CRS

from pipeline.errors import OutputError
from pipeline.geo.grid import OutputGrid, Tile
from pipeline.product.schema import REFLECTANCE
from pipeline.product.store import ProductStore
from pipeline.quality.layers import INCONSISTENT, RISK_FILL, UNCERTAIN

# rioxarray and odc-geo still multiply Affine objects with `*`.
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

BANDS = ("B02", "B03", "B04")
GRID = OutputGrid(CRS.from_epsg(32719), 600000.0, 4700020.0, 96 * 3, 96 * 2, 96)
TRANSFORM = Affine(2.5, 0.0, 600000.0, 0.0, -2.5, 4700020.0)


def tile(row: int, col: int) -> Tile:
    return next(t for t in GRID.all_tiles() if (t.row, t.col) == (row, col))


def sample(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance with NaN holes and a clear count that overflows uint8 in one corner."""
    rng = np.random.default_rng(seed)
    reflectance = rng.uniform(0.0, 0.8, (len(BANDS), 96, 96)).astype(np.float32)
    reflectance[:, :10, :10] = np.nan
    count = rng.integers(0, 40, (96, 96))
    count[-1, -1] = 400
    return reflectance, count


@pytest.fixture
def product(tmp_path: Path) -> tuple[ProductStore, dict[str, tuple[np.ndarray, np.ndarray]]]:
    store = ProductStore.create(
        str(tmp_path / "out.zarr"), GRID, BANDS, {"s2sr_version": "0.1.0", "items": ["a", "b"]}
    )
    written = {}
    for seed, t in enumerate((tile(0, 0), tile(1, 2))):
        written[t.key] = sample(seed)
        store.write_tile(GRID, t, *written[t.key], {"clear_fraction": np.float32(0.5)})
    return store, written


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_values_round_trip_through_xarray(product):
    store, written = product
    store.finalize({"finished": True})
    ds = xr.open_zarr(store.url, consolidated=True)

    assert list(ds.band.values) == list(BANDS)
    assert ds.clear_count.dtype == np.uint8
    for key, (reflectance, count) in written.items():
        t = tile(*map(int, key.split("_")))
        window = {"y": slice(t.y_off, t.y_off + 96), "x": slice(t.x_off, t.x_off + 96)}
        got = ds.reflectance.isel(window).values
        np.testing.assert_array_equal(np.isnan(got), np.isnan(reflectance))
        np.testing.assert_allclose(got, reflectance, atol=1e-4, equal_nan=True)
        np.testing.assert_array_equal(ds.clear_count.isel(window).values, np.minimum(count, 255))
    untouched = {"y": slice(0, 96), "x": slice(96, 192)}
    assert np.isnan(ds.reflectance.isel(untouched).values).all()
    assert (ds.clear_count.isel(untouched).values == 0).all()

    assert ds.attrs["s2sr_version"] == "0.1.0" and ds.attrs["finished"] is True
    assert ds.attrs["Conventions"] == "CF-1.8"
    assert ds.attrs["grid_tile_size"] == 96 and ds.attrs["grid_transform"] == list(TRANSFORM)[:6]
    assert CRS.from_wkt(ds.attrs["grid_crs_wkt"]) == GRID.crs
    assert ds.reflectance.attrs["standard_name"] == "surface_bidirectional_reflectance"


def test_opens_before_finalize(product):
    store, _ = product
    with pytest.warns(zarr.errors.ZarrUserWarning, match="tiles"):
        ds = xr.open_zarr(store.url, consolidated=False)
    assert ds.reflectance.shape == (3, GRID.height, GRID.width)


def test_georeferencing_reads_back_in_rioxarray_and_odc_geo(product):
    store, _ = product
    store.finalize({})
    ds = xr.open_zarr(store.url)

    assert ds.rio.crs == CRS.from_epsg(32719)
    assert ds.rio.transform() == TRANSFORM
    assert ds.reflectance.rio.transform() == TRANSFORM
    for geobox in (ds.odc.geobox, ds.reflectance.odc.geobox, ds.clear_count.odc.geobox):
        assert geobox.crs == "EPSG:32719"
        assert geobox.affine == TRANSFORM
        assert geobox.shape == (GRID.height, GRID.width)
    assert ds.x.values[0] == 600001.25 and ds.y.values[-1] == 4700020.0 - 191 * 2.5 - 1.25
    assert ds.spatial_ref.attrs["GeoTransform"] == GRID.geotransform
    assert ds.reflectance.attrs["grid_mapping"] == "spatial_ref"


def test_one_shard_per_tile(product):
    store, _ = product
    group = zarr.open_group(store.url, mode="r")
    refl, count = group["reflectance"], group["clear_count"]
    assert (refl.shards, refl.chunks) == ((3, 96, 96), (1, 24, 24))
    assert (count.shards, count.chunks) == ((96, 96), (24, 24))
    assert any(type(c).__name__ == "ZstdCodec" for c in refl.compressors)
    root = Path(store.url)
    data = ("reflectance/c/**/*", "clear_count/c/**/*")
    shards = sorted(str(p.relative_to(root)) for d in data for p in root.glob(d) if p.is_file())
    assert shards == [
        "clear_count/c/0/0",
        "clear_count/c/1/2",
        "reflectance/c/0/0/0",
        "reflectance/c/0/1/2",
    ]


def test_markers_and_done_tiles(product):
    store, _ = product
    assert store.done_tiles() == {"0_0", "1_2"}
    assert store.is_done(tile(1, 2)) and not store.is_done(tile(0, 1))
    marker = json.loads((Path(store.url) / "tiles" / "1_2.json").read_text())
    assert marker["tile"] == "1_2"
    assert marker["bounds"] == list(GRID.tile_bounds(tile(1, 2)))
    assert marker["summary"] == {"clear_fraction": 0.5}
    assert marker["written"].endswith("+00:00")


def write_sample(store: ProductStore, t: Tile) -> None:
    store.write_tile(GRID, t, *sample(t.row * 3 + t.col), {})


def test_tiles_written_from_other_processes(tmp_path):
    store = ProductStore.create(str(tmp_path / "out.zarr"), GRID, BANDS, {})
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=spawn) as pool:
        list(pool.map(write_sample, [store] * 6, GRID.all_tiles()))
    assert store.done_tiles() == {t.key for t in GRID.all_tiles()}
    store.finalize({})
    got = xr.open_zarr(store.url).reflectance.isel(y=slice(96, 192), x=slice(192, 288)).values
    np.testing.assert_allclose(got, sample(5)[0], atol=1e-4, equal_nan=True)


def test_no_marker_when_the_data_write_fails(tmp_path, monkeypatch):
    store = ProductStore.create(str(tmp_path / "out.zarr"), GRID, BANDS, {})

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Array, "__setitem__", broken)
    with pytest.raises(OutputError, match="cannot write tile 0_0 to .*No space left on device"):
        store.write_tile(GRID, tile(0, 0), *sample(0), {})
    assert store.done_tiles() == set()


def test_write_tile_checks_its_inputs(tmp_path):
    store = ProductStore.create(str(tmp_path / "out.zarr"), GRID, BANDS, {})
    reflectance, count = sample(0)
    with pytest.raises(ValueError, match="float32"):
        store.write_tile(GRID, tile(0, 0), reflectance.astype(np.float64), count, {})
    with pytest.raises(ValueError, match="reflectance"):
        store.write_tile(GRID, tile(0, 0), reflectance[:, :95], count, {})
    with pytest.raises(ValueError, match="clear_count"):
        store.write_tile(GRID, tile(0, 0), reflectance, count[:95], {})
    with pytest.raises(ValueError, match="2 bands given"):
        store.write_tile(GRID, tile(0, 0), reflectance[:2], count, {})
    with pytest.raises(ValueError, match="shard boundary"):
        store.write_tile(GRID, Tile(0, 0, 0, 48, 96, 96), reflectance, count, {})
    assert store.done_tiles() == set()


def quality_sample() -> dict[str, np.ndarray]:
    """Quality layers with the no-data hole of ``sample`` and one flagged pixel."""
    consistency = np.full((96, 96), 0.0123, np.float32)
    angle = np.full((96, 96), 1.234, np.float32)
    flag = np.zeros((96, 96), np.uint8)
    flag[50, 50] = INCONSISTENT | UNCERTAIN
    for layer, hole in ((consistency, np.nan), (angle, np.nan), (flag, RISK_FILL)):
        layer[:10, :10] = hole
    return {"consistency": consistency, "spectral_angle": angle, "hallucination_risk": flag}


def test_quality_layers_round_trip_with_their_fill_values(tmp_path):
    store = ProductStore.create(str(tmp_path / "out.zarr"), GRID, BANDS, {})
    store.write_tile(GRID, tile(0, 0), *sample(0), {}, quality=quality_sample())
    store.finalize({})
    ds = xr.open_zarr(store.url)
    here = {"y": slice(0, 96), "x": slice(0, 96)}
    consistency, angle, flag = (
        ds[n].isel(here).values for n in ("consistency", "spectral_angle", "hallucination_risk")
    )
    assert np.isnan(consistency[:10, :10]).all() and np.isnan(angle[:10, :10]).all()
    assert np.isnan(flag[:10, :10]).all()
    assert consistency[50, 50] == pytest.approx(0.0123) and angle[50, 50] == pytest.approx(1.23)
    assert flag[50, 50] == 5 and np.nansum(flag) == 5
    raw = xr.open_zarr(store.url, mask_and_scale=False)
    assert raw.consistency.dtype == np.uint16 and raw.hallucination_risk.dtype == np.uint8
    assert raw.consistency.values[50, 50] == 123 and raw.spectral_angle.values[50, 50] == 123
    elsewhere = {"y": slice(96, 192), "x": slice(96, 192)}  # a tile never written
    assert np.isnan(ds.consistency.isel(elsewhere).values).all()
    assert (raw.hallucination_risk.isel(elsewhere).values == RISK_FILL).all()


def test_quality_layers_are_checked(tmp_path):
    store = ProductStore.create(str(tmp_path / "out.zarr"), GRID, BANDS, {})
    layers = quality_sample()
    with pytest.raises(ValueError, match="quality layer 'consistency'"):
        store.write_tile(
            GRID,
            tile(0, 0),
            *sample(0),
            {},
            quality={**layers, "consistency": layers["consistency"][:95]},
        )
    with pytest.raises(ValueError, match="quality layer 'noise'"):
        store.write_tile(GRID, tile(0, 0), *sample(0), {}, quality={"noise": layers["consistency"]})
    assert store.done_tiles() == set()


def test_encoding_keeps_zero_for_no_data():
    values = np.array([np.nan, -0.2, 0.0, 0.00004, 0.1234, 1.0, 9.0], dtype=np.float32)
    assert REFLECTANCE.encode(values).tolist() == [0, 1, 1, 1, 1234, 10000, 65535]


def test_resume_keeps_markers_and_data(product):
    store, written = product
    store.finalize({})
    before = snapshot(Path(store.url) / "reflectance")

    again = ProductStore.create(store.url, GRID, BANDS, {"s2sr_version": "0.2.0"})

    assert again.done_tiles() == {"0_0", "1_2"}
    assert snapshot(Path(store.url) / "reflectance") == before
    ds = xr.open_zarr(store.url, consolidated=True)
    assert ds.attrs["s2sr_version"] == "0.2.0"
    np.testing.assert_allclose(
        ds.reflectance.isel(y=slice(0, 96), x=slice(0, 96)).values,
        written["0_0"][0],
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "grid, bands",
    [
        (GRID, ("B02", "B03", "B08")),
        (OutputGrid(GRID.crs, GRID.x0 + 60, GRID.y0, GRID.width, GRID.height, 96), BANDS),
        (OutputGrid(GRID.crs, GRID.x0, GRID.y0, GRID.width, GRID.height, 48), BANDS),
        (OutputGrid(GRID.crs, GRID.x0, GRID.y0, GRID.width + 96, GRID.height, 96), BANDS),
        (OutputGrid(CRS.from_epsg(32720), GRID.x0, GRID.y0, GRID.width, 192, 96), BANDS),
    ],
)
def test_mismatch_is_refused_without_touching_the_product(product, grid, bands):
    store, _ = product
    before = snapshot(Path(store.url))
    with pytest.raises(OutputError, match="different grid/bands; use --overwrite") as err:
        ProductStore.create(store.url, grid, bands, {})
    assert "\n" not in str(err.value) and store.url in str(err.value)
    assert snapshot(Path(store.url)) == before


@pytest.mark.filterwarnings("ignore:Object at tiles")
def test_overwrite_recreates(product):
    store, _ = product
    fresh = ProductStore.create(store.url, GRID, ("B08",), {}, overwrite=True)
    assert fresh.done_tiles() == set()
    assert not list(Path(store.url).glob("reflectance/c/**/*"))
    ds = xr.open_zarr(store.url, consolidated=False)
    assert list(ds.band.values) == ["B08"] and np.isnan(ds.reflectance.values).all()


def test_a_folder_that_is_not_a_product_is_never_deleted(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="not a Zarr product"):
            ProductStore.create(str(tmp_path), GRID, BANDS, {}, overwrite=overwrite)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_an_empty_folder_is_used(tmp_path):
    store = ProductStore.create(str(tmp_path), GRID, BANDS, {})
    assert store.done_tiles() == set() and (tmp_path / "zarr.json").exists()


@pytest.mark.parametrize("name", ["file.txt/out.zarr", "file.txt"])
def test_unwritable_location_is_one_line(tmp_path, name):
    (tmp_path / "file.txt").write_text("")
    url = str(tmp_path / name)
    with pytest.raises(OutputError, match="cannot write") as err:
        ProductStore.create(url, GRID, BANDS, {})
    assert "\n" not in str(err.value) and url in str(err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_is_refused(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            ProductStore.create(str(tmp_path / "out.zarr"), GRID, BANDS, {})
    finally:
        tmp_path.chmod(0o755)


def test_a_continental_grid_allocates_no_data(tmp_path):
    huge = OutputGrid(CRS.from_epsg(3035), 2_000_000.0, 5_000_000.0, 400_000, 400_000, 1920)
    started = time.perf_counter()
    store = ProductStore.create(str(tmp_path / "eu.zarr"), huge, BANDS, {})
    store.finalize({})
    assert time.perf_counter() - started < 10
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert size < 10_000_000  # the x and y coordinates; no data chunk
    assert not list(tmp_path.glob("eu.zarr/reflectance/c"))
    ds = xr.open_zarr(store.url, chunks=None)
    assert ds.reflectance.shape == (3, 400_000, 400_000)


def test_store_pickles_small_and_hides_secrets(tmp_path):
    store = ProductStore(str(tmp_path / "out.zarr"), {"key": "AKIA", "secret": "s3cr3t"})
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and len(pickle.dumps(store)) < 300
    assert "s3cr3t" not in repr(store)
