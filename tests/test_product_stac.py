"""The end of a run: STAC files valid and pointing at the product, the product-level quality
summary, consolidated metadata covering the overviews; on a local path and on S3."""

from __future__ import annotations

import importlib.resources
import json
import warnings
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pystac
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from shapely.geometry import box

from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.product.finish import finish_product
from pipeline.product.overviews import level_count
from pipeline.product.store import ProductStore
from pipeline.run.plan import Plan, RegionRequest, plan_region

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")

#: Two finished tiles of the demo grid at 480 px: a whole one and the bottom-right part tile.
SUMMARIES = {
    "0_0": {
        "valid_fraction": 1.0,
        "mean_clear_count": 2.0,
        "mean_consistency": 0.001,
        "mean_spectral_angle": 0.5,
        "hallucination_risk_fraction": 0.0,
    },
    "1_2": {
        "valid_fraction": 0.5,
        "mean_clear_count": 1.0,
        "mean_consistency": 0.004,
        "mean_spectral_angle": 2.0,
        "hallucination_risk_fraction": 0.2,
    },
}


@pytest.fixture(scope="module")
def plan() -> Plan:
    start, end = DEMO_DATES
    return plan_region(
        RegionRequest(read_aoi(str(DEMO_AOI)), start, end, str(DEMO_CATALOG), tile_size=480)
    )


def make_product(url: str, plan: Plan, client: Any) -> ProductStore:
    """A product of the demo plan with two synthetic tiles, finished as a run finishes it."""
    store = ProductStore.create(url, plan.grid, plan.request.bands, plan.provenance())
    rng = np.random.default_rng(0)
    for tile in plan.tiles:
        if tile.key in SUMMARIES:
            shape = (len(plan.request.bands), tile.height, tile.width)
            reflectance = rng.uniform(0.01, 0.5, shape).astype(np.float32)
            count = np.ones(shape[1:], np.uint8)
            store.write_tile(plan.grid, tile, reflectance, count, SUMMARIES[tile.key])
    failed = {"0_1": "RuntimeError: boom"}
    quality = finish_product(store, client, plan.product_facts(url), len(plan.tiles), failed)
    assert quality == xr.open_zarr(url).attrs["quality_summary"]  # what it wrote, no second read
    return store


def read_json(url: str) -> dict[str, Any]:
    with fsspec.open(url, "rt") as f:
        return json.load(f)


def pystac_schemas() -> dict[str, str]:
    """Schema URL → the copy that the installed pystac ships (STAC 1.1.0 core and GeoJSON)."""
    from pystac.validation.local_validator import get_local_schema_cache

    root = importlib.resources.files("pystac.validation.jsonschemas")
    paths = {}
    for url in get_local_schema_cache():
        name = url.rsplit("/", 1)[-1]
        folder = "geojson" if "geojson.org" in url else f"stac-spec/v{pystac.get_stac_version()}"
        paths[url] = str(root / folder / name)
    return paths


def validate(doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """stac-validator's core validation, offline: any attempt to fetch a schema fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it points at its successor
        import stac_validator.utilities as utilities
        from stac_validator.validate import StacValidate

    def offline(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the validator went online: {args}")

    monkeypatch.setattr(utilities.requests, "get", offline)
    monkeypatch.setattr(utilities, "urlopen", offline)
    validator = StacValidate(core=True, schema_map=pystac_schemas())
    validator.validate_dict(doc)
    return validator.message


def check_product(store: ProductStore, plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    item_url = f"{store.url}/stac/item.json"
    item_doc, collection_doc = read_json(item_url), read_json(f"{store.url}/stac/collection.json")
    for doc in (item_doc, collection_doc):
        [message] = validate(doc, monkeypatch)
        assert message["valid_stac"], message

    item = pystac.Item.from_dict(item_doc)
    aoi = read_aoi(str(DEMO_AOI))
    assert box(*item.bbox).contains(aoi)
    assert box(*collection_doc["extent"]["spatial"]["bbox"][0]).contains(aoi)
    assert collection_doc["extent"]["temporal"]["interval"] == [
        ["2023-01-01T00:00:00Z", "2023-01-31T23:59:59Z"]
    ]
    assert item.properties["proj:code"] == "EPSG:32719"
    assert item.properties["proj:shape"] == [plan.grid.height, plan.grid.width]
    assert item.properties["s2sr:recipe"] == plan.provenance()["recipe"]
    assert item.properties["s2sr:source_item_ids"] == [i.id for i in plan.items]
    assert sum(link.rel == "derived_from" for link in item.links) == len(plan.items)

    zarr_asset = item.assets["zarr"]
    assert zarr_asset.media_type == "application/vnd+zarr" and zarr_asset.roles == ["data"]
    eo_bands = zarr_asset.extra_fields["eo:bands"]
    raster_bands = zarr_asset.extra_fields["raster:bands"]
    assert [b["name"] for b in eo_bands] == list(plan.request.bands)
    assert eo_bands[3] == {
        "name": "B04",
        "common_name": "red",
        "center_wavelength": 0.665,
        "description": "Sentinel-2 B04 at 2.5 m (native 10 m)",
    }
    assert raster_bands[0] == {
        "nodata": 0,
        "data_type": "uint16",
        "scale": 0.0001,
        "offset": 0.0,
        "spatial_resolution": 2.5,
        "unit": "1",
    }
    assert item.assets["hallucination_risk"].extra_fields["raster:bands"][0]["nodata"] == 255
    overviews = [k for k in item.assets if k.startswith("overview_")]
    assert len(overviews) == level_count(plan.grid) == 4

    href = pystac.utils.make_absolute_href(zarr_asset.href, item_url)
    ds = xr.open_zarr(href.rstrip("/"), consolidated=True)
    assert ds.reflectance.shape == (12, plan.grid.height, plan.grid.width)
    level = item.assets["overview_2"]
    opened = xr.open_zarr(pystac.utils.make_absolute_href(level.href, item_url), consolidated=True)
    assert list(opened.reflectance.shape[1:]) == level.extra_fields["proj:shape"]

    # The quality summary, weighted by pixels (tile 1_2 has 168 x 96 px, half of them valid).
    whole, part = 480 * 480, 168 * 96
    summary = ds.attrs["quality_summary"]
    assert summary == item.properties["s2sr:quality"]
    assert (summary["tiles_planned"], summary["tiles_done"], summary["tiles_failed"]) == (6, 2, 1)
    assert summary["valid_fraction"] == round((whole + part / 2) / (whole + part), 6)
    assert summary["mean_consistency"] == round(
        (whole * 0.001 + part / 2 * 0.004) / (whole + part / 2), 6
    )
    assert summary["hallucination_risk_fraction"] == round(part / 2 * 0.2 / (whole + part / 2), 6)
    # A fifth of a part tile's pixels flagged is 0.7 % of the product's: under the limit.
    assert summary["verdict"] == "ok"
    assert summary["verdict_reason"].startswith("0.7 % of the product's pixels are flagged")
    assert item.properties["s2sr:quality_verdict"] == "ok"
    assert (
        item.properties["s2sr:hallucination_risk_fraction"]
        == summary["hallucination_risk_fraction"]
    )
    assert ds.attrs["tiles_failed"] == {"0_1": "RuntimeError: boom"}


def check_consolidated(url: str) -> None:
    """One read gives the metadata of every level: no array or group is looked up."""
    group = zarr.open_consolidated(url)
    nodes = group.metadata.consolidated_metadata.flattened_metadata
    assert {"reflectance", "overviews/1/reflectance", "overviews/4/spatial_ref"} <= set(nodes)
    level = xr.open_zarr(url, group="overviews/4", consolidated=True)
    assert level.rio.crs.to_epsg() == 32719


@pytest.fixture(scope="module")
def local_product(plan, dask_client, tmp_path_factory) -> ProductStore:
    return make_product(str(tmp_path_factory.mktemp("stac") / "demo.zarr"), plan, dask_client)


def test_local_product(local_product, plan, monkeypatch):
    check_product(local_product, plan, monkeypatch)
    check_consolidated(local_product.url)
    assert (Path(local_product.url) / "stac" / "item.json").is_file()


def test_validator_catches_an_invalid_item(local_product, monkeypatch):
    item = read_json(f"{local_product.url}/stac/item.json")
    del item["properties"]["datetime"]
    [message] = validate(item, monkeypatch)
    assert not message["valid_stac"]


@pytest.mark.slow
def test_s3_product(plan, s3_server, dask_client, monkeypatch):
    s3_server.create_bucket("stac-products")
    store = make_product("s3://stac-products/demo.zarr", plan, dask_client)
    check_product(store, plan, monkeypatch)
    check_consolidated(store.url)
