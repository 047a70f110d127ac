"""STAC search over an API (pystac-client) or a static catalog / ItemCollection (pystac).

The cloud-cover filter runs on the server when the API conforms to the query or CQL2 filter
extension, and on the client otherwise; the result says which one ran.

An item whose document the STAC library cannot read stops the search with one line (the
catalog is broken, and what the item held is unknown). An item that reads but holds a value
that this pipeline cannot interpret (``eo:cloud_cover`` when a cloud filter is asked, its
processing baseline, projection, date or footprint) is skipped, and the result lists it with
the reason: one bad item of a continent's catalog does not stop a run.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Literal, TypeVar

import fsspec
import pystac
import pystac.stac_io
import pystac_client
import shapely
from pystac_client.conformance import ConformanceClasses
from pystac_client.stac_api_io import StacApiIO
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.demo import DEMO_CATALOG
from pipeline.errors import CatalogError, ItemError, NoScenesError, reason
from pipeline.inputs.load import Scene, read_property, scene_from_dict, to_scene
from pipeline.network import http_retries, no_answer, storage_options, timed_out, timeout

#: Items per page asked of an API: a continent's tens of thousands of items in tens of
#: requests rather than thousands (an API may answer with fewer).
PAGE_SIZE = 1000


def is_demo_catalog(stac: str | None) -> bool:
    """Whether ``stac`` is the embedded demo catalog (None, no catalog given, stands for it)."""
    return stac is None or ("://" not in stac and Path(stac).resolve() == DEMO_CATALOG)


T = TypeVar("T")
CloudFilter = Literal["server-query", "server-filter", "client"]


@dataclass(frozen=True)
class Query:
    """What to search for: place (WGS84), inclusive date range, collection, cloud limit."""

    aoi: BaseGeometry
    start: date
    end: date
    collection: str | None
    max_cloud: float


@dataclass(frozen=True)
class SearchResult:
    items: list[pystac.Item] | list[Scene]
    cloud_filter: CloudFilter  # where the cloud-cover filter ran
    #: How many items match in all, when only some were fetched (``limit``) and the catalog
    #: says (an API's ``numberMatched``, before a client-side cloud filter); else None.
    matched: int | None = None
    #: The items left out for a value that cannot be read: id → the one-line reason.
    skipped: dict[str, str] = field(default_factory=dict)


def search(
    stac: str,
    aoi: BaseGeometry,
    start: date,
    end: date,
    collection: str | None = None,
    max_cloud: float = 100.0,
    limit: int | None = None,
    scenes: bool = False,
) -> SearchResult:
    """Items of ``collection`` that intersect ``aoi`` (WGS84) between ``start`` and ``end``.

    With ``limit``, at most that many items are fetched (a plan's estimate over a continent
    must not page through a hundred thousand items), none found is no error, and the result
    says how many match in all when the catalog knows. With ``scenes``, each item is reduced
    to a :class:`~pipeline.inputs.load.Scene` as it arrives, so that the pages of a continent's
    search never sit in memory as full items.
    """
    query = Query(aoi, start, end, collection, max_cloud)
    reduce = to_scene if scenes else _as_is
    doc = _read_json(stac)
    api = _is_search_api(doc)
    if api:
        result = _search_api(stac, query, limit, scenes)
    else:
        result = _filter_locally(_static_items(stac, doc), query, reduce)
    if limit is not None:
        # searched locally, every match is at hand; an API counts them or does not
        matched = result.matched if api else len(result.items)
        return SearchResult(result.items[:limit], result.cloud_filter, matched, result.skipped)
    if not result.items:
        raise no_scenes(query, result.skipped)
    return result


def _static_items(stac: str, doc: dict) -> list[pystac.Item]:
    """Every item of an ItemCollection or a static catalog; CatalogError for one that the STAC
    library cannot read."""
    try:
        if doc.get("type") == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
            for item in items:  # relative asset hrefs are relative to the file
                if item.get_self_href() is None:
                    item.set_self_href(_as_href(stac))
            return items
        catalog = pystac.read_dict(doc, href=_as_href(stac), stac_io=FsspecStacIO())
        if not isinstance(catalog, pystac.Catalog):
            raise CatalogError(f"{stac} is not a STAC catalog, collection, API or ItemCollection")
        return list(catalog.get_items(recursive=True))
    except CatalogError:
        raise
    except Exception as err:  # pystac raises many types for a broken document
        raise CatalogError(f"cannot read the items of {stac}: {reason(err)}") from None


def no_scenes(query: Query, skipped: dict[str, str] | None = None) -> NoScenesError:
    """The one-line error of a search that matched nothing (saying so when items were skipped
    for values that cannot be read)."""
    where = f" in collection {query.collection}" if query.collection else ""
    why = ""
    if skipped:
        why = f" ({len(skipped)} skipped as unreadable, the first: {next(iter(skipped.values()))})"
    return NoScenesError(
        f"no scene{where} with cloud cover <= {query.max_cloud:g}% intersects the AOI "
        f"between {query.start} and {query.end}{why}"
    )


def _usable(
    items: Iterable[T],
    wanted: Callable[[T], bool],
    reduce: Callable[[T], object],
    skipped: dict[str, str],
) -> list:
    """``reduce`` of the ``wanted`` items; those with a value that cannot be read are left out
    and recorded in ``skipped``."""
    kept = []
    for item in items:
        try:
            if wanted(item):
                kept.append(reduce(item))
        except ItemError as err:
            skipped[err.item_id] = str(err)
    return kept


def _as_is(item: pystac.Item) -> pystac.Item:
    return item


class FsspecStacIO(pystac.stac_io.DefaultStacIO):
    """Reads catalogs from anything fsspec opens (local, http, s3://, gs://, ...)."""

    def read_text_from_href(self, href: str) -> str:
        with _open(href) as f:
            return f.read()


def _open(href: str) -> fsspec.core.OpenFile:
    """``href`` opened for reading text, with the network's time limits."""
    return fsspec.open(href, "rt", **storage_options(href, timeout()))


def _as_href(stac: str) -> str:
    return stac if "://" in stac else str(Path(stac).resolve())


def _read_json(stac: str) -> dict:
    seconds = timeout()
    try:
        with _open(stac) as f:
            doc = json.load(f)
    except FileNotFoundError as err:
        cause = err  # fsspec's HTTP filesystem wraps connection failures, once or twice
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if not isinstance(cause, FileNotFoundError):
            why = no_answer(seconds) if timed_out(cause) else reason(cause)
            raise CatalogError(f"cannot reach STAC catalog {stac}: {why}") from None
        raise CatalogError(f"STAC catalog not found: {stac}") from None
    except json.JSONDecodeError:
        raise CatalogError(f"{stac} does not answer with STAC JSON") from None
    except Exception as err:  # network stacks raise many unrelated types
        why = no_answer(seconds) if timed_out(err) else reason(err)
        raise CatalogError(f"cannot reach STAC catalog {stac}: {why}") from None
    if not isinstance(doc, dict):
        raise CatalogError(f"{stac} does not answer with STAC JSON")
    return doc


def _is_search_api(doc: dict) -> bool:
    conforms = doc.get("conformsTo") or []
    return any(c.endswith("/item-search") for c in conforms)


def _search_api(url: str, query: Query, limit: int | None, scenes: bool) -> SearchResult:
    max_cloud = query.max_cloud
    wait = (timeout(),) * 2  # to connect, and between two bytes of an answer
    try:
        io = StacApiIO(timeout=wait, max_retries=http_retries())
        client = pystac_client.Client.open(url, stac_io=io, timeout=wait)
        kwargs: dict = {
            "intersects": shapely.geometry.mapping(query.aoi),
            "datetime": _datetime_range(query.start, query.end),
            "collections": [query.collection] if query.collection else None,
        }
        cloud_filter: CloudFilter = "client"
        if max_cloud < 100:
            if client.conforms_to(ConformanceClasses.QUERY):
                kwargs["query"] = {"eo:cloud_cover": {"lte": max_cloud}}
                cloud_filter = "server-query"
            elif client.conforms_to(ConformanceClasses.FILTER):
                kwargs["filter"] = {
                    "op": "<=",
                    "args": [{"property": "eo:cloud_cover"}, max_cloud],
                }
                kwargs["filter_lang"] = "cql2-json"
                cloud_filter = "server-filter"
        found = client.search(**kwargs, max_items=limit, limit=PAGE_SIZE)

        def wanted(item_id: str, properties: dict) -> bool:
            return cloud_filter != "client" or _cloud_free_enough(item_id, properties, max_cloud)

        skipped: dict[str, str] = {}
        if scenes:  # straight from the JSON: a pystac Item costs milliseconds to make
            items = _usable(
                found.items_as_dicts(),
                lambda d: wanted(d["id"], d["properties"]),
                scene_from_dict,
                skipped,
            )
        else:
            items = _usable(found.items(), lambda i: wanted(i.id, i.properties), _as_is, skipped)
        with warnings.catch_warnings():  # an API that does not count says so with a warning
            warnings.simplefilter("ignore")
            matched = found.matched() if limit is not None else None
    except Exception as err:
        if timed_out(err):  # after its retries
            raise CatalogError(f"cannot search STAC API {url}: {no_answer(wait[1])}") from None
        if isinstance(err, pystac_client.exceptions.APIError):
            raise CatalogError(f"STAC API {url} refused the search: {reason(err)}") from None
        # requests/urllib3 connection errors
        raise CatalogError(f"cannot search STAC API {url}: {reason(err)}") from None
    return SearchResult(_sorted(items), cloud_filter, matched, skipped)


def _filter_locally(
    items: list[pystac.Item], query: Query, reduce: Callable[[pystac.Item], object]
) -> SearchResult:
    first, last = date_range(query.start, query.end)

    def wanted(item: pystac.Item) -> bool:
        return (
            (query.collection is None or item.collection_id == query.collection)
            and item.geometry is not None
            and read_property(
                item.id, "geometry", item.geometry, "a GeoJSON geometry", shape
            ).intersects(query.aoi)
            and item.datetime is not None
            and first <= item.datetime <= last
            and _cloud_free_enough(item.id, item.properties, query.max_cloud)
        )

    skipped: dict[str, str] = {}
    kept = _usable(items, wanted, reduce, skipped)
    return SearchResult(_sorted(kept), "client", skipped=skipped)


def _cloud_free_enough(item_id: str, properties: dict, max_cloud: float) -> bool:
    """Whether the item's cloud cover is within ``max_cloud`` (at 100 it is not looked at;
    an item without one is kept); ItemError for one that is not a number."""
    value = properties.get("eo:cloud_cover")
    if max_cloud >= 100 or value is None:
        return True
    return read_property(item_id, "eo:cloud_cover", value, "a number", float) <= max_cloud


def _sorted(items: list) -> list:
    """By date, then id (pystac Items and Scenes alike)."""
    earliest = datetime.min.replace(tzinfo=UTC)
    return sorted(items, key=lambda i: (i.datetime or earliest, i.id))


def date_range(start: date, end: date) -> tuple[datetime, datetime]:
    """The first and last instant (UTC) of the dates ``start`` to ``end``, both included."""
    return datetime.combine(start, time.min, UTC), datetime.combine(end, time.max, UTC)


def _datetime_range(start: date, end: date) -> str:
    first, last = date_range(start, end)
    return f"{first.isoformat().replace('+00:00', 'Z')}/{last.isoformat().replace('+00:00', 'Z')}"
