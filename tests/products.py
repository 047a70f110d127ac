"""The region command as the tests run it, and the products that several test modules read.

Making a product is the slow part of most command tests, so each kind is made once per test
session (fixtures ``demo_product``, ``diffusion_product``, ``fusion_product`` and
``flagged_product`` in ``conftest.py``); a test that changes a product works on a copy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.geo.bands import REFLECTANCE_BANDS
from pipeline.models.baselines import GramSchmidt

ROOT = Path(__file__).resolve().parents[1]


def box_aoi(west: float, south: float, east: float, north: float) -> str:
    """A GeoJSON polygon of a longitude/latitude box, as an AOI file holds it."""
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return json.dumps({"type": "Polygon", "coordinates": [ring]})


#: A 120 × 120 px corner of the demo (one small tile), so runs of the learned models stay quick.
SMALL_AOI = box_aoi(-67.645, -47.855, -67.642, -47.853)
#: A 48 × 48 px part of it (two 60 m pixels a side) for the learned fusion, whose halo of
#: 54 px at 10 m makes each output pixel cost most.
FUSION_AOI = box_aoi(-67.6436, -47.8547, -67.6428, -47.8539)

#: The demo product's tiling: 1056 x 648 px in 6 tiles, all intersecting the AOI.
DEMO_TILING = ("--tile-size", "480")
DEMO_TILES = 6
#: The diffusion product's model settings: one step is enough for samples that differ.
DIFFUSION = ("--rgb-model", "difffusr", "--steps", "1", "--samples", "2")


#: The name the tests register ``PurpleFusion`` under.
BAD_FUSION = "purple-cast"
#: The region command with ``PurpleFusion`` registered first: the command's own ``main``.
_WITH_BAD_FUSION = (
    "import sys; from pipeline.models import FUSION_MODELS, ModelSpec; "
    "from tests.products import BAD_FUSION, PurpleFusion; "
    "FUSION_MODELS[BAD_FUSION] = ModelSpec(PurpleFusion); "
    "from flows.region import main; sys.exit(main(sys.argv[1:]))"
)


class PurpleFusion(GramSchmidt):
    """A fusion model known to be bad: Gram–Schmidt, then a purple cast on every band (B04 and
    B02 brighter by half, the others darker by 30 %), as RGB weights give on a scene they were
    not trained on. A model, not a post-processing of the product, so nothing downstream of
    the models (layers, summary, verdict) knows that it is bad; at the fusion stage, so that no
    correction of the RGB stage's output can undo the cast."""

    CAST = np.array([1.5 if b in ("B04", "B02") else 0.7 for b in REFLECTANCE_BANDS], np.float32)[
        :, None, None
    ]

    def __init__(self) -> None:
        super().__init__()
        self.name = BAD_FUSION

    def __call__(self, bands: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return super().__call__(bands, rgb, origin) * self.CAST


def region(*args: str, bad_fusion: bool = False) -> subprocess.CompletedProcess:
    """``python -m flows.region ARGS`` in its own process, as a user runs it; with
    ``bad_fusion``, ``PurpleFusion`` is registered as ``--fusion-model purple-cast`` first."""
    command = ["-c", _WITH_BAD_FUSION] if bad_fusion else ["-m", "flows.region"]
    return subprocess.run(
        [sys.executable, *command, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


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
    assert "warning:" not in done.stderr  # the baselines' verdict is ok
    return out


def make_diffusion_product(folder: Path) -> Path:
    """Every band over ``SMALL_AOI``, the RGB drawn twice by the demo diffusion model."""
    out = folder / "difffusr.zarr"
    aoi = write(folder, "small.geojson", SMALL_AOI)
    done = region("--aoi", aoi, "--out", str(out), *DIFFUSION, "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "rgb=difffusr" in done.stdout
    return out


#: The learned-fusion product's arguments, beside its AOI and output.
LEARNED_FUSION = ("--fusion-model", "difffusr-fusion")


class Made(NamedTuple):
    """A product and the command's run that made it."""

    out: Path
    done: subprocess.CompletedProcess


def make_fusion_product(folder: Path) -> Made:
    """Every band over ``FUSION_AOI`` with bicubic and the learned fusion (demo weights)."""
    out = folder / "fusion.zarr"
    aoi = write(folder, "fusion.geojson", FUSION_AOI)
    return Made(out, region("--aoi", aoi, "--out", str(out), *LEARNED_FUSION, "--workers", "1"))


def make_flagged_product(folder: Path, scheduler: str) -> Made:
    """``SMALL_AOI`` with bicubic and ``PurpleFusion``, on the cluster at ``scheduler``."""
    out = folder / "flagged.zarr"
    aoi = write(folder, "small.geojson", SMALL_AOI)
    done = region(
        "--aoi",
        aoi,
        "--out",
        str(out),
        "--fusion-model",
        BAD_FUSION,
        "--scheduler",
        scheduler,
        bad_fusion=True,
    )
    return Made(out, done)
