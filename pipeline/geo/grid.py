"""Area of interest, output grid and tiles: the first room of the data flow.

The output grid has 2.5 m pixels whose edges lie on a 60 m lattice, so that 4 output pixels make
one 10 m pixel and 24 make one 60 m pixel. A tile (a square of ``tile_size`` output pixels, a
multiple of 24) is the unit of work, of failure and restart, and of Zarr sharding.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import numpy as np
import shapely
import shapely.affinity
from pyproj import CRS, Proj, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import Point, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import AOIError, GridError, reason
from pipeline.geo.bands import INPUT_RESOLUTION, MAX_RATIO, RESOLUTION

#: Lattice that tile edges follow so every band's native pixels nest in a tile (one 60 m pixel).
LATTICE = MAX_RATIO * INPUT_RESOLUTION
#: Tile sizes must be a multiple of this many output pixels (one 60 m pixel).
TILE_QUANTUM = int(LATTICE / RESOLUTION)
#: 10 m pixels per lattice cell: blocks and halos are whole multiples of it.
LATTICE_PIXELS = MAX_RATIO
#: The largest tile edge in output pixels (76.8 km): twice the default on a GPU. A tile is one
#: Zarr shard, which a worker holds whole: 12 bands of it are 22.6 GB as stored integers and
#: twice that as float32.
MAX_TILE_SIZE = 30720

_LAEA_EUROPE = box(*CRS.from_epsg(3035).area_of_use.bounds)
#: The largest AOI file read, in bytes: a country's detailed outline is a few MB; a file of
#: gigabytes would take the runner's memory many times over as Python objects.
MAX_AOI_BYTES = 100_000_000
#: Longest AOI edge, in degrees, before projecting: GeoJSON edges are straight lines in
#: longitude/latitude (RFC 7946), which are curves in a projected CRS.
DENSIFY_DEGREES = 0.1
#: Latitudes where UTM zones end (the polar caps are UPS's): no UTM or LAEA grid holds an AOI
#: that reaches beyond them, unless the CRS's area of use does.
POLAR_LIMITS = (-80.0, 84.0)
#: The most a grid CRS may stretch or shrink the 2.5 m pixels over the AOI: EPSG:3035 does up
#: to 3.5 % over examples/europe.geojson, a UTM zone 3.4 % at 15° from its central meridian
#: on the equator; Web Mercator 100 % at 60° of latitude.
MAX_SCALE_ERROR = 0.1
#: Boundary points at which the scale error is measured, at most.
SCALE_SAMPLES = 10_000


def read_aoi(path: str) -> BaseGeometry:
    """Read a GeoJSON file or URL holding polygons in WGS84 and return their union.

    Files over :data:`MAX_AOI_BYTES` are refused before they are read into memory."""
    try:
        with fsspec.open(path, "rb") as f:
            size = getattr(f, "size", None)
            if size is None or size <= MAX_AOI_BYTES:
                data = f.read(MAX_AOI_BYTES + 1)
    except FileNotFoundError:
        raise AOIError(f"AOI file not found: {path}") from None
    except OSError as err:
        raise AOIError(f"cannot read AOI {path}: {reason(err)}") from None
    if (size or 0) > MAX_AOI_BYTES or len(data) > MAX_AOI_BYTES:
        raise AOIError(
            f"AOI {path} is larger than {MAX_AOI_BYTES // 10**6} MB, the most an "
            "AOI file may hold: simplify its outline"
        )
    try:
        doc = json.loads(data)
    except RecursionError:
        raise AOIError(f"AOI {path} is nested too deeply to be GeoJSON") from None
    except UnicodeDecodeError:
        raise AOIError(f"AOI {path} is not text (GeoJSON is UTF-8)") from None
    except json.JSONDecodeError as err:
        raise AOIError(f"AOI {path} is not valid JSON: {err}") from None
    return aoi_from_geojson(doc, path)


def aoi_from_geojson(doc: object, name: str = "AOI") -> BaseGeometry:
    """Turn a GeoJSON object (FeatureCollection, Feature or geometry) into one polygonal shape
    in longitude/latitude, split at the antimeridian where it crosses it (RFC 7946)."""
    if not isinstance(doc, dict) or "type" not in doc:
        raise AOIError(f"{name} is not a GeoJSON object")
    if doc["type"] == "FeatureCollection":
        features = doc.get("features") or []
        if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
            raise AOIError(f"{name}: 'features' must be a list of Feature objects")
        geometries = [f.get("geometry") for f in features]
    elif doc["type"] == "Feature":
        geometries = [doc.get("geometry")]
    else:
        geometries = [doc]
    geometries = [g for g in geometries if g]
    if not geometries:
        raise AOIError(f"{name} holds no geometry")
    try:
        with warnings.catch_warnings():  # NaN coordinates are refused below, in one line
            warnings.simplefilter("ignore", RuntimeWarning)
            parts = [shape(g) for g in geometries]
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        RecursionError,
        shapely.errors.ShapelyError,
    ) as err:
        raise AOIError(f"{name} holds a malformed geometry: {reason(err)}") from None
    kinds = {p.geom_type for p in parts} - {"Polygon", "MultiPolygon"}
    if kinds:
        raise AOIError(f"{name} must hold polygons, found {', '.join(sorted(kinds))}")
    if not np.isfinite(shapely.get_coordinates(parts)).all():
        raise AOIError(f"{name} has coordinates that are not finite numbers")
    minx, miny, maxx, maxy = shapely.total_bounds(parts)
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise AOIError(f"{name} coordinates are not longitude/latitude in WGS84")
    polygons = [g for p in parts for g in getattr(p, "geoms", [p])]
    aoi = shapely.union_all([shapely.make_valid(split_at_antimeridian(p, name)) for p in polygons])
    if aoi.is_empty or aoi.area == 0:
        raise AOIError(f"{name} has an empty polygon")
    return aoi


def split_at_antimeridian(polygon: Polygon, name: str = "the polygon") -> BaseGeometry:
    """``polygon`` as meant when an edge of it jumps more than 180° in longitude: across the
    antimeridian (no one draws an edge around half the world), split there (RFC 7946). An
    edge from -180° to 180° (of a cap, or of a part already split) is taken as drawn."""
    rings = [np.asarray(polygon.exterior.coords)]
    rings += [np.asarray(r.coords) for r in polygon.interiors]
    unwrapped = [_unwrapped(ring, name) for ring in rings]
    if all(u is r for u, r in zip(unwrapped, rings, strict=True)):
        return polygon
    shell, *holes = unwrapped
    centre = shell[:, 0].mean()
    holes = [h + [360 * round((centre - h[:, 0].mean()) / 360), 0] for h in holes]
    whole = shapely.make_valid(Polygon(shell[:, :2], [h[:, :2] for h in holes]))
    if whole.bounds[2] - whole.bounds[0] >= 360:
        raise AOIError(f"{name} goes all around the globe")
    pieces = [
        shapely.affinity.translate(whole & box(k - 180, -90, k + 180, 90), -k)
        for k in (-360, 0, 360)
    ]
    return shapely.union_all(pieces)


def _unwrapped(ring: np.ndarray, name: str) -> np.ndarray:
    """The ring with longitudes made continuous across the antimeridian (the ring itself
    when it does not cross it); AOIError for a ring around a pole."""
    x = ring[:, 0]
    step = np.diff(x)
    drawn = (np.abs(x[:-1]) == 180) & (np.abs(x[1:]) == 180)
    crossing = (np.abs(step) > 180) & ~drawn
    if not crossing.any():
        return ring
    shift = np.concatenate([[0.0], np.cumsum(np.where(crossing, -360 * np.sign(step), 0))])
    if shift[-1] != 0:
        raise AOIError(
            f"{name} has a ring around a pole: give the polar cap as a polygon "
            "that runs along the antimeridian to the pole (RFC 7946)"
        )
    return np.column_stack([x + shift, ring[:, 1:]])


def default_crs(aoi: BaseGeometry) -> CRS:
    """EPSG:3035 (LAEA Europe) for AOIs centred in its area of use, else the centroid's UTM
    zone: an AOI of all Europe reaches past that area (to the Urals), and no UTM zone could
    hold it. An AOI across the antimeridian is centred there, not near longitude 0."""
    lon, lat = _centre(aoi)
    if _LAEA_EUROPE.contains(Point(lon, lat)):
        return CRS.from_epsg(3035)
    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _centre(aoi: BaseGeometry) -> tuple[float, float]:
    """The centroid of the AOI as longitude/latitude, across the antimeridian where the AOI
    lies across it."""
    centroid = _eastward(aoi).centroid
    return (centroid.x + 180) % 360 - 180, centroid.y


def wgs84_bbox(geometry: BaseGeometry) -> list[float]:
    """The bbox of a longitude/latitude geometry; across the antimeridian, as RFC 7946 writes
    it there: its west bound east of its east bound."""
    west, south, east, north = _eastward(geometry).bounds
    return [west, south, east - 360 if east > 180 else east, north]


def _eastward(geometry: BaseGeometry) -> BaseGeometry:
    """``geometry`` with its parts in the western hemisphere moved east by 360° when that
    makes it narrower (one split at the antimeridian), else itself."""
    parts = getattr(geometry, "geoms", [geometry])
    if len(parts) < 2:  # whole: not split (and moving it could only change its rounding)
        return geometry
    moved = shapely.union_all(
        [shapely.affinity.translate(p, 360) if p.bounds[2] <= 0 else p for p in parts]
    )
    narrower = moved.bounds[2] - moved.bounds[0] < geometry.bounds[2] - geometry.bounds[0]
    return moved if narrower else geometry


def parse_crs(text: str) -> CRS:
    """The projected CRS in metres that ``text`` names, as its EPSG definition: another
    spelling of it (a PROJ string, WKT) would be written into the product as given, and a
    product made with ``EPSG:32632`` would not take a re-run with its PROJ string."""
    try:
        crs = CRS.from_user_input(text)
    except CRSError:
        raise ValueError(f"unknown CRS {text!r}") from None
    code = crs.to_epsg()
    if code is None or not crs.is_projected:
        raise ValueError(f"{text!r} is not a projected CRS with an EPSG code")
    if CRS.from_epsg(code) != crs:
        raise ValueError(f"{text!r} is only close to EPSG:{code}: give that code if it is meant")
    crs = CRS.from_epsg(code)
    units = sorted({axis.unit_name for axis in crs.axis_info})
    if units != ["metre"]:
        raise ValueError(
            f"EPSG:{code} ({crs.name}) measures in {' and '.join(units)}: the "
            "2.5 m grid needs a CRS in metres"
        )
    return crs


def check_crs(aoi: BaseGeometry, crs: CRS, given: bool = True) -> str | None:
    """Refuse a grid CRS that cannot hold the AOI: one that stops short of the polar
    latitudes the AOI reaches (UTM, LAEA), or whose projection stretches or shrinks the
    pixels over the AOI by more than :data:`MAX_SCALE_ERROR`. Returns a warning line when the
    user ``given`` a CRS whose area of use does not hold the AOI though its pixels are still
    true enough there (a neighbouring UTM zone; a country in its national zone, as Norway in
    EPSG:25833). A default CRS is the project's choice (see :func:`default_crs`), not
    compared with its area of use."""
    area = crs.area_of_use
    west, south, east, north = area.bounds if area else (-180.0, -90.0, 180.0, 90.0)
    where = (
        f"{crs.to_string()} is meant for longitudes {west:g}° to {east:g}°, "
        f"latitudes {south:g}° to {north:g}°"
    )
    _, low, _, high = aoi.bounds
    polar = (
        high
        if high > max(POLAR_LIMITS[1], north)
        else low
        if low < min(POLAR_LIMITS[0], south)
        else None
    )
    if polar is not None:
        raise GridError(
            f"the AOI reaches latitude {polar:g}°, beyond "
            f"what the grid's CRS can hold ({where}): clip it at "
            f"{POLAR_LIMITS[1]:g}°N / {-POLAR_LIMITS[0]:g}°S, or give --crs a polar "
            "CRS such as EPSG:3413 (Arctic) or EPSG:3031 (Antarctic)"
        )
    error = _scale_error(aoi, crs)
    if not error <= MAX_SCALE_ERROR:  # NaN too
        raise GridError(
            f"{crs.to_string()} would make the pixels over the AOI up to "
            f"{error:.0%} off 2.5 m on the ground (at most {MAX_SCALE_ERROR:.0%} is "
            f"taken): {where}"
        )
    parts = (
        [box(west, south, east, north)]
        if west <= east
        else [box(west, south, 180, north), box(-180, south, east, north)]
    )
    if given and not shapely.union_all(parts).covers(aoi):
        return (
            f"the AOI reaches beyond the area of use of the CRS ({where}); its pixels "
            f"there are up to {error:.1%} off 2.5 m on the ground"
        )
    return None


def _scale_error(aoi: BaseGeometry, crs: CRS) -> float:
    """The largest relative error of the projection's scale, along meridians or parallels,
    at the AOI's boundary (where it is largest, for the projections a grid takes), sampled
    at most :data:`SCALE_SAMPLES` points."""
    points = shapely.get_coordinates(shapely.segmentize(aoi.boundary, DENSIFY_DEGREES))
    points = points[:: max(1, len(points) // SCALE_SAMPLES)]
    factors = Proj(crs).get_factors(points[:, 0], points[:, 1])
    scales = np.concatenate([factors.meridional_scale, factors.parallel_scale])
    return float(np.max(np.abs(scales - 1))) if np.isfinite(scales).all() else math.inf


def project(geometry: BaseGeometry, crs: CRS | str) -> BaseGeometry:
    """Transform a WGS84 geometry into ``crs``, its edges first cut to
    :data:`DENSIFY_DEGREES` so that they follow their course (and a polar cap its circle)."""
    to_crs = Transformer.from_crs(4326, crs, always_xy=True)
    return shapely.transform(
        shapely.segmentize(geometry, DENSIFY_DEGREES),
        lambda xy: np.column_stack(to_crs.transform(xy[:, 0], xy[:, 1])),
    )


def wgs84_box(bounds: tuple[float, float, float, float]) -> BaseGeometry:
    """A longitude/latitude box; one whose west bound is east of its east bound (as pyproj's
    ``transform_bounds`` gives across the antimeridian) as its two parts."""
    west, south, east, north = bounds
    if west <= east:
        return box(west, south, east, north)
    return shapely.union_all([box(west, south, 180, north), box(-180, south, east, north)])


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
            tiles += [
                Tile(row, c, row * n, c * n, height, min(n, self.width - c * n))
                for c in cols[hits].tolist()
            ]
        return tiles


def check_tile_size(size: int) -> int:
    """``size`` when it is a tile edge the grid can take, else ValueError saying why."""
    if size <= 0 or size % TILE_QUANTUM:
        raise ValueError(f"a tile size must be a positive multiple of {TILE_QUANTUM} pixels")
    if size > MAX_TILE_SIZE:
        raise ValueError(
            f"a tile size is at most {MAX_TILE_SIZE} pixels "
            f"({MAX_TILE_SIZE * RESOLUTION / 1000:g} km), the most a worker holds"
        )
    return size


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
    check_tile_size(tile_size)
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
