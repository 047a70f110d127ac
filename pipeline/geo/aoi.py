"""The area of interest: read from GeoJSON, checked, split at the antimeridian, and projected.

GeoJSON (RFC 7946) gives polygons in longitude/latitude, with straight edges there and the
antimeridian as a cut; the functions here turn that into one shape that the grid's CRS can
take (:mod:`pipeline.geo.crs`) and the grid can cover (:mod:`pipeline.geo.grid`).
"""

from __future__ import annotations

import json
import warnings

import fsspec
import numpy as np
import shapely
import shapely.affinity
from pyproj import CRS, Transformer
from shapely.geometry import Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from pipeline.errors import AOIError, reason

#: The largest AOI file read, in bytes: a country's detailed outline is a few MB; a file of
#: gigabytes would take the runner's memory many times over as Python objects.
MAX_AOI_BYTES = 100_000_000
#: Longest AOI edge, in degrees, before projecting: GeoJSON edges are straight lines in
#: longitude/latitude (RFC 7946), which are curves in a projected CRS.
DENSIFY_DEGREES = 0.1


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


def centre(aoi: BaseGeometry) -> tuple[float, float]:
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
