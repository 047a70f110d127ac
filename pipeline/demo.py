"""The embedded demo: a small catalog of one Sentinel-2 scene in Patagonia seen on three dates
of January 2023, and an AOI inside it (``examples/``). The region flow runs it when given no
catalog; tests, benchmarks and training examples use it as real data that needs no network."""

from __future__ import annotations

from datetime import date
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_CATALOG = EXAMPLES / "demo" / "catalog.json"
DEMO_AOI = EXAMPLES / "demo.geojson"
DEMO_DATES = (date(2023, 1, 1), date(2023, 1, 31))
