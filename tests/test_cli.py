"""The region CLI on the embedded demo: a run, a re-run, a dry run and every kind of bad input."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from shapely.geometry import box, mapping

from pipeline.demo import DEMO_CATALOG
from pipeline.models.fusion.model import DEMO_WEIGHTS as FUSION_DEMO_WEIGHTS
from tests.products import (
    DEMO_TILES,
    DEMO_TILING,
    DIFFUSION,
    FUSION_AOI,
    LEARNED_FUSION,
    SMALL_AOI,
    region,
    write,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "difffusr"


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_demo_run_writes_every_tile(demo_product):
    ds = xr.open_zarr(demo_product)
    markers = sorted(p.stem for p in (demo_product / "tiles").glob("*.json"))
    assert len(markers) == DEMO_TILES
    assert list(ds.band.values) == [
        "B01",
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B09",
        "B11",
        "B12",
    ]
    assert np.isfinite(ds.reflectance.values).all()
    assert ds.clear_count.values.min() >= 1  # the demo has no pixel that is never clear


def test_rerun_skips_finished_tiles_and_overwrite_redoes_them(demo_product, tmp_path):
    copy = tmp_path / "copy.zarr"
    shutil.copytree(demo_product, copy)
    before = tree_digest(copy / "tiles")
    again = region("--out", str(copy), *DEMO_TILING)
    assert again.returncode == 0, again.stderr
    assert f"0 tiles written, {DEMO_TILES} already finished" in again.stdout
    assert "warning:" not in again.stderr  # the baselines' verdict, from the summary, is ok
    assert tree_digest(copy / "tiles") == before
    redo = region("--out", str(copy), *DEMO_TILING, "--overwrite", "--bands", "B04")
    assert redo.returncode == 0, redo.stderr
    assert f"{DEMO_TILES} tiles written" in redo.stdout
    assert list(xr.open_zarr(copy).band.values) == ["B04"]


def test_other_crs_is_resampled_bilinearly(demo_product, tmp_path):
    out = tmp_path / "utm20.zarr"
    done = region("--out", str(out), "--crs", "EPSG:32720", "--bands", "B04", "B8A")
    assert done.returncode == 0, done.stderr
    ds = xr.open_zarr(out)
    assert ds.rio.crs.to_epsg() == 32720
    reflectance = ds.reflectance.values
    assert np.isfinite(reflectance).mean() > 0.95  # the rotated footprint leaves corners empty
    native = xr.open_zarr(demo_product).reflectance.sel(band="B04").values
    assert abs(np.nanmean(reflectance[0]) - np.nanmean(native)) < 0.005


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    out = tmp_path / "never.zarr"
    done = region("--out", str(out), "--dry-run", "--tile-size", "240")
    assert done.returncode == 0, done.stderr
    assert "items matched: 3 (estimate" in done.stdout
    assert "tiles:         15 of 240 px" in done.stdout
    assert "output size:" in done.stdout
    assert not out.exists()


def over_europe(tmp_path: Path) -> str:
    """An ItemCollection of one demo item moved over Germany, its assets where they are."""
    item = next(pystac.read_file(str(DEMO_CATALOG)).get_items(recursive=True))
    item.make_asset_hrefs_absolute()
    item.geometry = mapping(box(8.0, 49.0, 9.5, 50.0))
    item.bbox = [8.0, 49.0, 9.5, 50.0]
    item.properties["proj:epsg"] = 32632
    return write(
        tmp_path,
        "europe-items.json",
        json.dumps(
            {"type": "FeatureCollection", "features": [item.to_dict(include_self_link=False)]}
        ),
    )


def test_dry_run_over_europe_counts_tiles_in_the_polygon_not_its_box(tmp_path):
    out = tmp_path / "never.zarr"
    done = region(
        "--aoi",
        str(ROOT / "examples" / "europe.geojson"),
        "--out",
        str(out),
        "--stac",
        over_europe(tmp_path),
        "--start",
        "2023-01-01",
        "--end",
        "2023-01-31",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert "output grid:   EPSG:3035, 1913592 x 1786632 px" in done.stdout
    # a fifth of the ~930 000 tiles of the bounding box would be sea or Asia
    assert "tiles:         445348 of 1920 px" in done.stdout
    assert "output size:   49.3 TB" in done.stdout
    assert not out.exists()


def test_a_dry_run_that_matches_nothing_says_so_as_the_run_would(tmp_path):
    done = region("--aoi", far_away(tmp_path), "--dry-run")
    assert done.returncode == 2
    assert done.stderr.startswith("error: no scene") and len(done.stderr.splitlines()) == 1


def test_a_runner_without_a_gpu_plans_learned_models_for_cuda():
    """The GPU Kubernetes job starts its runner, a CPU pod, with --device cuda: the runner
    checks the models on its CPU, and only the workers build them on the GPU."""
    done = region(
        "--rgb-model",
        "difffusr",
        "--fusion-model",
        "difffusr-fusion",
        "--device",
        "cuda",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert "rgb=difffusr fusion=difffusr-fusion" in done.stdout


def point(tmp_path):
    return write(tmp_path, "p.geojson", json.dumps({"type": "Point", "coordinates": [1, 2]}))


def far_away(tmp_path):
    ring = [[10, 50], [10.1, 50], [10.1, 50.1], [10, 50.1], [10, 50]]
    return write(tmp_path, "far.geojson", json.dumps({"type": "Polygon", "coordinates": [ring]}))


def tiny_fusion(tmp_path: Path, seed: int = 0) -> str:
    """Random weights of a tiny fusion network (4 features, 1 block, growth 2)."""
    import torch

    from pipeline.models.fusion.network import FusionNetwork
    from pipeline.models.fusion.weights import save_fusion_network

    torch.manual_seed(seed)
    path = tmp_path / f"fusion-{seed}.safetensors"
    return str(save_fusion_network(FusionNetwork(4, 1, 2), path).path)


BAD_INPUTS = {
    "malformed GeoJSON": (lambda t: ["--aoi", write(t, "bad.geojson", "{oops")], "not valid JSON"),
    "empty GeoJSON": (
        lambda t: [
            "--aoi",
            write(t, "empty.geojson", '{"type": "FeatureCollection", "features": []}'),
        ],
        "holds no geometry",
    ),
    "non-polygon": (lambda t: ["--aoi", point(t)], "must hold polygons"),
    "no scene": (lambda t: ["--aoi", far_away(t)], "no scene"),
    "reversed dates": (
        lambda t: ["--start", "2023-02-01", "--end", "2023-01-01"],
        "is after --end",
    ),
    "unreachable catalog": (
        lambda t: ["--stac", "http://127.0.0.1:9/", "--start", "2023-01-01", "--end", "2023-01-31"],
        "cannot reach",
    ),
    "unknown band": (lambda t: ["--bands", "B99"], "unknown band"),
    "tile size off lattice": (lambda t: ["--tile-size", "1000"], "multiple of 24"),
    "other settings, same grid": (
        lambda t: [*DEMO_TILING, "--max-cloud", "50"],
        "made with other settings",
    ),
    "bad date": (lambda t: ["--start", "2023-13-01"], "not a date"),
    "unknown model": (lambda t: ["--rgb-model", "magic"], "invalid choice"),
    "unreachable scheduler": (
        lambda t: ["--scheduler", "tcp://127.0.0.1:9"],
        "cannot reach Dask scheduler",
    ),
    "diffusion option, other model": (lambda t: ["--steps", "5"], "apply to --rgb-model difffusr"),
    "hub weights offline": (
        lambda t: ["--rgb-model", "difffusr", "--weights", "hf://some-org/some-repo/w.safetensors"],
        "cannot reach the Hugging Face hub",
    ),
    "unknown weights name": (
        lambda t: ["--rgb-model", "difffusr", "--weights", "naip-harmonised"],
        "unknown weights name 'naip-harmonised' for difffusr: the names "
        "are naip-harm, naip, worldstrat, demo",
    ),
    "missing weights": (
        lambda t: ["--rgb-model", "difffusr", "--weights", str(t / "none.safetensors")],
        "weights not found",
    ),
    "weights of another model": (
        lambda t: ["--rgb-model", "difffusr", "--weights", str(FIXTURES / "fusion_small.ckpt")],
        "cannot build the models",
    ),
    "pinned sha256 differs": (
        lambda t: ["--rgb-model", "difffusr", "--weights-sha256", "0" * 64],
        "sha256 mismatch",
    ),
    "zero samples": (lambda t: ["--rgb-model", "difffusr", "--samples", "0"], "at least 1"),
    "RGB guarantee option, other model": (
        lambda t: ["--no-rgb-consistency"],
        "--no-rgb-consistency apply to --rgb-model difffusr",
    ),
    "fusion options, other fusion model": (
        lambda t: ["--fusion-weights", str(t / "w.safetensors"), "--no-fusion-consistency"],
        "--fusion-weights, --no-fusion-consistency apply to --fusion-model difffusr-fusion",
    ),
    "device without a learned model": (lambda t: ["--device", "cpu"], "--device applies to"),
    "fusion weights of another model": (
        lambda t: [
            "--fusion-model",
            "difffusr-fusion",
            "--fusion-weights",
            str(FIXTURES / "sr_small.ckpt"),
        ],
        "not a DiffFuSR fusion checkpoint",
    ),
    "fusion weights' pinned sha256 differs": (
        lambda t: [
            "--fusion-model",
            "difffusr-fusion",
            "--fusion-weights",
            str(FIXTURES / "fusion_small.ckpt"),
            "--fusion-weights-sha256",
            "0" * 64,
        ],
        "sha256 mismatch",
    ),
}


#: Cases that get as far as the Dask cluster, or fail in argument parsing or in reading the AOI,
#: run as a process of their own, where anything a library logs would show. The others run in
#: the test's process, which skips a process start per case.
OWN_PROCESS = {
    "unreachable scheduler",
    "other settings, same grid",
    "unknown model",
    "malformed GeoJSON",
}


def region_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of the region command run in this process."""
    from flows import region as command

    capsys.readouterr()
    try:
        code = command.main(argv)
    except SystemExit as done:  # argparse's usage errors
        code = done.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_damages_nothing(
    case, demo_product, tmp_path, capsys, monkeypatch
):
    args, message = BAD_INPUTS[case]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("S2SR_TIMEOUT", "1")  # the unreachable scheduler: 1 s, not 10 s
    argv = [*args(tmp_path), "--out", str(demo_product)]
    before = tree_digest(demo_product)
    if case in OWN_PROCESS:
        done = region(*argv)
        code, stderr = done.returncode, done.stderr
    else:
        code, stderr = region_in_process(argv, capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], stderr
    assert "Traceback" not in stderr
    assert tree_digest(demo_product) == before


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = region("--out", str(blocker / "x.zarr"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot write" in done.stderr and "Traceback" not in done.stderr


def test_other_grid_in_the_same_output_is_refused(demo_product):
    before = tree_digest(demo_product)
    done = region("--out", str(demo_product), "--tile-size", "960")
    assert done.returncode == 2
    assert "different grid" in done.stderr
    assert tree_digest(demo_product) == before


def test_diffusion_rgb_with_samples_writes_the_uncertainty_layer(diffusion_product, tmp_path):
    ds = xr.open_zarr(diffusion_product)
    assert ds.rgb_uncertainty.dims == ("rgb_band", "y", "x")
    assert list(ds.rgb_band.values) == ["B04", "B03", "B02"]
    spread = ds.rgb_uncertainty.values
    assert np.isfinite(spread).all() and (spread >= 0).all() and spread.mean() > 0
    assert np.isfinite(ds.reflectance.values).all()
    recipe = ds.attrs["recipe"]
    assert recipe["rgb_model"] == "difffusr" and len(recipe["rgb_model_sha256"]) == 64
    assert recipe["rgb_model_options"] == {"steps": 1, "samples": 2, "consistent": True}
    # The RGB guarantee changes pixels: a product made with it is not resumed without it.
    before = tree_digest(diffusion_product)
    aoi = write(tmp_path, "small.geojson", SMALL_AOI)
    again = region(
        "--aoi", aoi, "--out", str(diffusion_product), *DIFFUSION, "--no-rgb-consistency"
    )
    assert again.returncode == 2 and "made with other settings" in again.stderr
    assert tree_digest(diffusion_product) == before


def test_learned_fusion_writes_every_band_and_its_weights_decide_the_recipe(
    fusion_product, tmp_path
):
    """Without --fusion-weights the shipped demo weights are used."""
    aoi = write(tmp_path, "fusion.geojson", FUSION_AOI)
    weights = FUSION_DEMO_WEIGHTS
    out, done = fusion_product
    learned = ["--aoi", aoi, "--out", str(out), *LEARNED_FUSION]
    assert done.returncode == 0, done.stderr
    assert "fusion=difffusr-fusion (halo 54 px at 10 m)" in done.stdout
    ds = xr.open_zarr(out)
    assert ds.reflectance.shape == (12, 48, 48)
    reflectance = ds.reflectance.values
    clear = ds.clear_count.values >= 1  # where the composite has a value
    assert clear.any()
    assert np.array_equal(np.isfinite(reflectance).all(axis=0), clear)
    recipe = ds.attrs["recipe"]
    assert recipe["fusion_model"] == "difffusr-fusion"
    assert recipe["fusion_model_sha256"] == hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    assert recipe["fusion_model_options"] == {"consistent": True}
    before = tree_digest(out)
    again = region(*learned, "--fusion-weights", tiny_fusion(tmp_path, seed=1))
    assert again.returncode == 2, again.stderr
    assert "made with other settings" in again.stderr
    assert tree_digest(out) == before
