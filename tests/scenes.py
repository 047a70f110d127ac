"""Small synthetic Sentinel-2 L2A scenes written as GeoTIFFs with STAC items, for unit tests.

The pixel values are made up (honestly synthetic); the georeferencing, asset layout and
metadata follow real L2A items so the loading code meets what it meets in the field.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from pipeline.geo.bands import BANDS

EPSG = 32719
ORIGIN = (600000.0, 4700020.0)


def write_scene(
    folder: Path,
    item_id: str,
    when: datetime,
    dn: dict[str, np.ndarray],
    scl: np.ndarray | None = None,
    baseline: str = "05.11",
    asset_keys: dict[str, str] | None = None,
    extra_properties: dict | None = None,
    origin: tuple[float, float] = ORIGIN,
) -> pystac.Item:
    """An item whose assets hold ``dn`` (band name → uint16 array at its native resolution)."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = asset_keys or {}
    layers = dict(dn)
    if scl is not None:
        layers["SCL"] = scl
    assets = {}
    footprint = None
    for band, values in layers.items():
        resolution = 20 if band == "SCL" else BANDS[band].resolution
        transform = from_origin(*origin, resolution, resolution)
        path = folder / f"{item_id}_{band}.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=values.shape[1],
            height=values.shape[0],
            count=1,
            dtype="uint8" if band == "SCL" else "uint16",
            crs=f"EPSG:{EPSG}",
            transform=transform,
            nodata=0,
        ) as dst:
            dst.write(values, 1)
        assets[keys.get(band, band)] = pystac.Asset(
            href=path.resolve().as_uri(),
            media_type=pystac.MediaType.GEOTIFF,
            roles=["data"],
            extra_fields={
                "proj:shape": list(values.shape),
                "proj:transform": list(transform)[:6],
                "raster:bands": [{"nodata": 0, "spatial_resolution": resolution}],
            },
        )
        width = values.shape[1] * resolution
        height = values.shape[0] * resolution
        bbox = (origin[0], origin[1] - height, origin[0] + width, origin[1])
        footprint = bbox if footprint is None else _intersect(footprint, bbox)
    lonlat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform_bounds(*footprint)
    item = pystac.Item(
        id=item_id,
        geometry=_box(lonlat),
        bbox=list(lonlat),
        datetime=when,
        properties={
            "proj:epsg": EPSG,
            "s2:processing_baseline": baseline,
            "eo:cloud_cover": 0.0,
            **(extra_properties or {}),
        },
        collection="test-l2a",
    )
    for key, asset in assets.items():
        item.add_asset(key, asset)
    return item


def _intersect(a, b):
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _box(b):
    x0, y0, x1, y1 = b
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
