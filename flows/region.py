"""The main job: super-resolve all Sentinel-2 bands over an AOI to a 2.5 m Zarr mosaic.

    python -m flows.region --aoi europe.geojson --start 2024-06-01 --end 2024-08-31 \\
        --stac https://earth-search.aws.element84.com/v1 --collection sentinel-2-c1-l2a \\
        --out s3://bucket/europe-2024.zarr

With no arguments it runs on the embedded demo catalog and writes under ./output/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TypeVar

from distributed import Client
from pyproj import CRS
from tqdm import tqdm

from flows._cli import OneLineErrors, iso_date, query_dates, run_command
from flows._models import (
    STAGES,
    add_option_groups,
    check_device,
    learned_models,
    model_options,
    uses_learned,
)
from pipeline.demo import DEMO_AOI, DEMO_CATALOG
from pipeline.errors import UserError
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import REFLECTANCE_BANDS, validate_bands
from pipeline.geo.crs import parse_crs
from pipeline.geo.grid import check_tile_size
from pipeline.inputs.catalog import is_demo_catalog
from pipeline.inputs.signing import AUTO, SIGN_CHOICES
from pipeline.models.published import describe
from pipeline.models.superresolve import CPU_LAYOUT, GPU_LAYOUT, Layout, layout_for
from pipeline.network import timeout
from pipeline.product.finish import finish_product
from pipeline.product.lease import held
from pipeline.product.store import ProductStore
from pipeline.quality.verdict import no_data_line, warning_line
from pipeline.redact import redact
from pipeline.run.cluster import (
    SCHEDULER_ENV,
    cuda_devices,
    dask_client,
    runs_on_cuda,
    scheduler_address,
)
from pipeline.run.dispatch import RunSummary, run_tiles
from pipeline.run.plan import Plan, RegionRequest, plan_region

#: What ``--rgb-model`` and ``--fusion-model`` choose, and their defaults.
MODEL_CHOICE = {"rgb": ("RGB ×4 model", "bicubic"), "fusion": ("band fusion model", "gram-schmidt")}
#: At most this many ``warning: item ... skipped`` lines; a count stands for the rest.
SKIPPED_SHOWN = 5
T = TypeVar("T")


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python -m flows.region",
        description="Super-resolve the 12 Sentinel-2 L2A bands over an AOI to a 2.5 m Zarr.",
    )
    _add_query(p)
    _add_output(p)
    _add_cluster(p)
    _add_models(p)
    _add_product(p)
    return p


def _add_query(p: argparse.ArgumentParser) -> None:
    """Where and when: the AOI, the dates and the catalog."""
    p.add_argument(
        "--aoi",
        default=str(DEMO_AOI),
        help="GeoJSON polygon(s) in WGS84 (path or URL; default: the embedded demo AOI)",
    )
    p.add_argument(
        "--start",
        type=iso_date,
        help="first date, YYYY-MM-DD (required with --stac; default for the demo: 2023-01-01)",
    )
    p.add_argument("--end", type=iso_date, help="last date, YYYY-MM-DD, inclusive")
    p.add_argument(
        "--stac",
        help="STAC API URL, static catalog or ItemCollection (path or URL; "
        "default: the embedded demo catalog)",
    )
    p.add_argument(
        "--collection",
        help="collection id, e.g. sentinel-2-c1-l2a (Earth Search) "
        "or sentinel-2-l2a (Planetary Computer)",
    )
    p.add_argument(
        "--sign",
        choices=SIGN_CHOICES,
        default=AUTO,
        help="sign asset hrefs with short-lived tokens just before each read: "
        "planetary-computer, or none (default: auto, i.e. planetary-computer for "
        "Planetary Computer's STAC API, else none)",
    )
    p.add_argument(
        "--max-cloud",
        type=_percent,
        default=100.0,
        metavar="PERCENT",
        help="skip scenes with more cloud cover than this (default: 100)",
    )


def _add_output(p: argparse.ArgumentParser) -> None:
    """Where the product goes and its grid."""
    p.add_argument(
        "--out",
        help="output Zarr: local path or fsspec URL such as s3://bucket/x.zarr "
        "(default: ./output/<aoi>-<start>-<end>.zarr)",
    )
    p.add_argument(
        "--crs",
        type=_crs,
        help="output CRS as EPSG:code (default: EPSG:3035 "
        "inside LAEA Europe's area, else the UTM zone of the AOI centroid)",
    )
    p.add_argument(
        "--tile-size",
        type=int,
        help="output tile edge in 2.5 m pixels, a multiple of 24 "
        f"(default: {CPU_LAYOUT.tile_size}; {GPU_LAYOUT.tile_size} when "
        f"--rgb-model {learned_models('rgb')} runs on CUDA)",
    )


def _add_cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        type=_scheduler,
        default=os.environ.get(SCHEDULER_ENV),
        help="address of an existing Dask scheduler (default: $"
        f"{SCHEDULER_ENV} if set, else start a local cluster)",
    )
    p.add_argument(
        "--workers",
        type=_positive,
        help="worker processes of the local cluster "
        "(default: 2 on CPUs; one per GPU when a learned model runs on CUDA)",
    )


def _add_models(p: argparse.ArgumentParser) -> None:
    """Each stage's model and each model's own options, then the device of the learned ones."""
    for stage, (what, default) in MODEL_CHOICE.items():
        p.add_argument(
            f"--{stage}-model",
            default=default,
            choices=sorted(STAGES[stage]),
            help=f"{what} (default: {default})",
        )
        add_option_groups(p, stage)
    p.add_argument(
        "--device",
        help=f"torch device of the learned models ({learned_models()}), e.g. cuda or cpu "
        "(default: cuda when present)",
    )


def _add_product(p: argparse.ArgumentParser) -> None:
    """What the product holds, and how a run treats one that exists."""
    p.add_argument(
        "--bands",
        nargs="+",
        default=list(REFLECTANCE_BANDS),
        metavar="BAND",
        help="bands to write (default: all 12)",
    )
    p.add_argument(
        "--keep-snow",
        action="store_true",
        help="count SCL snow/ice pixels as clear (default: masked)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="recompute finished tiles (default: a re-run skips them); refused "
        "while another run writes the product",
    )
    p.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the bucket of --out if it does not exist (default: refused)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (tiles, items, output size) and do no work",
    )


def _crs(text: str) -> CRS:
    return _checked(parse_crs, text)


def _scheduler(text: str) -> str:
    return _checked(scheduler_address, text)


def _percent(text: str) -> float:
    value = _checked(float, text)
    if not 0 <= value <= 100:  # NaN too
        raise argparse.ArgumentTypeError(f"not a percentage from 0 to 100: {text!r}")
    return value


def _positive(text: str) -> int:
    value = _checked(int, text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _checked(parse: Callable[[str], T], text: str) -> T:
    """``parse(text)``; its ValueError as argparse's one-line usage error."""
    try:
        return parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    return run_command(run, parser(), argv, "finished tiles are kept; re-run to complete the rest")


def run(args: argparse.Namespace) -> int:
    timeout()  # a bad $S2SR_TIMEOUT is refused before anything is read
    request = _request(args)
    out = args.out or _default_out(args.aoi, request.start, request.end)
    shown = redact(out)  # what is printed of it
    started = time.perf_counter()
    plan = plan_region(request, estimate=args.dry_run)
    for model in (plan.resolver.rgb, plan.resolver.fusion):
        for line in describe(model, is_demo_catalog(args.stac)):
            print(redact(line), file=sys.stderr)
    for line in _plan_warnings(plan):
        print(redact(line), file=sys.stderr)
    print(plan.describe())
    print(f"output:        {shown}")
    if args.dry_run:
        return 0
    with dask_client(args.scheduler, args.workers, _local_gpus(args)) as client:
        store = ProductStore.create(
            out,
            plan.grid,
            request.bands,
            plan.provenance(),
            uncertainty=plan.resolver.uncertainty,
            overwrite=args.overwrite,
            create_bucket=args.create_bucket,
        )
        with held(store):
            summary = _run_tiles(plan, store, client)
            quality, stopped = {}, _lost(plan, summary)
            if stopped is None:
                try:
                    quality = finish_product(
                        store,
                        client,
                        plan.product_facts(store.url),
                        len(plan.tiles),
                        summary.failed,
                    )
                except UserError as err:  # a full disk, say: the tiles written are kept
                    stopped = str(err)
    elapsed = time.perf_counter() - started
    print(
        f"{len(summary.done)} tiles written, {len(summary.skipped)} already finished, "
        f"{len(summary.failed)} failed in {elapsed:.1f} s"
    )
    for key, reason in summary.failed.items():
        print(f"  failed tile {key}: {reason}", file=sys.stderr)
    if stopped:
        print(f"error: {redact(stopped)}", file=sys.stderr)
    if summary.done or summary.skipped:
        print(f"product: {shown}")
        print(f"open it in Python: import xarray as xr; ds = xr.open_zarr({shown!r})")
    for warning in (warning_line(quality), no_data_line(quality)):
        if warning:  # the last lines, where nobody can miss them
            print(warning, file=sys.stderr)
    return 1 if summary.failed or stopped else 0


def _run_tiles(plan: Plan, store: ProductStore, client: Client) -> RunSummary:
    """Every unfinished tile, under a progress bar with a line per failed try."""
    with tqdm(total=len(plan.tiles), unit="tile", desc="tiles", dynamic_ncols=True) as bar:

        def progress(key: str, error: str | None) -> None:
            bar.update(1)
            if error:
                bar.write(f"tile {key} failed: {error}", file=sys.stderr)

        def retrying(key: str, error: str, delay: float) -> None:
            bar.write(f"tile {key} failed: {error}; retrying in {delay:g} s", file=sys.stderr)

        return run_tiles(plan, store, client, on_progress=progress, on_retry=retrying)


def _lost(plan: Plan, summary: RunSummary) -> str | None:
    """What to say when the run lost its scheduler before every tile was tried."""
    if summary.lost is None:
        return None
    left = len(plan.tiles) - len(summary.done) - len(summary.skipped) - len(summary.failed)
    return (
        f"lost the Dask scheduler {summary.lost} before {left} tiles were done: the tiles "
        "written are kept; re-run to complete the rest"
    )


def _plan_warnings(plan: Plan) -> list[str]:
    """The plan's warnings and its skipped items (the first few, then how many more)."""
    lines = [f"warning: {w}" for w in plan.warnings]
    reasons = list(plan.skipped.values())
    lines += [f"warning: skipped {r}" for r in reasons[:SKIPPED_SHOWN]]
    if len(reasons) > SKIPPED_SHOWN:
        lines.append(
            f"warning: skipped {len(reasons) - SKIPPED_SHOWN} more items whose "
            "properties cannot be read"
        )
    return lines


def _request(args: argparse.Namespace) -> RegionRequest:
    start, end = query_dates(args)
    try:
        bands = validate_bands(args.bands)
    except ValueError as err:
        raise UserError(str(err)) from None
    layout = _layout(args)
    aoi = read_aoi(args.aoi)
    tile_size = _tile_size(layout.tile_size if args.tile_size is None else args.tile_size)
    check_device(args)
    demo = is_demo_catalog(args.stac)
    return RegionRequest(
        aoi=aoi,
        start=start,
        end=end,
        stac=args.stac or str(DEMO_CATALOG),
        collection=args.collection,
        max_cloud=args.max_cloud,
        crs=args.crs,
        tile_size=tile_size,
        block_size=layout.block_size,
        bands=bands,
        rgb_model=args.rgb_model,
        rgb_options=model_options(args, "rgb", demo),
        fusion_model=args.fusion_model,
        fusion_options=model_options(args, "fusion", demo),
        mask_snow=not args.keep_snow,
        sign=args.sign,
    )


def _local_gpus(args: argparse.Namespace) -> int:
    """GPUs for a local cluster: only a learned model uses them, and not with --device cpu."""
    if args.scheduler or not uses_learned(args) or (args.device or "").startswith("cpu"):
        return 0
    return cuda_devices()


def _layout(args: argparse.Namespace) -> Layout:
    """The GPU layout when the diffusion model will run on CUDA, decided as the model decides
    its own defaults (``--device``, else this machine's), else the CPU layout."""
    if not STAGES["rgb"][args.rgb_model].learned:
        return layout_for(False)
    return layout_for(runs_on_cuda(args.device))


def _tile_size(size: int) -> int:
    try:
        return check_tile_size(size)
    except ValueError as err:
        raise UserError(f"--tile-size {size}: {err}") from None


def _default_out(aoi: str, start: date, end: date) -> str:
    stem = Path(aoi).stem or "aoi"
    return str(Path("output") / f"{stem}-{start}-{end}.zarr")


if __name__ == "__main__":
    sys.exit(main())
