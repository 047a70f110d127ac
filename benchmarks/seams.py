"""Seam score of the RGB stage, and of a learned fusion's bands, on a multi-tile run of the
demo region.

    python -m benchmarks.seams [--tile-size 480] [--block-size 240] [--steps 20] [--overlap N]
        [--fusion-model bicubic|gram-schmidt|difffusr-fusion]

Seam score = mean absolute difference between neighbouring 2.5 m pixels across a tile
boundary (or, for DiffFuSR, a boundary between two sampling windows inside a tile) ÷ the same
mean over all other neighbouring pixels. A seamless
result scores about 1; a visible seam scores well above 1. Bicubic, exactly seamless by
construction, is run alongside as the yardstick of what natural variation gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import xarray as xr

from benchmarks._common import demo_request, write_json
from pipeline.geo.bands import FUSED_BANDS, RGB_BANDS, SCALE
from pipeline.geo.grid import lattice_origin
from pipeline.models.superresolve import GUIDE_CONTEXT
from pipeline.product.store import ProductStore
from pipeline.run.cluster import dask_client
from pipeline.run.dispatch import run_tiles
from pipeline.run.plan import plan_region


def seam_score(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    """(bands, y, x): mean |difference| between neighbours across the given boundaries (a
    boundary b lies between pixels b − 1 and b) ÷ the same between all other neighbours."""
    dx = np.abs(np.diff(image, axis=2))  # dx[..., j] is between columns j and j + 1
    dy = np.abs(np.diff(image, axis=1))
    on_x = np.isin(np.arange(1, image.shape[2]), cols)
    on_y = np.isin(np.arange(1, image.shape[1]), rows)
    across = np.concatenate([dx[:, :, on_x].ravel(), dy[:, on_y, :].ravel()])
    inside = np.concatenate([dx[:, :, ~on_x].ravel(), dy[:, ~on_y, :].ravel()])
    return float(np.nanmean(across) / np.nanmean(inside))


def window_boundaries(origin: int, length: int, window: int, overlap: int) -> np.ndarray:
    """Output pixels (of ``length``) at the middle of each strip that two DiffFuSR windows
    share: the windows lie on a global lattice of the 10 m grid, one every window − 2·overlap
    pixels, and ``origin`` is the global 10 m index of the product's first pixel."""
    stride = window - 2 * overlap
    first, last = -(-origin // stride), (origin + length // SCALE) // stride
    edges = [SCALE * (k * stride - origin) for k in range(first, last + 1)]
    return np.array([e for e in edges if 0 < e < length])


def run(
    rgb_model: str,
    options: dict,
    fusion_model: str,
    guide_context: int | None,
    tile_size: int,
    block_size: int | None,
    workers: int,
    out: str,
) -> dict:
    request = demo_request(
        tile_size=tile_size,
        rgb_model=rgb_model,
        rgb_options=options,
        fusion_model=fusion_model,
        block_size=block_size,
    )
    plan = plan_region(request)
    plan = dataclasses.replace(
        plan, resolver=dataclasses.replace(plan.resolver, guide_context=guide_context)
    )
    store = ProductStore.create(out, plan.grid, request.bands, {})
    started = time.perf_counter()
    with dask_client(None, workers) as client:
        summary = run_tiles(plan, store, client)
    wall = time.perf_counter() - started
    if summary.failed:
        raise SystemExit(f"tiles failed: {summary.failed}")
    reflectance = xr.open_zarr(out)["reflectance"]
    image = reflectance.sel(band=list(RGB_BANDS)).values.astype(np.float32)
    rows = np.arange(tile_size, image.shape[1], tile_size)
    cols = np.arange(tile_size, image.shape[2], tile_size)
    result = {
        "tiles": len(plan.tiles),
        "wall_seconds": round(wall, 1),
        "tile_seam_score": round(seam_score(image, rows, cols), 4),
    }
    if fusion_model != "bicubic":  # the fused bands, across the tiles' edges
        fused = [b for b in request.bands if b in FUSED_BANDS]
        fused_image = reflectance.sel(band=fused).values.astype(np.float32)
        result["fused_tile_seam_score"] = round(seam_score(fused_image, rows, cols), 4)
    rgb = plan.resolver.rgb
    if hasattr(rgb, "window"):
        origin = lattice_origin(plan.grid.geobox.zoom_out(SCALE))
        edges = [
            window_boundaries(o, n, rgb.window, rgb.overlap)
            for o, n in zip(origin, image.shape[1:], strict=True)
        ]
        result["window_seam_score"] = round(seam_score(image, *edges), 4)
    return result


def change_dn(capped: str, whole: str) -> dict[str, float]:
    """How far the fused bands of the product made with the guide sampled over its default
    context lie from those made with it sampled over the fusion's whole reach, in DN."""
    fused = [b for b in xr.open_zarr(capped)["reflectance"].band.values if b in FUSED_BANDS]
    a, b = (  # the stored DN, 0 where no data
        xr.open_zarr(p, mask_and_scale=False)["reflectance"].sel(band=fused).values.astype(float)
        for p in (capped, whole)
    )
    d = np.where((a > 0) & (b > 0), np.abs(a - b), np.nan)
    return {
        "max": float(np.nanmax(d)),
        "mean": round(float(np.nanmean(d)), 4),
        "p99": float(np.nanpercentile(d, 99)),
        "share_changed": round(float(np.nanmean(d > 0)), 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile-size", type=int, default=480)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument(
        "--block-size",
        type=int,
        default=240,
        help="model block, 10 m pixels; 0: each tile's region is one block",
    )
    p.add_argument(
        "--overlap", type=int, help="difffusr window overlap, 10 m pixels (default: the model's)"
    )
    p.add_argument("--rgb-model", default="difffusr")
    p.add_argument(
        "--fusion-model",
        default="bicubic",
        help="a learned fusion also scores its bands' seams, with its guide sampled over "
        "the default context and over its whole reach",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default="benchmarks/results/seams.json")
    args = p.parse_args()
    results, products = {}, {}
    guides = {"": GUIDE_CONTEXT}
    if args.fusion_model != "bicubic":
        guides[", whole guide"] = None
    with tempfile.TemporaryDirectory() as tmp:
        for model in dict.fromkeys([args.rgb_model, "bicubic"]):
            options = {"steps": args.steps} if model == "difffusr" else {}
            if model == "difffusr" and args.overlap is not None:
                options["overlap"] = args.overlap
            for suffix, guide in guides.items() if model == "difffusr" else [("", None)]:
                label = model + suffix
                products[label] = f"{tmp}/{len(products)}.zarr"
                results[label] = run(
                    model,
                    options,
                    args.fusion_model,
                    guide,
                    args.tile_size,
                    args.block_size or None,
                    args.workers,
                    products[label],
                )
                print(label, results[label])
        whole = "difffusr, whole guide"
        if whole in products:  # what the guide's context changes in the fused product
            results["guide_context_change_dn"] = change_dn(products["difffusr"], products[whole])
            print("guide context's change (DN)", results["guide_context_change_dn"])
    write_json(args.json, {"settings": vars(args), "results": results})


if __name__ == "__main__":
    main()
