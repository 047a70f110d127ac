"""docs/analyst.ipynb, executed against a fresh demo product: no cell may fail, and what it
shows must describe that product."""

import base64
import io
import json
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr
from nbclient import NotebookClient
from PIL import Image

from pipeline.quality.layers import CONSISTENCY_LIMIT
from pipeline.quality.verdict import warning_line
from tests.products import DEMO_TILES

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "analyst.ipynb"

#: Appended to the notebook when it runs here: the kernel's interpreter and the figures table.
REPORT = (
    "import json, sys\nprint(json.dumps({'python': sys.executable, 'metrics': metrics.to_dict()}))"
)


def execute(notebook: nbformat.NotebookNode, product: Path) -> None:
    """Run ``notebook`` against ``product`` as Jupyter runs it, from docs/."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("S2SR_PRODUCT", str(product))
        client = NotebookClient(
            notebook,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        )
        client.execute()  # raises CellExecutionError on the first cell that fails


@pytest.fixture(scope="module")
def run(demo_product) -> tuple[Path, nbformat.NotebookNode, dict]:
    """The demo product, the notebook executed against it and its report."""
    product = demo_product
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    execute(notebook, product)
    report = json.loads(_outputs(notebook.cells[-1])[0]["text"])
    return product, notebook, report


def _outputs(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return cell.get("outputs", [])


def _texts(notebook: nbformat.NotebookNode) -> list[str]:
    """Every printed or displayed text of the notebook, cell by cell."""
    return [
        out.get("text") or out.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        for out in _outputs(cell)
    ]


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def _verdict_cell(notebook: nbformat.NotebookNode) -> int:
    return next(i for i, c in enumerate(notebook.cells) if "warning_line(" in c.source)


def _streams(cell: nbformat.NotebookNode) -> dict[str, str]:
    """What the cell printed, by stream (stdout, stderr)."""
    printed: dict[str, str] = {}
    for out in _outputs(cell):
        if out["output_type"] == "stream":
            printed[out["name"]] = printed.get(out["name"], "") + out["text"]
    return printed


def test_it_shows_the_verdict_before_anything_else(run):
    product, notebook, _ = run
    index = _verdict_cell(notebook)
    first_image = min(
        i
        for i, c in enumerate(notebook.cells)
        if any("image/png" in out.get("data", {}) for out in _outputs(c))
    )
    assert index < first_image
    printed = _streams(notebook.cells[index])
    quality = xr.open_zarr(product).attrs["quality_summary"]
    assert printed["stdout"].startswith(f"VERDICT: OK: {quality['verdict_reason']}\n")
    assert "flagged fraction:    0.0\n" in printed["stdout"]
    assert "stderr" not in printed  # no warning for the baselines


def test_it_warns_about_a_flagged_product(flagged_product):
    """The notebook's first cells, up to the verdict, against a product of a bad model."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    del notebook.cells[_verdict_cell(notebook) + 1 :]
    execute(notebook, flagged_product.out)
    printed = _streams(notebook.cells[-1])
    quality = xr.open_zarr(flagged_product.out).attrs["quality_summary"]
    assert printed["stdout"].startswith("VERDICT: HALLUCINATION RISK: 100 % of the product's")
    assert printed["stderr"] == warning_line(quality) + "\n"


def test_it_runs_in_this_environment(run):
    _, _, report = run
    assert report["python"] == sys.executable


def test_it_rebuilds_the_input_the_product_was_made_from(run):
    _, notebook, _ = run
    assert any("clear count as in the product: True" in t for t in _texts(notebook))


def test_it_draws_the_images_and_the_layers(run):
    _, notebook, _ = run
    images = [
        Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"])))
        for cell in notebook.cells
        for out in _outputs(cell)
        if "image/png" in out.get("data", {})
    ]
    assert len(images) == 4  # true colour, false colour, the quality layers, an explanation
    for image in images:
        pixels = np.asarray(image.convert("L"), dtype=float)
        assert image.width > 800 and pixels.std() > 10  # drawn, not blank


def test_the_tile_table_has_every_tile(run):
    product, notebook, _ = run
    table = next(t for t in _texts(notebook) if "mean_consistency" in t)
    keys = set(re.findall(r"^(\d+_\d+)\s", table, re.MULTILINE))  # pandas may wrap the table
    assert keys == {marker.stem for marker in (product / "tiles").glob("*.json")}
    assert len(keys) == DEMO_TILES


def test_the_figures_describe_the_product(run):
    product, _, report = run
    metrics = report["metrics"]
    assert set(metrics) >= {
        "consistency: mean",
        "consistency: 99.9 %",
        "consistency: max",
        "spectral angle (°): mean",
        "flagged fraction",
        "OpenSR-test reflectance",
        "OpenSR-test spectral (°)",
        "OpenSR-test spatial (10 m px)",
        "recomputed - stored consistency: max |Δ|",
        "recomputed - stored spectral_angle: max |Δ|",
    }
    ds = xr.open_zarr(product)
    assert metrics["consistency: mean"] == pytest.approx(float(ds.consistency.mean()), rel=1e-6)
    assert metrics["consistency: max"] == pytest.approx(float(ds.consistency.max()), rel=1e-6)
    # The baselines on the demo are never flagged, and both consistency scores see that.
    assert metrics["flagged fraction"] == 0
    assert 0 < metrics["consistency: max"] < CONSISTENCY_LIMIT
    assert 0 < metrics["OpenSR-test reflectance"] < CONSISTENCY_LIMIT
    # The layers computed again from the rebuilt input are the stored ones, up to the rounding
    # of the stored reflectance and layers.
    assert metrics["recomputed - stored consistency: max |Δ|"] < 1e-4
    assert metrics["recomputed - stored spectral_angle: max |Δ|"] < 0.02


def test_it_explains_the_worst_pixel(run):
    """The baselines' product has no flag: the pixel explained is the least consistent one,
    by the product's own models, and the bicubic RGB stage's path integral is exact."""
    product, notebook, _ = run
    ds = xr.open_zarr(product)
    printed = next(t for t in _texts(notebook) if t.startswith("pixel: column"))
    col, row = (int(n) for n in re.findall(r"column (\d+), row (\d+)", printed)[0])
    assert float(ds.consistency[row, col]) == pytest.approx(float(ds.consistency.max()))
    reproduced = float(re.findall(r"reproduced within (\S+)", printed)[0])
    assert reproduced < 1e-4  # the stored rounding only
    table = next(t for t in _texts(notebook) if "diffusion_index" in t)
    assert re.search(r"bicubic\s+rgb", table) and re.search(r"gram-schmidt\s+fusion 20 m", table)
