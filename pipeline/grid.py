"""Area of interest, output grid and tiles: the first room of the data flow.

The output grid has 2.5 m pixels whose edges lie on a 60 m lattice, so that 4 output pixels make
one 10 m pixel and 24 make one 60 m pixel. A tile (a square of ``tile_size`` output pixels, a
multiple of 24) is the unit of work, of failure and restart, and of Zarr sharding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import shapely
from pyproj import CRS, Transformer
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import AOIError

#: Output pixel size in metres.
RESOLUTION = 2.5
#: Input pixel size in metres (the 10 m bands).
INPUT_RESOLUTION = 10.0
#: Super-resolution factor from input to output.
SCALE = 4
#: Lattice that tile edges follow so every band's native pixels nest in a tile (one 60 m pixel).
LATTICE = 60.0
#: Tile sizes must be a multiple of this many output pixels (one 60 m pixel).
TILE_QUANTUM = int(LATTICE / RESOLUTION)
#: 10 m pixels per lattice cell: blocks and halos are whole multiples of it.
LATTICE_PIXELS = int(LATTICE / INPUT_RESOLUTION)

_LAEA_EUROPE = box(*CRS.from_epsg(3035).area_of_use.bounds)


def read_aoi(path: str) -> BaseGeometry:
    """Read a GeoJSON file or URL holding polygons in WGS84 and return their union."""
    try:
        with fsspec.open(path, "rt") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise AOIError(f"AOI file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise AOIError(f"AOI {path} is not valid JSON: {err}") from None
    except OSError as err:
        raise AOIError(f"cannot read AOI {path}: {err}") from None
    return aoi_from_geojson(doc, path)


def aoi_from_geojson(doc: object, name: str = "AOI") -> BaseGeometry:
    """Turn a GeoJSON object (FeatureCollection, Feature or geometry) into one polygonal shape."""
    if not isinstance(doc, dict) or "type" not in doc:
        raise AOIError(f"{name} is not a GeoJSON object")
    if doc["type"] == "FeatureCollection":
        geometries = [f.get("geometry") for f in doc.get("features") or []]
    elif doc["type"] == "Feature":
        geometries = [doc.get("geometry")]
    else:
        geometries = [doc]
    geometries = [g for g in geometries if g]
    if not geometries:
        raise AOIError(f"{name} holds no geometry")
    try:
        parts = [shape(g) for g in geometries]
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.ShapelyError) as err:
        raise AOIError(f"{name} holds a malformed geometry: {err}") from None
    kinds = {p.geom_type for p in parts} - {"Polygon", "MultiPolygon"}
    if kinds:
        raise AOIError(f"{name} must hold polygons, found {', '.join(sorted(kinds))}")
    aoi = shapely.union_all([shapely.make_valid(p) for p in parts])
    if aoi.is_empty or aoi.area == 0:
        raise AOIError(f"{name} has an empty polygon")
    minx, miny, maxx, maxy = aoi.bounds
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AOIError(f"{name} coordinates are not longitude/latitude in WGS84")
    return aoi


def default_crs(aoi: BaseGeometry) -> CRS:
    """EPSG:3035 (LAEA Europe) for AOIs centred in its area of use, else the centroid's UTM
    zone: an AOI of all Europe reaches past that area (to the Urals), and no UTM zone could
    hold it."""
    if _LAEA_EUROPE.contains(aoi.centroid):
        return CRS.from_epsg(3035)
    lon, lat = aoi.centroid.x, aoi.centroid.y
    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def project(geometry: BaseGeometry, crs: CRS) -> BaseGeometry:
    """Transform a WGS84 geometry into ``crs``."""
    to_crs = Transformer.from_crs(4326, crs, always_xy=True)
    return shapely.transform(
        geometry, lambda xy: np.column_stack(to_crs.transform(xy[:, 0], xy[:, 1]))
    )


@dataclass(frozen=True)
class Tile:
    """One square of the output grid, addressed by its tile row and column."""

    row: int
    col: int
    y_off: int  # first output pixel row
    x_off: int  # first output pixel column
    height: int  # output pixels
    width: int

    @property
    def key(self) -> str:
        return f"{self.row}_{self.col}"


@dataclass(frozen=True)
class OutputGrid:
    """The product's 2.5 m grid: CRS, top-left corner, size in pixels, tile size."""

    crs: CRS
    x0: float
    y0: float
    width: int
    height: int
    tile_size: int

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """Affine coefficients (a, b, c, d, e, f) of the output pixel grid."""
        return (RESOLUTION, 0.0, self.x0, 0.0, -RESOLUTION, self.y0)

    @property
    def geotransform(self) -> str:
        """GDAL GeoTransform string, as CF ``spatial_ref`` variables carry it."""
        return f"{self.x0} {RESOLUTION} 0.0 {self.y0} 0.0 {-RESOLUTION}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (
            self.x0,
            self.y0 - self.height * RESOLUTION,
            self.x0 + self.width * RESOLUTION,
            self.y0,
        )

    def tile_bounds(self, tile: Tile, halo: float = 0.0) -> tuple[float, float, float, float]:
        """Bounds (minx, miny, maxx, maxy) of a tile, widened by ``halo`` metres on each side."""
        left = self.x0 + tile.x_off * RESOLUTION
        top = self.y0 - tile.y_off * RESOLUTION
        return (
            left - halo,
            top - tile.height * RESOLUTION - halo,
            left + tile.width * RESOLUTION + halo,
            top + halo,
        )

    def all_tiles(self) -> Iterator[Tile]:
        n = self.tile_size
        for row in range(math.ceil(self.height / n)):
            for col in range(math.ceil(self.width / n)):
                y, x = row * n, col * n
                yield Tile(row, col, y, x, min(n, self.height - y), min(n, self.width - x))

    def tiles_in(self, footprint: BaseGeometry) -> list[Tile]:
        """Tiles that intersect ``footprint`` (a polygon in the grid's CRS), not just its bbox.

        Tested a row of tiles at a time with shapely's vectorised predicates, so that the
        million tiles of a continent's bounding box take seconds.
        """
        shapely.prepare(footprint)
        n = self.tile_size
        cols = np.arange(math.ceil(self.width / n))
        left = self.x0 + cols * n * RESOLUTION
        right = np.minimum(left + n * RESOLUTION, self.x0 + self.width * RESOLUTION)
        tiles = []
        for row in range(math.ceil(self.height / n)):
            top = self.y0 - row * n * RESOLUTION
            bottom = max(top - n * RESOLUTION, self.y0 - self.height * RESOLUTION)
            hits = shapely.intersects(footprint, shapely.box(left, bottom, right, top))
            height = min(n, self.height - row * n)
            tiles += [Tile(row, c, row * n, c * n, height, min(n, self.width - c * n))
                      for c in cols[hits].tolist()]
        return tiles


def plan_grid(
    aoi: BaseGeometry,
    crs: CRS,
    tile_size: int = 1920,
    anchor: tuple[float, float] = (0.0, 0.0),
) -> OutputGrid:
    """Snap the AOI's footprint in ``crs`` outward to the 60 m lattice shifted by ``anchor``.

    ``anchor`` is a point of the lattice (for instance the corner of a scene's pixel grid), so
    that when the output CRS is the scenes' own, native 10/20/60 m pixels nest in output pixels.
    """
    if tile_size <= 0 or tile_size % TILE_QUANTUM:
        raise ValueError(f"tile size must be a positive multiple of {TILE_QUANTUM} pixels")
    minx, miny, maxx, maxy = project(aoi, crs).bounds
    ax, ay = (a % LATTICE for a in anchor)
    left = math.floor((minx - ax) / LATTICE) * LATTICE + ax
    right = math.ceil((maxx - ax) / LATTICE) * LATTICE + ax
    bottom = math.floor((miny - ay) / LATTICE) * LATTICE + ay
    top = math.ceil((maxy - ay) / LATTICE) * LATTICE + ay
    return OutputGrid(
        crs=crs,
        x0=left,
        y0=top,
        width=round((right - left) / RESOLUTION),
        height=round((top - bottom) / RESOLUTION),
        tile_size=tile_size,
    )
