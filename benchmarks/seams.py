"""Seam score of the RGB stage on a multi-tile run of the demo region.

    python benchmarks/seams.py [--tile-size 480] [--block-size 60] [--rgb-model difffusr]

Seam score = mean absolute difference between neighbouring 2.5 m pixels across a tile (or
block) boundary ÷ the same mean over neighbouring pixels away from any boundary. A seamless
result scores about 1; a visible seam scores well above 1. Bicubic, exactly seamless by
construction, is run alongside as the yardstick of what natural variation gives.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from flows.region import DEMO_AOI, DEMO_DATES
from pipeline.catalog import DEMO_CATALOG
from pipeline.cluster import dask_client
from pipeline.grid import SCALE, read_aoi
from pipeline.region import RegionRequest, plan_region, run_tiles
from pipeline.store import ProductStore

RGB = ["B04", "B03", "B02"]


def seam_score(image: np.ndarray, period: int) -> float:
    """(bands, y, x): gradient across every ``period``-th row/column ÷ gradient elsewhere."""
    dx = np.abs(np.diff(image, axis=2))  # dx[..., j] is between columns j and j + 1
    dy = np.abs(np.diff(image, axis=1))
    on_x = (np.arange(dx.shape[2]) + 1) % period == 0
    on_y = (np.arange(dy.shape[1]) + 1) % period == 0
    across = np.concatenate([dx[:, :, on_x].ravel(), dy[:, on_y, :].ravel()])
    inside = np.concatenate([dx[:, :, ~on_x].ravel(), dy[:, ~on_y, :].ravel()])
    return float(np.nanmean(across) / np.nanmean(inside))


def run(rgb_model: str, tile_size: int, block_size: int, workers: int, out: str) -> dict:
    request = RegionRequest(
        aoi=read_aoi(str(DEMO_AOI)), start=DEMO_DATES[0], end=DEMO_DATES[1],
        stac=str(DEMO_CATALOG), tile_size=tile_size, rgb_model=rgb_model,
        fusion_model="bicubic", block_size=block_size,
    )
    plan = plan_region(request)
    store = ProductStore.create(out, plan.grid, request.bands, {})
    started = time.perf_counter()
    with dask_client(None, workers) as client:
        summary = run_tiles(plan, store, client)
    wall = time.perf_counter() - started
    if summary.failed:
        raise SystemExit(f"tiles failed: {summary.failed}")
    image = xr.open_zarr(out)["reflectance"].sel(band=RGB).values.astype(np.float32)
    return {
        "tiles": len(plan.tiles),
        "wall_seconds": round(wall, 1),
        "tile_seam_score": round(seam_score(image, tile_size), 4),
        "block_seam_score": round(seam_score(image, block_size * SCALE), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile-size", type=int, default=480)
    p.add_argument("--block-size", type=int, default=60, help="model block, 10 m pixels")
    p.add_argument("--rgb-model", default="difffusr")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default="benchmarks/results/seams.json")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in dict.fromkeys([args.rgb_model, "bicubic"]):
            results[model] = run(model, args.tile_size, args.block_size, args.workers,
                                 f"{tmp}/{model}.zarr")
            print(model, results[model])
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": vars(args), "results": results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
