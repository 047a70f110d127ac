"""What the training commands share: their common option groups (the run, Sentinel-2 data,
the network preset, validation and checkpoints, the device) and the progress-bar loop that turns
Ctrl-C into a checkpoint."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

from flows._cli import iso_date, query_dates
from pipeline.demo import DEMO_AOI, DEMO_CATALOG
from pipeline.errors import UserError, reason
from pipeline.geo.aoi import read_aoi
from pipeline.train.runs import Run, TrainingDiverged

#: Options of ``add_sentinel_options``, in argparse's attribute names.
SENTINEL_OPTIONS = ("stac", "collection", "aoi", "start", "end")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The run directory, new or resumed."""
    p.add_argument("--out", required=True, help="run directory (checkpoint, log, weights)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )


def add_setting(group: argparse._ArgumentGroup, config: object, field: str, text: str = "") -> None:
    """``--<field>``, with the type and default of ``config``'s field; the help says the
    default after ``text``."""
    value = getattr(config, field)
    shown = f"default: {value}"
    group.add_argument(
        "--" + field.replace("_", "-"),
        type=type(value),
        default=value,
        help=f"{text} ({shown})" if text else shown,
    )


def add_preset(p: argparse.ArgumentParser, presets: Iterable[str]) -> argparse._ArgumentGroup:
    """The network group, with its preset of sizes; the command adds the overrides."""
    group = p.add_argument_group("network (a preset, then overrides)")
    group.add_argument(
        "--preset",
        choices=sorted(presets),
        default="small",
        help="network sizes (default: small, for CPUs)",
    )
    return group


def add_checks(p: argparse.ArgumentParser, config: object, patches: str) -> None:
    """Validation and checkpoint settings, those that ``config`` has; ``patches`` says what
    its held-out samples are."""
    check = p.add_argument_group("validation and checkpoints")
    texts = {
        "val_every": "steps between validations",
        "val_patches": patches,
        "val_steps": "DDIM steps of validation sampling",
        "ckpt_every": "steps between checkpoints",
    }
    for field, text in texts.items():
        if hasattr(config, field):
            add_setting(check, config, field, text)


def add_sentinel_options(group: argparse._ArgumentGroup) -> None:
    """The catalog query, as in ``flows.region``; defaults are resolved by :func:`sentinel_query`
    so a command can tell whether they were given."""
    group.add_argument(
        "--stac",
        help="STAC API URL, static catalog or ItemCollection (default: the embedded demo catalog)",
    )
    group.add_argument("--collection", help="collection id, e.g. sentinel-2-c1-l2a")
    group.add_argument("--aoi", help="GeoJSON training area in WGS84 (default: the demo AOI)")
    group.add_argument("--start", type=iso_date, help="first date, YYYY-MM-DD")
    group.add_argument("--end", type=iso_date, help="last date, YYYY-MM-DD, inclusive")
    group.add_argument(
        "--max-cloud",
        type=float,
        default=100.0,
        metavar="PERCENT",
        help="skip scenes with more cloud cover than this (default: 100)",
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        default=0.25,
        help="eastern share of the composite held out for validation (default: 0.25)",
    )


@dataclass(frozen=True)
class SentinelQuery:
    """The resolved catalog query: without ``--stac``, the demo catalog, AOI and dates; and
    the share of the composite held out."""

    stac: str
    aoi_path: str
    aoi: BaseGeometry
    start: date
    end: date
    collection: str | None
    max_cloud: float
    test_fraction: float

    @property
    def where(self) -> tuple[str, BaseGeometry, date, date]:
        """(catalog, AOI, first date, last date), as the loaders take them first."""
        return self.stac, self.aoi, self.start, self.end

    @property
    def filters(self) -> dict[str, Any]:
        """The search's filters, as the loaders take them by name."""
        return {"collection": self.collection, "max_cloud": self.max_cloud}

    def describe(self) -> dict[str, Any]:
        """As recorded in a checkpoint (a resumed run must match it) and in the weights; the
        embedded demo files are named ``demo``, not by where this checkout happens to lie."""
        return {
            "stac": _portable(self.stac, DEMO_CATALOG),
            "aoi": _portable(self.aoi_path, DEMO_AOI),
            "start": str(self.start),
            "end": str(self.end),
            **self.filters,
            "test_fraction": self.test_fraction,
        }


def _portable(path: str, demo: Path) -> str:
    return "demo" if Path(path).resolve() == Path(demo).resolve() else path


def sentinel_query(args: argparse.Namespace) -> SentinelQuery:
    """Checked before anything is loaded, so a mistake costs no download."""
    if not 0 < args.test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    start, end = query_dates(args)
    aoi = args.aoi or str(DEMO_AOI)
    return SentinelQuery(
        args.stac or str(DEMO_CATALOG),
        aoi,
        read_aoi(aoi),
        start,
        end,
        args.collection,
        args.max_cloud,
        args.test_fraction,
    )


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    runtime = p.add_argument_group("runtime")
    runtime.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    runtime.add_argument("--device", help="torch device (default: cuda when present, else cpu)")


def runtime(args: argparse.Namespace) -> str:
    """Apply ``--threads``; the torch device ``--device`` names (checked), or the default."""
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.empty(0, device=args.device)
    except Exception as err:  # each backend refuses in its own way
        raise UserError(f"--device {args.device}: {reason(err)}") from None
    return args.device


def train(
    trainer: Run,
    steps: int,
    postfix: Callable[[dict[str, float]], dict[str, str]],
    describe: Callable[[dict[str, float]], str],
) -> int | None:
    """Run ``trainer`` under a progress bar: step records (those with a ``loss``) update the
    bar with ``postfix(record)``, validation records are written as ``describe(record)``. None
    when finished, else the exit code (1 diverged, 130 stopped by Ctrl-C)."""
    with (
        tqdm(
            total=steps, initial=trainer.step, unit="step", desc="train", dynamic_ncols=True
        ) as bar,
        _stop_on_sigint() as stop,
    ):

        def report(record: dict[str, float]) -> None:
            if "loss" in record:
                bar.update(1)
                bar.set_postfix(postfix(record))
            else:
                bar.write(describe(record))

        try:
            finished = trainer.run(stop, report)
        except TrainingDiverged as err:
            print(f"error: {err}; the last checkpoint is kept", file=sys.stderr)
            return 1
    if not finished:
        print(
            f"interrupted at step {trainer.step}: checkpoint saved; continue with --resume",
            file=sys.stderr,
        )
        return 130
    return None


@contextmanager
def _stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C asks for a checkpoint after the current step; a second one aborts."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nstopping after this step (Ctrl-C again to abort without saving)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
