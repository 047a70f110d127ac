"""The grid's CRS: the default one for an AOI, the one a user names, and whether it holds the
AOI with pixels true enough to 2.5 m on the ground."""

from __future__ import annotations

import math

import numpy as np
import shapely
from pyproj import CRS, Proj
from pyproj.exceptions import CRSError
from shapely.geometry import Point, box
from shapely.geometry.base import BaseGeometry

from pipeline.errors import GridError
from pipeline.geo.aoi import DENSIFY_DEGREES, centre, wgs84_box

_LAEA_EUROPE = box(*CRS.from_epsg(3035).area_of_use.bounds)
#: Latitudes where UTM zones end (the polar caps are UPS's): no UTM or LAEA grid holds an AOI
#: that reaches beyond them, unless the CRS's area of use does.
POLAR_LIMITS = (-80.0, 84.0)
#: The most a grid CRS may stretch or shrink the 2.5 m pixels over the AOI: EPSG:3035 does up
#: to 3.5 % over examples/europe.geojson, a UTM zone 3.4 % at 15° from its central meridian
#: on the equator; Web Mercator 100 % at 60° of latitude.
MAX_SCALE_ERROR = 0.1
#: Boundary points at which the scale error is measured, at most.
SCALE_SAMPLES = 10_000


def default_crs(aoi: BaseGeometry) -> CRS:
    """EPSG:3035 (LAEA Europe) for AOIs centred in its area of use, else the centroid's UTM
    zone: an AOI of all Europe reaches past that area (to the Urals), and no UTM zone could
    hold it. An AOI across the antimeridian is centred there, not near longitude 0."""
    lon, lat = centre(aoi)
    if _LAEA_EUROPE.contains(Point(lon, lat)):
        return CRS.from_epsg(3035)
    zone = min(int((lon + 180) // 6) + 1, 60)
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


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
    if given and not wgs84_box((west, south, east, north)).covers(aoi):
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
