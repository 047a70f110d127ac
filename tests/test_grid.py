"""AOI reading and validation, default CRS, the 60 m-aligned grid and its tiles."""

import dataclasses
import json

import pytest
from pyproj import CRS
from shapely.geometry import Polygon, box

from pipeline.errors import AOIError
from pipeline.geo.aoi import aoi_from_geojson, project, read_aoi
from pipeline.geo.bands import RESOLUTION
from pipeline.geo.crs import default_crs
from pipeline.geo.grid import LATTICE, lattice_origin, plan_grid


def polygon(x0, y0, x1, y1):
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def test_reads_feature_collection_file(tmp_path):
    path = tmp_path / "aoi.geojson"
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {}, "geometry": polygon(10, 50, 10.1, 50.1)},
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": polygon(10.2, 50, 10.3, 50.1),
                    },
                ],
            }
        )
    )
    aoi = read_aoi(str(path))
    assert aoi.geom_type == "MultiPolygon"
    assert aoi.bounds == pytest.approx((10, 50, 10.3, 50.1))


@pytest.mark.parametrize(
    "doc, message",
    [
        ([1, 2], "not a GeoJSON object"),
        ({"type": "FeatureCollection", "features": []}, "holds no geometry"),
        ({"type": "Point", "coordinates": [10, 50]}, "must hold polygons, found Point"),
        ({"type": "Polygon", "coordinates": "nonsense"}, "malformed geometry"),
        (polygon(10, 50, 10, 50), "empty polygon"),
        (polygon(500000, 5000000, 500100, 5000100), "not longitude/latitude"),
    ],
)
def test_rejects_bad_aoi_with_one_line(doc, message):
    with pytest.raises(AOIError, match=message) as err:
        aoi_from_geojson(doc)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(AOIError, match="not found"):
        read_aoi(str(tmp_path / "nope.geojson"))
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(AOIError, match="not valid JSON"):
        read_aoi(str(bad))


def test_default_crs_is_laea_in_europe_and_utm_elsewhere():
    assert default_crs(box(10, 50, 11, 51)).to_epsg() == 3035
    assert default_crs(box(-69.0, -47.6, -68.9, -47.5)).to_epsg() == 32719
    assert default_crs(box(-100, 40, -99, 41)).to_epsg() == 32614


def test_grid_is_on_the_anchored_60m_lattice():
    crs = CRS.from_epsg(32719)
    aoi = box(-67.70, -47.56, -67.68, -47.55)
    grid = plan_grid(aoi, crs, tile_size=96, anchor=(600000.0, 4700020.0))
    assert (grid.x0 - 600000) % LATTICE == 0
    assert (grid.y0 - 4700020) % LATTICE == 0
    assert grid.width % 24 == 0 and grid.height % 24 == 0
    minx, miny, maxx, maxy = project(aoi, crs).bounds
    gx0, gy0, gx1, gy1 = grid.bounds
    assert gx0 <= minx and gy0 <= miny and gx1 >= maxx and gy1 >= maxy
    assert gx1 - gx0 < maxx - minx + 2 * LATTICE
    assert grid.transform == (RESOLUTION, 0.0, grid.x0, 0.0, -RESOLUTION, grid.y0)


def test_tiles_follow_the_polygon_not_its_bbox():
    crs = CRS.from_epsg(32632)
    # An L-shaped AOI: its bbox's upper-right quarter is empty.
    lshape = Polygon([(9, 45), (9.2, 45), (9.2, 45.1), (9.1, 45.1), (9.1, 45.2), (9, 45.2)])
    grid = plan_grid(lshape, crs, tile_size=480)
    tiles = grid.tiles_in(project(lshape, crs))
    every = list(grid.all_tiles())
    assert 0 < len(tiles) < len(every)
    assert len({t.key for t in tiles}) == len(tiles)
    edge = [t for t in every if t.col == max(e.col for e in every)]
    assert all(t.width <= 480 and t.x_off + t.width == grid.width for t in edge)


def test_tile_size_must_follow_the_lattice():
    with pytest.raises(ValueError, match="multiple of 24"):
        plan_grid(box(10, 50, 10.1, 50.1), CRS.from_epsg(3035), tile_size=1000)


def test_tiles_are_plain_integers():
    """Tile keys and sizes go into JSON and Zarr attributes."""
    aoi = box(10, 50, 10.2, 50.1)
    grid = plan_grid(aoi, CRS.from_epsg(3035), tile_size=480)
    tiles = grid.tiles_in(project(aoi, grid.crs))
    assert tiles and all(type(v) is int for t in tiles for v in dataclasses.astuple(t))


def test_a_tiles_input_box_is_the_tile_and_its_halo_at_10m():
    """The 10 m box the models read and the bounds the scenes are read over are one region."""
    grid = plan_grid(box(-67.70, -47.56, -67.68, -47.55), CRS.from_epsg(32719), tile_size=96)
    for tile in grid.all_tiles():
        inside, halo = grid.input_box(tile, 0), grid.input_box(tile, 12)
        assert inside.boundingbox.bbox == grid.tile_bounds(tile)
        assert halo.boundingbox.bbox == grid.input_bounds(tile, 12)
        assert tuple(halo.shape) == (tile.height // 4 + 24, tile.width // 4 + 24)
        row, col = lattice_origin(halo)
        assert (row + 12, col + 12) == lattice_origin(inside)
        assert inside.affine.c == grid.x0 + tile.x_off * RESOLUTION
    levels = [grid.level(k) for k in range(4)]
    assert [tuple(b.shape) for b in levels] == [
        (-(-grid.height // 2**k), -(-grid.width // 2**k)) for k in range(4)
    ]
    assert all(b.affine.c == grid.x0 and b.affine.f == grid.y0 for b in levels)
