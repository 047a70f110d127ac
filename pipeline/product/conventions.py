"""The zarr-conventions that the product follows beside CF, so that readers which know them
(GDAL from 3.13 on, and so QGIS builds on it) find its georeferencing and its overviews
without CF: ``proj:`` names the CRS, ``spatial:`` the affine transform, shape and extent of
the pixel grid, and ``multiscales`` the overview pyramid (laid out in
:mod:`pipeline.product.overviews`).

The CRS and the spatial dimensions are declared on the root group and on every data array;
the transform and shape, which differ per overview level, on the arrays and on each level of
the multiscales layout, never on a group (the spatial convention keeps each fact in one
place).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyproj import CRS

_SCHEMAS = "https://raw.githubusercontent.com/zarr-conventions"
_SPECS = "https://github.com/zarr-conventions"

#: The registrations of the conventions in ``zarr_conventions``, as their v1 schemas want them.
PROJ = {
    "schema_url": f"{_SCHEMAS}/proj/refs/tags/v1/schema.json",
    "spec_url": f"{_SPECS}/proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj",
    "description": "Coordinate reference system information for geospatial data",
}
SPATIAL = {
    "schema_url": f"{_SCHEMAS}/spatial/refs/tags/v1/schema.json",
    "spec_url": f"{_SPECS}/spatial/blob/v1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}
MULTISCALES = {
    "schema_url": f"{_SCHEMAS}/multiscales/refs/tags/v1/schema.json",
    "spec_url": f"{_SPECS}/multiscales/blob/v1/README.md",
    "uuid": "d35379db-88df-4056-af3a-620245f8e347",
    "name": "multiscales",
    "description": "Multiscale layout of zarr datasets",
}
#: The product's spatial dimensions, Y first as the spatial convention orders them.
SPATIAL_DIMENSIONS = ["y", "x"]


def crs_attrs(crs: CRS) -> dict[str, str]:
    """The CRS as ``proj:code`` (``EPSG:<code>``), or as ``proj:wkt2`` for a CRS without an
    EPSG code: exactly one of them, as the proj convention wants."""
    epsg = crs.to_epsg()
    return {"proj:code": f"EPSG:{epsg}"} if epsg else {"proj:wkt2": crs.to_wkt()}


def spatial_grid(transform: Sequence[float], shape: Sequence[int]) -> dict[str, Any]:
    """An array's (or an overview level's) pixel grid: affine (a, b, c, d, e, f) of its
    top-left corner and (height, width)."""
    return {
        "spatial:transform": [float(v) for v in transform[:6]],
        "spatial:shape": [int(v) for v in shape],
    }


def group_attrs(crs: CRS, bounds: Sequence[float]) -> dict[str, Any]:
    """A group's declarations: the CRS and dimensions of its arrays, and their extent
    (minx, miny, maxx, maxy)."""
    return {
        "zarr_conventions": [PROJ, SPATIAL],
        **crs_attrs(crs),
        "spatial:dimensions": SPATIAL_DIMENSIONS,
        "spatial:bbox": [float(v) for v in bounds],
    }


def array_attrs(crs: CRS, transform: Sequence[float], shape: Sequence[int]) -> dict[str, Any]:
    """A data array's georeferencing: its CRS, dimensions and pixel grid."""
    return {
        "zarr_conventions": [PROJ, SPATIAL],
        **crs_attrs(crs),
        "spatial:dimensions": SPATIAL_DIMENSIONS,
        **spatial_grid(transform, shape),
    }
