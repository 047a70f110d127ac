"""The region command as the tests run it, and the products that several test modules read.

Making a product is the slow part of most command tests, so each kind is made once per test
session (fixtures ``demo_product`` and ``diffusion_product`` in ``conftest.py``); a test that
changes a product works on a copy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: A 120 × 120 px corner of the demo (one small tile), so runs of the learned models stay quick.
SMALL_AOI = json.dumps({"type": "Polygon", "coordinates": [[
    [-67.645, -47.855], [-67.642, -47.855], [-67.642, -47.853], [-67.645, -47.853],
    [-67.645, -47.855]]]})

#: The demo product's tiling: 1056 x 648 px in 6 tiles, all intersecting the AOI.
DEMO_TILING = ("--tile-size", "480")
DEMO_TILES = 6
#: The diffusion product's model settings: one step is enough for samples that differ.
DIFFUSION = ("--rgb-model", "difffusr", "--steps", "1", "--samples", "2")


def region(*args: str) -> subprocess.CompletedProcess:
    """``python -m flows.region ARGS`` in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "flows.region", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def make_demo_product(folder: Path) -> Path:
    """The embedded demo with the baselines, in ``DEMO_TILES`` tiles on two workers."""
    out = folder / "demo.zarr"
    done = region("--out", str(out), *DEMO_TILING, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert f"product: {out}" in done.stdout and "xr.open_zarr" in done.stdout
    return out


def make_diffusion_product(folder: Path) -> Path:
    """Every band over ``SMALL_AOI``, the RGB drawn twice by the demo diffusion model."""
    out = folder / "difffusr.zarr"
    aoi = write(folder, "small.geojson", SMALL_AOI)
    done = region("--aoi", aoi, "--out", str(out), *DIFFUSION, "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "rgb=difffusr" in done.stdout
    return out
