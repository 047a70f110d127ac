"""Search over static catalogs and ItemCollections (the API paths run in test_catalog_api)."""

import json
from datetime import date, datetime

import numpy as np
import pystac
import pytest
from shapely.geometry import box, shape

from pipeline.errors import CatalogError, NoScenesError
from pipeline.inputs.catalog import search
from tests.scenes import write_scene


@pytest.fixture
def items(tmp_path):
    dn = {"B04": np.full((6, 6), 2000, np.uint16)}
    out = []
    for day, cloud in ((10, 5.0), (20, 40.0), (30, 80.0)):
        item = write_scene(
            tmp_path / "data",
            f"item-{day}",
            datetime(2023, 1, day),
            dn,
            extra_properties={"eo:cloud_cover": cloud},
        )
        out.append(item)
    return out


def aoi_of(items):
    return shape(items[0].geometry).buffer(-1e-5)


def static_catalog(tmp_path, items):
    catalog = pystac.Catalog("test", "test catalog")
    collection = pystac.Collection(
        "test-l2a",
        "test",
        pystac.Extent(
            pystac.SpatialExtent([items[0].bbox]),
            pystac.TemporalExtent([[datetime(2023, 1, 1), None]]),
        ),
    )
    catalog.add_child(collection)
    collection.add_items([i.clone() for i in items])
    catalog.normalize_hrefs(str(tmp_path / "stac"))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return str(tmp_path / "stac" / "catalog.json")


def test_static_catalog_filters_dates_cloud_and_place(tmp_path, items):
    href = static_catalog(tmp_path, items)
    aoi = aoi_of(items)
    found = search(href, aoi, date(2023, 1, 1), date(2023, 1, 31), max_cloud=50)
    assert [i.id for i in found.items] == ["item-10", "item-20"]
    assert found.cloud_filter == "client"
    found = search(href, aoi, date(2023, 1, 20), date(2023, 1, 30), collection="test-l2a")
    assert [i.id for i in found.items] == ["item-20", "item-30"]
    far = box(10, 50, 10.1, 50.1)
    with pytest.raises(NoScenesError, match="no scene"):
        search(href, far, date(2023, 1, 1), date(2023, 1, 31))


def test_item_collection_file(tmp_path, items):
    path = tmp_path / "items.json"
    path.write_text(json.dumps(pystac.ItemCollection(items).to_dict()))
    found = search(str(path), aoi_of(items), date(2023, 1, 15), date(2023, 1, 25))
    assert [i.id for i in found.items] == ["item-20"]


def test_item_collection_with_relative_hrefs(tmp_path, items):
    """Asset hrefs relative to the ItemCollection file resolve against its folder."""
    docs = [i.to_dict(include_self_link=False) for i in items]
    for doc in docs:
        for asset in doc["assets"].values():
            asset["href"] = "data/" + asset["href"].rsplit("/", 1)[1]
    path = tmp_path / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": docs}))
    found = search(str(path), aoi_of(items), date(2023, 1, 1), date(2023, 1, 15))
    href = found.items[0].assets["B04"].get_absolute_href()
    assert href == str(tmp_path / "data" / "item-10_B04.tif")


def test_unreachable_and_non_stac(tmp_path, items):
    with pytest.raises(CatalogError, match="not found"):
        search(str(tmp_path / "missing.json"), aoi_of(items), date(2023, 1, 1), date(2023, 2, 1))
    with pytest.raises(CatalogError, match="cannot reach"):
        search("http://127.0.0.1:9/stac", aoi_of(items), date(2023, 1, 1), date(2023, 2, 1))
    bad = tmp_path / "bad.json"
    bad.write_text("<html>")
    with pytest.raises(CatalogError, match="does not answer with STAC JSON"):
        search(str(bad), aoi_of(items), date(2023, 1, 1), date(2023, 2, 1))
