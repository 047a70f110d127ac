"""A product as GIS software meets it: its zarr-conventions georeferencing (``proj:``,
``spatial:``, ``multiscales``) validated against the conventions' published schemas
(``tests/fixtures/zarr-conventions``), and the one-line COG export of
docs/output-format.md run with the GDAL the project installs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from affine import Affine

from pipeline.product.read import product_grid

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "fixtures" / "zarr-conventions"
#: The data arrays every level of a product holds (the demo has no uncertainty layer).
DATA = ("reflectance", "clear_count", "consistency", "spectral_angle", "hallucination_risk")


def _validators() -> dict[str, jsonschema.Draft7Validator]:
    """The conventions' validators, by the uuid that registers each."""
    found = {}
    for path in sorted(SCHEMAS.glob("*.schema.json")):
        schema = json.loads(path.read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        uuid = schema["$defs"]["conventionMetadata"]["properties"]["uuid"]["const"]
        found[uuid] = jsonschema.Draft7Validator(schema)
    return found


VALIDATORS = _validators()


def nodes(product: Path) -> dict[str, dict[str, Any]]:
    """Every node's metadata (``zarr.json``), by its path in the product."""
    return {
        str(p.parent.relative_to(product)): json.loads(p.read_text())
        for p in product.rglob("zarr.json")
    }


def check(node: dict[str, Any]) -> list[str]:
    """Validate a node against each convention it declares; the names declared."""
    declared = node["attributes"].get("zarr_conventions", [])
    for convention in declared:
        VALIDATORS[convention["uuid"]].validate(node)
    return sorted(c["name"] for c in declared)


def test_every_node_follows_the_conventions_it_declares(demo_product):
    meta = nodes(demo_product)
    root = meta["."]
    assert check(root) == ["multiscales", "proj", "spatial"]
    grid = product_grid(root["attributes"])
    assert root["attributes"]["proj:code"] == f"EPSG:{grid.crs.to_epsg()}"
    assert root["attributes"]["spatial:bbox"] == list(grid.bounds)
    layout = root["attributes"]["multiscales"]["layout"]
    assert len(layout) > 1
    for entry in layout:
        level = entry["asset"]
        for name in DATA:
            array = meta[name if level == "." else f"{level}/{name}"]
            assert check(array) == ["proj", "spatial"]
            attrs = array["attributes"]
            assert attrs["proj:code"] == root["attributes"]["proj:code"]
            assert attrs["spatial:shape"] == entry["spatial:shape"] == array["shape"][-2:]
            assert attrs["spatial:transform"] == entry["spatial:transform"]
            assert array["dimension_names"][-2:] == attrs["spatial:dimensions"]
        with xr.open_zarr(demo_product, group=None if level == "." else level) as ds:
            assert list(ds.rio.transform())[:6] == entry["spatial:transform"]  # as CF says


def _two_crs(node):
    node["attributes"]["proj:wkt2"] = "PROJCRS[...]"


def _short_transform(node):
    node["attributes"]["spatial:transform"] = node["attributes"]["spatial:transform"][:5]


def _no_dimensions(node):
    del node["attributes"]["spatial:dimensions"]


def _lowercase_code(node):
    node["attributes"]["proj:code"] = "epsg:32719"


@pytest.mark.parametrize("spoil", [_two_crs, _short_transform, _no_dimensions, _lowercase_code])
def test_the_schemas_refuse_a_spoilt_array(demo_product, spoil):
    node = copy.deepcopy(nodes(demo_product)["reflectance"])
    check(node)
    spoil(node)
    with pytest.raises(jsonschema.ValidationError):
        check(node)


def _export_line() -> str:
    """The one-line COG export as docs/output-format.md gives it: the Python inside it."""
    text = (ROOT / "docs" / "output-format.md").read_text()
    (line,) = re.findall(r'^\.venv/bin/python -c "(import rioxarray.*)"$', text, re.M)
    return line


def test_the_documented_cog_export_opens_in_gdal(demo_product, tmp_path):
    code = _export_line()
    cog = tmp_path / "aoi.tif"
    exec(
        code.replace("output/demo-2023-01-01-2023-01-31.zarr", str(demo_product)).replace(
            "demo-aoi.tif", str(cog)
        ),
        {},
    )
    grid = product_grid(zarr.open_group(demo_product, mode="r").attrs)
    with rasterio.open(cog) as tif, xr.open_zarr(demo_product, mask_and_scale=False) as ds:
        assert tif.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert tif.crs.to_epsg() == grid.crs.to_epsg()
        a, b, c, d, e, f = tuple(tif.transform)[:6]
        assert (a, b, d, e) == (2.5, 0.0, 0.0, -2.5)
        col, row = (c - grid.x0) / 2.5, (grid.y0 - f) / 2.5
        assert col == int(col) > 0 and row == int(row) > 0  # on the product's own pixels
        assert tif.transform == Affine(2.5, 0, grid.x0 + 2.5 * col, 0, -2.5, grid.y0 - 2.5 * row)
        assert tif.descriptions == tuple(ds.band.values)
        assert tif.nodata == 0 and set(tif.scales) == {1e-4}
        window = ds.reflectance.isel(
            y=slice(int(row), int(row) + tif.height), x=slice(int(col), int(col) + tif.width)
        ).values
        assert (tif.read() == window).all()
        assert (window != 0).any()
