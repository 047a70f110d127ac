"""The end of a region run: overviews, product-level quality summary, consolidated metadata
and the STAC files, in that order, while the Dask cluster is still up."""

from __future__ import annotations

from typing import Any

from distributed import Client

from pipeline.product.overviews import build_overviews, level_count, level_path, multiscales_attrs
from pipeline.product.stac import ProductFacts, QualitySummary, write_stac
from pipeline.product.store import LEVEL_ONE, ProductStore


def finish_product(
    store: ProductStore,
    client: Client,
    facts: ProductFacts,
    tiles_planned: int,
    tiles_failed: dict[str, str],
) -> dict[str, Any]:
    """Bring the product's derived parts up to date with its tiles, then consolidate; return
    the product quality summary it wrote (with the verdict), so the caller can report it.

    ``tiles_failed`` maps the keys of the tiles that failed in this run to their errors. Each
    step redoes only what changed: overview shards whose tiles were rewritten, and the small
    metadata (summary, attributes, STAC) every time. Overview shards that fail are recorded in
    ``overviews_failed`` and rebuilt by the next run.
    """
    quality = QualitySummary(tiles_planned, len(tiles_failed))
    written: dict[str, str] = {}
    level_one: set[str] = set()
    for marker in store.markers():  # one pass: marker versions for overviews, summaries
        written[marker["tile"]] = marker["written"]
        if marker.get(LEVEL_ONE):
            level_one.add(marker["tile"])
        quality.add(marker)
    failed = build_overviews(store, facts.grid, client, written, level_one)
    product_quality = quality.as_dict()
    store.finalize(
        {
            "tiles_failed": tiles_failed,
            "overviews_failed": failed,
            "quality_summary": product_quality,
            **multiscales_attrs(facts.grid),
        },
        groups=[level_path(k) for k in range(1, level_count(facts.grid) + 1)],
    )
    write_stac(store, facts, product_quality)
    return product_quality
