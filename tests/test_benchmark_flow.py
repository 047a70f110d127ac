"""python -m flows.benchmark on the embedded demo: tables checked against metrics computed here
from the composite, figures, determinism, local scenes and bad input.

The runs are kept small for a loaded CPU: 48-pixel patches, 2 DDIM steps, one thread.
"""

import csv
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from flows.benchmark import main
from pipeline.demo import DEMO_AOI, DEMO_CATALOG, DEMO_DATES
from pipeline.geo.aoi import read_aoi
from pipeline.geo.bands import REFLECTANCE_BANDS, RGB_INDEX
from pipeline.geo.grid import LATTICE
from pipeline.geo.resample import block_mean, upsample_cubic, upsample_nearest
from pipeline.inputs.memory import sentinel_composite
from pipeline.models import get_fusion_model
from pipeline.protocol import sensor
from pipeline.protocol.degradation import VALIDATION, degrade
from pipeline.quality import fusion_metrics, opensr_metrics

ROOT = Path(__file__).resolve().parents[1]
FAST = ("--steps", "2", "--threads", "1")
#: Run A: every default model on two of the held-out strip's three patches.
RUN_A = (*FAST, "--max-images", "2", "--seed", "3")
#: Run C: the diffusion model alone with another seed, on the whole held-out strip.
RUN_C = (*FAST, "--seed", "4", "--rgb-models", "difffusr", "--fusion-models")
#: A 10 m pixel grid for the GeoTIFFs the tests write.
TEN_METRES = rasterio.transform.from_origin(600000, 4700000, 10, 10)


def benchmark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.benchmark", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


class Runs(NamedTuple):
    """Run A into two folders, and run C."""

    a: Path
    b: Path
    other_seed: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    """The same benchmark twice, into two folders, and run C: at once, each on one thread, as
    independent processes (no run sees another's output)."""
    folders = [tmp_path_factory.mktemp(name) for name in ("a", "b", "c")]
    arguments = [RUN_A, RUN_A, RUN_C]
    with ThreadPoolExecutor(len(folders)) as pool:
        done = list(
            pool.map(lambda args, out: benchmark(*args, "--out", str(out)), arguments, folders)
        )
    for run in done:
        assert run.returncode == 0, run.stderr
    return Runs(*folders)


@pytest.fixture(scope="module")
def composite() -> np.ndarray:
    return sentinel_composite(
        str(DEMO_CATALOG), read_aoi(str(DEMO_AOI)), *DEMO_DATES, REFLECTANCE_BANDS, lattice=LATTICE
    ).image


def patch_of(composite: np.ndarray, image: str, side: int = 48) -> np.ndarray:
    """The patch an image name ('aoi r6 c198') points at."""
    row, col = (int(part[1:]) for part in image.split()[-2:])
    return composite[:, row : row + side, col : col + side]


def direct_rgb(hr: np.ndarray) -> dict[str, float]:
    """Bicubic's Table I metrics, computed here without the evaluation package."""
    config = replace(VALIDATION, harmonize=False, levels=None)
    lr = degrade(torch.from_numpy(hr)[None], config, torch.Generator()).lr[0].numpy()
    sr = upsample_cubic(lr, 4)
    result = opensr_metrics(lr, sr, hr)
    fused = fusion_metrics(sr, hr, ratio=0.25).mean
    return {
        "psnr": fused["psnr"],
        "ssim": fused["ssim"],
        "spectral": result.spectral,
        "hallucination": result.hallucination,
    }


def direct_fusion(bands: np.ndarray) -> dict[str, float]:
    """Gram–Schmidt on the 20 m group, Wald protocol, computed here: every band degraded ×4 on
    its native grid and repeated onto the 40 m grid, the real 10 m RGB as guide, the output
    averaged onto the 20 m grid against the patch's own 20 m grid."""
    ratio = {
        b: 1 if b in ("B02", "B03", "B04", "B08") else 6 if b in ("B01", "B09") else 2
        for b in REFLECTANCE_BANDS
    }
    low = np.stack(
        [
            upsample_nearest(
                sensor.degrade(torch.from_numpy(block_mean(bands[i : i + 1], ratio[b]))[None], 4)[
                    0
                ].numpy(),
                ratio[b],
            )[0]
            for i, b in enumerate(REFLECTANCE_BANDS)
        ]
    )
    out = get_fusion_model("gram-schmidt")(low, bands[RGB_INDEX], (0, 0))
    index = [REFLECTANCE_BANDS.index(b) for b in ("B05", "B06", "B07", "B8A", "B11", "B12")]
    truth = block_mean(bands[index], 2)
    return fusion_metrics(block_mean(out[index], 2), truth, ratio=0.25).mean


def test_tables_agree_with_metrics_computed_directly(runs, composite):
    out = runs.a
    per_image = rows(out / "per_image.csv")
    images = list(dict.fromkeys(r["image"] for r in per_image))
    assert len(images) == 2 and all(i.startswith("aoi r") for i in images)
    direct = {i: direct_rgb(patch_of(composite, i)[RGB_INDEX]) for i in images}
    fused = {i: direct_fusion(patch_of(composite, i)) for i in images}
    summary = {
        (r["stage"], r["model"], r["group"], r["metric"]): r for r in rows(out / "scores.csv")
    }
    for metric in ("psnr", "ssim", "spectral", "hallucination"):
        for image in images:
            value = next(
                float(r["value"])
                for r in per_image
                if r["model"] == "bicubic"
                and r["stage"] == "rgb"
                and r["image"] == image
                and r["metric"] == metric
            )
            assert value == pytest.approx(direct[image][metric], rel=1e-6)
        row = summary["rgb", "bicubic", "RGB", metric]
        values = [direct[i][metric] for i in images]
        assert float(row["mean"]) == pytest.approx(np.mean(values), rel=1e-6)
        assert float(row["std"]) == pytest.approx(np.std(values), rel=1e-5, abs=1e-12)
        assert row["images"] == "2"
    for metric in ("r2", "ergas", "psnr"):
        row = summary["fusion", "gram-schmidt", "20 m group", metric]
        assert row["bands"] == "B05 B06 B07 B8A B11 B12"
        assert float(row["mean"]) == pytest.approx(
            np.mean([fused[i][metric] for i in images]), rel=1e-6
        )
    psnr = [direct[i]["psnr"] for i in images]
    report = (out / "benchmark.md").read_text()
    assert f"| bicubic | {np.mean(psnr):.2f} ± {np.std(psnr):.2f} |" in report
    assert "B11 B12 (real); B05 B06 B07 B8A (synthetic)" in report
    assert "| 60 m group | B01 B09 (synthetic) |" in report
    # The 60 m grid of a 48 px patch (8 px) is narrower than SSIM's window: undefined.
    assert summary["fusion", "bicubic", "60 m group", "ssim"]["images"] == "0"


def test_every_model_and_group_is_in_the_tables(runs):
    summary = rows(runs.a / "scores.csv")
    assert {(r["stage"], r["model"]) for r in summary} == {
        ("rgb", "bicubic"),
        ("rgb", "difffusr"),
        ("rgb", "difffusr, no guarantee"),
        ("fusion", "bicubic"),
        ("fusion", "gram-schmidt"),
        ("fusion", "difffusr-fusion"),
    }
    groups = {r["group"] for r in summary if r["stage"] == "fusion"}
    assert groups == {"10 m group", "20 m group", "20 m group, real bands only", "60 m group"}
    assert all(math.isfinite(float(r["mean"])) for r in summary if r["images"] != "0")


def test_figures_are_pngs_of_the_expected_size(runs):
    # Panels of 200 px with 30 px titles; bar charts of 300 × 240 px, three a row.
    expected = {
        "rgb-examples.png": (5 * 200, 200 + 2 * 30),  # input, 3 models, reference
        "fusion-examples.png": (5 * 200, 200 + 2 * 30),  # input, 3 models, reference
        "rgb-quality.png": (3 * 200 + 225, 3 * (200 + 30) + 30),  # a row per RGB model
        "rgb-metrics.png": (900, 4 * 240),  # 10 metrics
        "fusion-metrics.png": (900, 2 * 240),  # 6 metrics
    }
    assert sorted(p.name for p in runs.a.glob("*.png")) == sorted(expected)
    for name, size in expected.items():
        with Image.open(runs.a / name) as image:
            assert image.format == "PNG"
            assert image.size == size
            pixels = np.asarray(image.convert("RGB"))
        colours = pixels.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
        assert len(np.unique(colours)) > 50  # drawn, not blank


def test_same_seed_same_csv_other_seed_other_diffusion(runs):
    a, b, other_seed = runs
    for name in ("scores.csv", "per_image.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert not (other_seed / "fusion-metrics.png").exists()
    other = {(r["image"], r["metric"]): r["value"] for r in rows(other_seed / "per_image.csv")}
    assert len({image for image, _ in other}) == 3  # the whole held-out strip
    first = {
        (r["image"], r["metric"]): r["value"]
        for r in rows(a / "per_image.csv")
        if r["model"] == "difffusr"
    }
    common = [key for key in first if key in other and key[1] == "psnr"]
    assert common and all(first[k] != other[k] for k in common)


def test_local_scenes_score_as_the_catalog_does(runs, composite, tmp_path):
    scene = tmp_path / "demo.tif"
    with rasterio.open(
        scene,
        "w",
        driver="GTiff",
        width=composite.shape[2],
        height=composite.shape[1],
        count=12,
        dtype="float32",
        transform=TEN_METRES,
    ) as ds:
        ds.write(composite)
    done = benchmark(
        "--scenes",
        str(scene),
        "--rgb-models",
        "bicubic",
        "--fusion-models",
        "gram-schmidt",
        "--out",
        str(tmp_path / "out"),
        "--threads",
        "1",
    )
    assert done.returncode == 0, done.stderr

    def key(r: dict[str, str]) -> tuple[str, ...]:
        """The patch's position, not its scene's name, and what was scored."""
        return r["image"].split(" ", 1)[1], r["stage"], r["model"], r["group"], r["metric"]

    local = {key(r): float(r["value"]) for r in rows(tmp_path / "out" / "per_image.csv")}
    assert len({k[0] for k in local}) > 3  # scored whole, not only the held-out strip
    shared = [r for r in rows(runs.a / "per_image.csv") if key(r) in local]
    assert {(r["model"], r["group"]) for r in shared} == {
        ("bicubic", "RGB"),
        ("gram-schmidt", "10 m group"),
        ("gram-schmidt", "20 m group"),
        ("gram-schmidt", "60 m group"),
    }
    assert len({r["image"] for r in shared}) == 2
    for r in shared:
        assert local[key(r)] == pytest.approx(float(r["value"]), rel=1e-9, nan_ok=True)
    assert "B01 B09 (real)" in (tmp_path / "out" / "benchmark.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--patch", "50"), "--patch must be a positive multiple of 24"),
        (("--rgb-models", "nosuch"), "invalid choice: 'nosuch'"),
        (("--stac", "catalog.json", "--start", "2024-01-01"), "--start and --end are required"),
        (("--scenes", "missing.tif"), "cannot read scene missing.tif"),
        (("--scenes", "x.tif", "--aoi", "a.geojson"), "--scenes replaces --aoi"),
        (("--rgb-models", "--fusion-models"), "no model to benchmark"),
        (("--steps", "0"), "not a positive integer"),
        (("--test-fraction", "1.5"), "--test-fraction must be between 0 and 1"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, message, tmp_path, capsys):
    # In this process: every case stops before any model runs, and a new interpreter would
    # spend most of the test importing.
    try:
        code = main([*args, "--out", str(tmp_path / "out")])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_a_scene_without_the_12_bands_is_refused(tmp_path, capsys):
    scene = tmp_path / "rgb.tif"
    with rasterio.open(
        scene,
        "w",
        driver="GTiff",
        width=48,
        height=48,
        count=3,
        dtype="uint16",
        transform=TEN_METRES,
    ) as ds:
        ds.write(np.full((3, 48, 48), 1000, np.uint16))
    assert main(["--scenes", str(scene), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: {scene} has 3 band(s), not the 12 L2A bands {' '.join(REFLECTANCE_BANDS)}"
    )
