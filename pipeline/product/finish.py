"""The end of a region run: overviews, product-level quality summary, consolidated metadata
and the STAC files, in that order, while the Dask cluster is still up."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from distributed import Client

from pipeline.inputs.catalog import date_range
from pipeline.product.overviews import build_overviews, level_count, level_path, multiscales_attrs
from pipeline.product.stac import ProductFacts, QualitySummary, write_stac
from pipeline.product.store import LEVEL_ONE, ProductStore
from pipeline.redact import redact
from pipeline.run.dispatch import RunSummary
from pipeline.run.plan import Plan


def finish_product(
    plan: Plan, store: ProductStore, client: Client, summary: RunSummary
) -> dict[str, Any]:
    """Bring the product's derived parts up to date with its tiles, then consolidate; return
    the product quality summary it wrote (with the verdict), so the caller can report it.

    Each step redoes only what changed: overview shards whose tiles were rewritten, and the
    small metadata (summary, attributes, STAC) every time. Overview shards that fail are
    recorded in ``overviews_failed`` and rebuilt by the next run.
    """
    quality = QualitySummary(len(plan.tiles), len(summary.failed))
    written: dict[str, str] = {}
    level_one: set[str] = set()
    for marker in store.markers():  # one pass: marker versions for overviews, summaries
        written[marker["tile"]] = marker["written"]
        if marker.get(LEVEL_ONE):
            level_one.add(marker["tile"])
        quality.add(marker)
    failed = build_overviews(store, plan.grid, client, written, level_one)
    product_quality = quality.as_dict()
    store.finalize(
        {
            "tiles_failed": summary.failed,
            "overviews_failed": failed,
            "quality_summary": product_quality,
            **multiscales_attrs(plan.grid),
        },
        groups=[level_path(k) for k in range(1, level_count(plan.grid) + 1)],
    )
    request = plan.request
    start, end = date_range(request.start, request.end)
    facts = ProductFacts(
        name=PurePosixPath(redact(store.url).rstrip("/")).stem,
        grid=plan.grid,
        bands=request.bands,
        start=start,
        end=end.replace(microsecond=0),  # the STAC files give whole seconds
        provenance=plan.provenance(),
        source_items=plan.items,
        uncertainty=plan.resolver.uncertainty,
    )
    write_stac(store, facts, product_quality)
    return product_quality
