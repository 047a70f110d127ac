"""Hostile and clumsy input to the region command (issue 19, its input half).

Every refused input is one line ``error: ...`` and exit code 2, with no traceback, before
anything is written: each case runs against the demo product as ``--out`` and leaves every
byte of it as it was. The inputs that are handled rather than refused (an AOI across the
antimeridian, items with unreadable properties among good ones, a CRS spelt otherwise than
the product's) have their own tests below. The command runs in this process.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pystac
import pytest
import shapely
import xarray as xr
from pyproj import CRS
from shapely.geometry import box, mapping

from flows import region as command
from pipeline.geo.aoi import MAX_AOI_BYTES, aoi_from_geojson, project, read_aoi, wgs84_bbox
from pipeline.geo.grid import plan_grid
from pipeline.inputs.catalog import DEMO_CATALOG
from pipeline.models.diffusion.rgb import DEMO_WEIGHTS
from pipeline.product.stac import footprint
from tests.products import DEMO_TILES, DEMO_TILING


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of the region command run in this process."""
    capsys.readouterr()
    try:
        code = command.main(argv)
    except SystemExit as done:  # argparse's usage errors
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def file(folder: Path, name: str, content: str | bytes) -> str:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


def polygon(ring: list[list[float]]) -> str:
    return json.dumps({"type": "Polygon", "coordinates": [ring]})


def aoi(text: str | bytes) -> Callable[[Path], list[str]]:
    return lambda t: ["--aoi", file(t, "aoi.geojson", text)]


def huge_aoi(folder: Path) -> list[str]:
    """A sparse file of 2 GB: refused by its size before it is read."""
    path = folder / "huge.geojson"
    with open(path, "wb") as f:
        f.truncate(2 * 10**9)
    return ["--aoi", str(path)]


def demo_items() -> list[dict]:
    """The demo's three items, their asset hrefs absolute."""
    items = list(pystac.read_file(str(DEMO_CATALOG)).get_items(recursive=True))
    for item in items:
        item.make_asset_hrefs_absolute()
    return [i.to_dict(include_self_link=False, transform_hrefs=False) for i in items]


def item_collection(folder: Path, items: list[dict]) -> str:
    return file(folder, "items.json", json.dumps({"type": "FeatureCollection", "features": items}))


def with_property(key: str, value: object, every: bool = True) -> Callable[[Path], list[str]]:
    """The demo items (all, or the first only) with ``key`` set to ``value``."""

    def argv(folder: Path) -> list[str]:
        items = demo_items()
        for item in items if every else items[:1]:
            item["properties"][key] = value
        stac = item_collection(folder, items)
        return ["--stac", stac, "--start", "2023-01-01", "--end", "2023-01-31", "--max-cloud", "60"]

    return argv


def cut_item(folder: Path) -> list[str]:
    """A copy of the demo catalog with one item's JSON cut short."""
    copy = folder / "catalog"
    shutil.copytree(DEMO_CATALOG.parent, copy)
    item = next(copy.rglob("S2_*/*.json"))
    item.write_text(item.read_text()[:500])
    return ["--stac", str(copy / "catalog.json"), "--start", "2023-01-01", "--end", "2023-01-31"]


def weights(content: Callable[[], bytes]) -> Callable[[Path], list[str]]:
    return lambda t: ["--rgb-model", "difffusr", "--weights", file(t, "w.safetensors", content())]


def _demo_header() -> tuple[int, bytes]:
    blob = Path(DEMO_WEIGHTS).read_bytes()
    return int.from_bytes(blob[:8], "little"), blob


def truncated_weights() -> bytes:
    size, blob = _demo_header()
    return blob[: 8 + size + 100]


def offsets_past_the_end() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 4000000]}})
    header += " " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16


RING = [[-67.66, -47.86], [-67.62, -47.86], [-67.62, -47.84], [-67.66, -47.84], [-67.66, -47.86]]
DEEP = "[" * 200_000 + "]" * 200_000

#: case → (the arguments it adds, given a temporary folder; a regex its one line matches).
REFUSED: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    # AOI files
    "AOI nested 200,000 deep": (aoi(DEEP), "nested too deeply"),
    "AOI geometry nested 200,000 deep": (
        aoi('{"type": "Polygon", "coordinates": ' + DEEP + "}"),
        "nested too deeply",
    ),
    "AOI with an infinite coordinate": (
        aoi('{"type": "Polygon", "coordinates": [[[0, 0], [Infinity, 0], [1, 1], [0, 0]]]}'),
        "coordinates that are not finite numbers",
    ),
    "AOI with a NaN coordinate": (
        aoi('{"type": "Polygon", "coordinates": [[[0, 0], [NaN, 0], [1, 1], [0, 0]]]}'),
        "coordinates that are not finite numbers",
    ),
    "AOI with a coordinate of 1e999": (
        aoi('{"type": "Polygon", "coordinates": [[[0, 0], [1e999, 0], [1, 1], [0, 0]]]}'),
        "coordinates that are not finite numbers",
    ),
    "features that is a string": (
        aoi('{"type": "FeatureCollection", "features": "x"}'),
        "'features' must be a list of Feature objects",
    ),
    "features that holds numbers": (
        aoi('{"type": "FeatureCollection", "features": [1, 2]}'),
        "'features' must be a list of Feature objects",
    ),
    "empty AOI file": (aoi(""), "is not valid JSON"),
    "AOI cut short": (aoi(polygon(RING)[:40]), "is not valid JSON"),
    "binary AOI": (aoi(b"\xff\xfe\x00\xd8garbage"), "is not (valid JSON|text)"),
    "AOI of 2 GB": (huge_aoi, rf"is larger than {MAX_AOI_BYTES // 10**6} MB"),
    # geometry the grid cannot hold
    "AOI at the north pole": (
        aoi(polygon([[-180, 85], [180, 85], [180, 90], [-180, 90], [-180, 85]])),
        r"reaches latitude 90°, beyond what the grid's CRS can hold .*EPSG:3413",
    ),
    "AOI at the south pole, LAEA asked for": (
        lambda t: [
            *aoi(polygon([[-180, -90], [180, -90], [180, -85], [-180, -85], [-180, -90]]))(t),
            "--crs",
            "EPSG:3035",
        ],
        r"reaches latitude -90°",
    ),
    "ring around a pole": (
        aoi(polygon([[-180, 80], [-90, 80], [0, 80], [90, 80], [170, 80], [-180, 80]])),
        "has a ring around a pole",
    ),
    "CRS in US feet": (
        lambda t: ["--crs", "EPSG:2263"],
        r"EPSG:2263 .* measures in US survey foot: .* needs a CRS in metres",
    ),
    "CRS far from the AOI": (
        lambda t: ["--crs", "EPSG:32631"],
        r"EPSG:32631 would make the pixels over the AOI up to 29% off 2.5 m on the ground "
        r"\(at most 10% is taken\)",
    ),
    "Web Mercator in the far north": (
        lambda t: [
            *aoi(polygon([[20, 70], [20.1, 70], [20.1, 70.1], [20, 70]]))(t),
            "--crs",
            "EPSG:3857",
        ],
        r"EPSG:3857 would make the pixels over the AOI up to 19\d% off",
    ),
    "PROJ string only close to an EPSG CRS": (
        lambda t: ["--crs", "+proj=utm +zone=19 +south +ellps=intl +units=m"],
        "is only close to EPSG:2315",
    ),
    # option values
    "scheduler of an unknown scheme": (
        lambda t: ["--scheduler", "nonsense://x"],
        "not a Dask scheduler address: 'nonsense://x'",
    ),
    "scheduler without a port": (
        lambda t: ["--scheduler", "tcp://somewhere"],
        "not a Dask scheduler address",
    ),
    "max cloud NaN": (lambda t: ["--max-cloud", "nan"], "not a percentage from 0 to 100"),
    "max cloud over 100": (lambda t: ["--max-cloud", "101"], "not a percentage from 0 to 100"),
    "max cloud negative": (lambda t: ["--max-cloud", "-1"], "not a percentage from 0 to 100"),
    "tile size of 2.4 billion": (
        lambda t: ["--tile-size", "2400000000"],
        r"a tile size is at most 30720 pixels \(76.8 km\)",
    ),
    "no workers": (lambda t: ["--workers", "0"], "must be at least 1"),
    "eta over 1": (lambda t: ["--rgb-model", "difffusr", "--eta", "2"], "eta must be from 0 to 1"),
    "eta NaN": (lambda t: ["--rgb-model", "difffusr", "--eta", "nan"], "eta must be from 0 to 1"),
    "seed over 64 bits": (
        lambda t: ["--rgb-model", "difffusr", "--seed", str(2**70)],
        "seed must fit in 64 bits",
    ),
    # catalog items
    "item JSON cut short": (cut_item, "cannot read the items of .*catalog.json"),
    "every item cloudy as a word": (
        with_property("eo:cloud_cover", "cloudy"),
        r"no scene .* \(3 skipped as unreadable, the first: item S2_L2A_DEMO_\w+: "
        r"eo:cloud_cover 'cloudy' is not a number\)",
    ),
    "every item without a processing baseline": (
        with_property("s2:processing_baseline", "N/A"),
        r"\(3 skipped .* s2:processing_baseline 'N/A' is not a version number",
    ),
    # weights of the RGB model (the fusion weights go through the same checks)
    "weights' header length 2**60": (
        weights(lambda: (1 << 60).to_bytes(8, "little") + b'{"a": 1}'),
        "header too large",
    ),
    "weights' header of 120 MB": (
        weights(lambda: (120 * 10**6).to_bytes(8, "little") + b"{" + b" " * 1000),
        "header too large",
    ),
    "weights cut short": (weights(truncated_weights), "unreadable safetensors file"),
    "weights' offsets past the end": (weights(offsets_past_the_end), "unreadable safetensors file"),
    "pickle named .safetensors": (
        weights(lambda: pickle.dumps({"w": 1})),
        "named .safetensors but holds a PyTorch pickle; refused",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_in_one_line_before_anything_is_written(case, demo_product, tmp_path, capsys):
    args, pattern = REFUSED[case]
    before = tree_digest(demo_product)
    code, _, err = run([*DEMO_TILING, *args(tmp_path), "--out", str(demo_product)], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert tree_digest(demo_product) == before


def across_the_antimeridian(folder: Path) -> str:
    """An ItemCollection of one demo item moved to Fiji's antimeridian, split there."""
    item = demo_items()[0]
    item["geometry"] = mapping(
        shapely.MultiPolygon([box(179.5, -16.5, 180, -15.5), box(-180, -16.5, -179.5, -15.5)])
    )
    item["bbox"] = [179.5, -16.5, -179.5, -15.5]
    item["properties"].update({"proj:epsg": 32760, "proj:code": "EPSG:32760"})
    return item_collection(folder, [item])


STRIP = [[-179.9, -16], [179.9, -16], [179.9, -16.1], [-179.9, -16.1], [-179.9, -16]]
SPLIT = {
    "type": "MultiPolygon",
    "coordinates": [
        [[[179.9, -16], [180, -16], [180, -16.1], [179.9, -16.1], [179.9, -16]]],
        [[[-180, -16], [-179.9, -16], [-179.9, -16.1], [-180, -16.1], [-180, -16]]],
    ],
}


@pytest.mark.parametrize("geometry", [polygon(STRIP), json.dumps(SPLIT)], ids=["naive", "split"])
def test_an_aoi_across_the_antimeridian_is_gridded_where_it_is(geometry, tmp_path, capsys):
    """A strip 0.2° wide across the antimeridian, drawn naively (its edges jump 359.8°) or
    split there (RFC 7946): gridded in UTM zone 1 (not in that of longitude 0) as 21.6 km by
    11.5 km, and found by the search of an item on both sides."""
    path = file(tmp_path, "strip.geojson", geometry)
    assert read_aoi(path).bounds == pytest.approx((-180, -16.1, 180, -16))  # two parts
    code, out, err = run(
        [
            "--aoi",
            path,
            "--stac",
            across_the_antimeridian(tmp_path),
            "--start",
            "2023-01-01",
            "--end",
            "2023-01-31",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 0, err
    assert "items matched: 1" in out
    assert "output grid:   EPSG:32701, 8640 x 4584 px" in out
    assert "tiles:         15 of 1920 px" in out


CAP = [[-180, 80], [180, 80], [180, 90], [-180, 90], [-180, 80]]


def test_a_polar_cap_in_a_polar_crs_is_the_whole_disc():
    """The cap north of 80°, drawn as RFC 7946 draws it (along the antimeridian to the pole),
    projected into polar stereographic: the disc, not the line its four corners make."""
    cap = aoi_from_geojson(json.loads(polygon(CAP)))
    disc = project(cap, CRS.from_epsg(3413))
    radius = project(shapely.Point(0, 80), CRS.from_epsg(3413)).distance(shapely.Point(0, 0))
    assert disc.area == pytest.approx(math.pi * radius**2, rel=1e-3)


def test_items_with_unreadable_properties_are_skipped_with_a_warning(tmp_path, capsys):
    """One item of three with a cloud cover that is not a number, one with a processing
    baseline that is not a version: both left out, each named, and the plan goes on."""
    items = demo_items()
    items[0]["properties"]["eo:cloud_cover"] = "cloudy"
    items[1]["properties"]["s2:processing_baseline"] = "N/A"
    code, out, err = run(
        [
            "--stac",
            item_collection(tmp_path, items),
            "--start",
            "2023-01-01",
            "--end",
            "2023-01-31",
            "--max-cloud",
            "60",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 0, err
    assert err.splitlines() == [
        f"warning: skipped item {items[0]['id']}: eo:cloud_cover 'cloudy' is not a number",
        f"warning: skipped item {items[1]['id']}: s2:processing_baseline 'N/A' is not a "
        "version number such as 05.11",
    ]
    assert "items matched: 1 " in out


def test_a_crs_spelt_otherwise_resumes_the_product_unchanged(
    demo_product, dask_client, tmp_path, capsys
):
    """The demo product's CRS given as a PROJ string: taken as EPSG:32719, so the resumed
    product keeps its grid_crs_wkt (with its EPSG identity) and skips every finished tile."""
    copy = tmp_path / "demo.zarr"
    shutil.copytree(demo_product, copy)
    before = xr.open_zarr(copy).attrs["grid_crs_wkt"]
    code, out, err = run(
        [
            "--crs",
            "+proj=utm +zone=19 +south +datum=WGS84 +units=m +no_defs",
            *DEMO_TILING,
            "--out",
            str(copy),
            "--scheduler",
            dask_client.scheduler.address,
        ],
        capsys,
    )
    assert code == 0, err
    assert f"0 tiles written, {DEMO_TILES} already finished" in out
    assert "output grid:   EPSG:32719" in out
    after = xr.open_zarr(copy).attrs["grid_crs_wkt"]
    assert after == before and 'ID["EPSG",32719]' in after


def test_the_product_footprint_across_the_antimeridian_and_around_a_pole():
    """The STAC footprint of a product gridded across the antimeridian is split there, its
    bbox west of east as RFC 7946 writes it; that of a grid around a pole is the cap."""
    strip = aoi_from_geojson(json.loads(polygon(STRIP)))
    outline = footprint(plan_grid(strip, CRS.from_epsg(32701), 1920))
    assert outline.geom_type == "MultiPolygon"
    west, south, east, north = wgs84_bbox(outline)
    assert 179.85 < west <= 179.9 and -179.9 <= east < -179.85
    assert -16.2 < south < -16.1 and -16 < north < -15.9
    cap = aoi_from_geojson(json.loads(polygon(CAP)))
    west, south, east, north = footprint(plan_grid(cap, CRS.from_epsg(3413), 1920)).bounds
    assert (west, east, north) == (-180, 180, 90) and 75.5 < south < 76  # the corners


def test_a_neighbouring_utm_zone_is_taken_with_a_warning(tmp_path, capsys):
    """The demo (zone 19) in zone 20: outside that zone's area of use, but its pixels only
    0.1 % off 2.5 m there; planned, and the user told."""
    code, out, err = run(["--crs", "EPSG:32720", "--dry-run"], capsys)
    assert code == 0, err
    assert err.splitlines() == [
        "warning: the AOI reaches beyond the area of use of the CRS (EPSG:32720 is meant for "
        "longitudes -66° to -60°, latitudes -80° to 0°); its pixels there are up to 0.1% off "
        "2.5 m on the ground"
    ]
    assert "output grid:   EPSG:32720" in out
