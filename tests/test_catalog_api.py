"""Search against real STAC APIs: server-side cloud filter (pgstac) and client-side (rustac)."""

from datetime import date, datetime

import numpy as np
import pytest
from shapely.geometry import box, shape

from pipeline.errors import NoScenesError
from pipeline.inputs.catalog import search
from tests.scenes import write_scene


def collection_doc(collection_id: str, bbox: list[float]) -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": collection_id,
        "description": "synthetic test scenes",
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [["2023-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three items with 5, 40 and 80 % cloud cover, as dicts with absolute hrefs."""
    folder = tmp_path_factory.mktemp("api-scenes")
    dn = {"B04": np.full((6, 6), 2000, np.uint16)}
    items = []
    for day, cloud in ((10, 5.0), (20, 40.0), (30, 80.0)):
        item = write_scene(
            folder,
            f"api-{day}",
            datetime(2023, 1, day),
            dn,
            extra_properties={"eo:cloud_cover": cloud},
        )
        items.append(item)
    return items


def serve(factory, collection_id, items):
    docs = []
    for item in items:
        doc = item.to_dict(include_self_link=False)
        doc["collection"] = collection_id
        doc["links"] = []
        docs.append(doc)
    return factory(collection_doc(collection_id, items[0].bbox), docs)


@pytest.mark.parametrize(
    "server, collection_id, expected_filter",
    [("rustac_api", "client-side", "client"), ("pgstac_api", "server-side", "server-query")],
)
def test_cloud_filter_runs_where_the_api_allows(
    request, scenes, server, collection_id, expected_filter
):
    url = serve(request.getfixturevalue(server), collection_id, scenes)
    aoi = shape(scenes[0].geometry).buffer(-1e-5)
    found = search(url, aoi, date(2023, 1, 1), date(2023, 1, 31), collection_id, max_cloud=50)
    assert found.cloud_filter == expected_filter
    assert [i.id for i in found.items] == ["api-10", "api-20"]
    found = search(url, aoi, date(2023, 1, 15), date(2023, 1, 31), collection_id)
    assert [i.id for i in found.items] == ["api-20", "api-30"]
    with pytest.raises(NoScenesError):
        search(url, box(10, 50, 10.1, 50.1), date(2023, 1, 1), date(2023, 1, 31), collection_id)


def test_cql2_filter_when_query_is_not_offered(pgstac_api, scenes, monkeypatch):
    """An API with CQL2 filter but without query gets the cloud filter as CQL2-JSON."""
    from pystac_client import Client

    url = serve(pgstac_api, "cql2-only", scenes)
    real = Client.conforms_to

    def without_query(self, conformance_class):
        if getattr(conformance_class, "name", "") == "QUERY":
            return False
        return real(self, conformance_class)

    monkeypatch.setattr(Client, "conforms_to", without_query)
    aoi = shape(scenes[0].geometry).buffer(-1e-5)
    found = search(url, aoi, date(2023, 1, 1), date(2023, 1, 31), "cql2-only", max_cloud=50)
    assert found.cloud_filter == "server-filter"
    assert [i.id for i in found.items] == ["api-10", "api-20"]


@pytest.mark.parametrize("server", ["rustac_api", "pgstac_api"])
def test_an_estimate_fetches_one_item_and_takes_the_apis_count(request, scenes, server):
    url = serve(request.getfixturevalue(server), f"estimate-{server}", scenes)
    aoi = shape(scenes[0].geometry).buffer(-1e-5)
    found = search(url, aoi, date(2023, 1, 1), date(2023, 1, 31), f"estimate-{server}", limit=1)
    assert len(found.items) == 1
    assert found.matched is None  # neither API counts its matches unless configured to
    nothing = search(url, aoi, date(2024, 1, 1), date(2024, 1, 31), f"estimate-{server}", limit=1)
    assert nothing.items == [] and nothing.matched is None
