#!/usr/bin/env python
"""Regenerate the embedded demo dataset in ``examples/demo/`` and ``examples/demo.geojson``.

The demo is a static, self-contained STAC catalog with three Sentinel-2 L2A items (three
acquisitions of one 2 km × 3 km scene in Patagonia, EPSG:32719) whose 12 reflectance bands and
SCL are small Cloud-Optimized GeoTIFFs at their native 10/20/60 m resolution.

What is real and what is synthetic:

* REAL: B02 B03 B04 B08 (10 m) and B11 B12 (20 m) come from the Sentinel-2 sample shipped with
  xarray-spatial (``xrspatial/datasets/sentinel-2/*.nc``, MIT licence; contains modified
  Copernicus Sentinel data). Only their clear (SCL 4/5/6) pixels are untouched.
* SYNTHETIC: B05 B06 B07 B8A (spectral interpolation of the real red, NIR and SWIR), B01 and
  B09 (derived from the real blue and NIR), the clouds, cirrus and cloud shadows burnt into every
  band, the SCL layer, the nodata swath edge of the second item, and the dates.

Every clear pixel holds the same surface reflectance in all three items (the surface does not
change), so a correct SCL-masked composite of the 10 m and 20 m bands reproduces it exactly; the
60 m bands of clear pixels next to clouds carry some cloud light, as in real products.

The output is deterministic (fixed seeds, no timestamps): re-running rewrites identical bytes.

Usage::

    python examples/make_demo.py            # rewrites examples/demo/ and examples/demo.geojson
    python examples/make_demo.py --preview /tmp/png   # also writes true-colour PNGs there
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
import rasterio.errors
import xarray as xr
from pyproj import Transformer
from rasterio.transform import Affine
from scipy import ndimage

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "demo"
AOI_PATH = HERE / "demo.geojson"

COLLECTION_ID = "sentinel-2-l2a-demo"
EPSG = 32719
ORIGIN_X, ORIGIN_Y = 600000.0, 4700020.0
#: The 10 m footprint: 200 rows × 300 columns (2 km × 3 km).
ROWS10, COLS10 = 200, 300
BOUNDS = (ORIGIN_X, ORIGIN_Y - ROWS10 * 10, ORIGIN_X + COLS10 * 10, ORIGIN_Y)
#: Inset of the demo AOI inside the footprint, metres.
AOI_INSET = 200.0

#: Margin (10 m pixels) around the footprint on which clouds are simulated, so that shadows
#: of clouds just outside the scene fall into it.
PAD = 60
PADDED_SHAPE = (ROWS10 + 2 * PAD, COLS10 + 2 * PAD)

MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
SENTINEL_LICENCE = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
XRSPATIAL_URL = "https://github.com/makepath/xarray-spatial"

SYNTHETIC_NOTE = (
    "Demo data. REAL: B02 B03 B04 B08 (10 m) and B11 B12 (20 m) surface reflectance of a "
    "Sentinel-2 L2A scene of unknown date (xarray-spatial sample, Patagonia). SYNTHETIC: "
    "B01 B05 B06 B07 B8A B09 (derived from the real bands), the clouds, cirrus and cloud "
    "shadows burnt into all bands, the SCL layer, the nodata swath edge, the acquisition "
    "dates and the processing baselines."
)


@dataclass(frozen=True)
class BandInfo:
    name: str
    resolution: int
    common_name: str
    center_wavelength: float  # µm
    fwhm: float  # µm
    real: bool
    #: Reflectance of a thick cloud top in this band.
    cloud: float
    #: How much of the direct light a cloud shadow removes in this band (0..1).
    shadow: float


BANDS: tuple[BandInfo, ...] = (
    BandInfo("B01", 60, "coastal", 0.443, 0.027, False, 0.50, 0.45),
    BandInfo("B02", 10, "blue", 0.490, 0.098, True, 0.48, 0.47),
    BandInfo("B03", 10, "green", 0.560, 0.045, True, 0.47, 0.50),
    BandInfo("B04", 10, "red", 0.665, 0.038, True, 0.46, 0.55),
    BandInfo("B05", 20, "rededge", 0.704, 0.019, False, 0.46, 0.57),
    BandInfo("B06", 20, "rededge", 0.740, 0.018, False, 0.46, 0.58),
    BandInfo("B07", 20, "rededge", 0.783, 0.028, False, 0.46, 0.59),
    BandInfo("B08", 10, "nir", 0.842, 0.145, True, 0.47, 0.60),
    BandInfo("B8A", 20, "nir08", 0.865, 0.033, False, 0.47, 0.60),
    BandInfo("B09", 60, "nir09", 0.945, 0.026, False, 0.38, 0.60),
    BandInfo("B11", 20, "swir16", 1.610, 0.143, True, 0.32, 0.65),
    BandInfo("B12", 20, "swir22", 2.190, 0.242, True, 0.22, 0.68),
)

#: How each synthetic band is made (asset descriptions).
SYNTHESIS: dict[str, str] = {
    "B01": "0.93 × real blue (B02) + 0.010 (aerosol offset), 60 m block mean",
    "B05": "interpolated between the real red (B04) and NIR (B08), 20 m block means",
    "B06": "interpolated between the real red (B04) and NIR (B08), 20 m block means",
    "B07": "interpolated between the real red (B04) and NIR (B08), 20 m block means",
    "B8A": "interpolated between the real NIR (B08, 20 m block mean) and SWIR (B11)",
    "B09": "0.85 × real NIR (B08) (water-vapour absorption), 60 m block mean",
}


@dataclass(frozen=True)
class Acquisition:
    """One synthetic acquisition: date, baseline and the recipe of its clouds."""

    date: str  # YYYY-MM-DD (synthetic)
    baseline: str
    seed: int
    cloud_cover: float  # target % of valid pixels in SCL 8/9/10
    cirrus_cover: float  # % of the footprint under thin cirrus
    shadow_shift: tuple[int, int]  # (rows south, columns east) in 10 m pixels
    swath_edge: bool  # nodata strip along the east edge

    @property
    def item_id(self) -> str:
        return f"S2_L2A_DEMO_{self.date.replace('-', '')}_N{self.baseline.replace('.', '')}"

    @property
    def offset_dn(self) -> int:
        """DN added to reflectance × 10000 (BOA_ADD_OFFSET = −1000 from baseline 04.00)."""
        return 1000 if float(self.baseline) >= 4 else 0


ACQUISITIONS: tuple[Acquisition, ...] = (
    Acquisition("2023-01-10", "03.01", 101, 10.0, 0.0, (30, -24), False),
    Acquisition("2023-01-20", "05.11", 202, 30.0, 6.0, (36, -29), True),
    Acquisition("2023-01-30", "05.11", 303, 55.0, 10.0, (42, -34), False),
)

#: SCL classes used here.
SCL_NODATA, SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10
NOT_CLEAR = (SCL_NODATA, SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)
#: NDVI at and above which a clear pixel is labelled vegetation (the scene is arid steppe).
NDVI_VEGETATION = 0.12


# --------------------------------------------------------------------------------------------
# Grids and resampling helpers
# --------------------------------------------------------------------------------------------


def grid_shape(resolution: int) -> tuple[int, int]:
    """Native grid of a band: same origin, enough pixels to cover the 10 m footprint."""
    k = resolution // 10
    return -(-ROWS10 // k), -(-COLS10 // k)


def grid_transform(resolution: int) -> Affine:
    return Affine(resolution, 0.0, ORIGIN_X, 0.0, -resolution, ORIGIN_Y)


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean of k × k blocks; the last partial block is padded by repeating the edge."""
    rows, cols = -(-a.shape[0] // k) * k, -(-a.shape[1] // k) * k
    a = np.pad(a, ((0, rows - a.shape[0]), (0, cols - a.shape[1])), mode="edge")
    return a.reshape(rows // k, k, cols // k, k).mean(axis=(1, 3))


def block_max(a: np.ndarray, k: int) -> np.ndarray:
    """Maximum of k × k blocks (the shape must be a multiple of k)."""
    return a.reshape(a.shape[0] // k, k, a.shape[1] // k, k).max(axis=(1, 3))


def upsample(a: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour repeat of a coarse grid onto the 10 m grid, cropped to ``shape``."""
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)[: shape[0], : shape[1]]


def window(field: np.ndarray, resolution: int) -> np.ndarray:
    """The part of a padded 10 m field that the native grid of ``resolution`` covers."""
    rows, cols = (n * resolution // 10 for n in grid_shape(resolution))
    return field[PAD : PAD + rows, PAD : PAD + cols]


def to_native(field: np.ndarray, resolution: int) -> np.ndarray:
    """A padded 10 m field averaged onto the native grid of ``resolution``."""
    return block_mean(window(field, resolution), resolution // 10)


# --------------------------------------------------------------------------------------------
# Surface reflectance: the real bands and the synthetic ones
# --------------------------------------------------------------------------------------------


def source_dir() -> Path:
    """The xarray-spatial sample folder, found without importing xrspatial."""
    spec = importlib.util.find_spec("xrspatial")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("xarray-spatial is not installed: pip install --no-deps xarray-spatial")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "sentinel-2"


def read_source(folder: Path, name: str) -> np.ndarray:
    """One sample band as integer DN (= reflectance × 10000), checking its grid."""
    da = xr.open_dataarray(folder / f"{name}_band.nc", engine="scipy")
    transform = [float(v) for v in da.attrs["transform"]]
    if transform[2] != ORIGIN_X or transform[5] != ORIGIN_Y:
        raise SystemExit(f"{name}: unexpected origin {transform[2]}, {transform[5]}")
    values = da.values
    if not np.array_equal(values, np.round(values)):
        raise SystemExit(f"{name}: expected integer DN")
    return values.astype(np.int64)


def surface_dn(folder: Path) -> dict[str, np.ndarray]:
    """Clear-sky surface DN of the 12 bands on their native grids (int64)."""
    blue, green, red, nir = (read_source(folder, n) for n in ("blue", "green", "red", "nir"))
    swir1, swir2 = (read_source(folder, n) for n in ("swir1", "swir2"))
    rows20, cols20 = grid_shape(20)
    out = {
        "B02": blue,
        "B03": green,
        "B04": red,
        "B08": nir,
        "B11": swir1[:rows20, :cols20],
        "B12": swir2[:rows20, :cols20],
    }

    # Red edge and B8A at 20 m. On bare soil the spectrum is close to linear between red
    # (665 nm) and NIR (842 nm); green vegetation has a steep red edge (logistic, inflection
    # near 715 nm). The weight is blended between the two by NDVI.
    red20, nir20 = block_mean(red / 1e4, 2), block_mean(nir / 1e4, 2)
    swir20 = out["B11"] / 1e4
    ndvi = (nir20 - red20) / (nir20 + red20)
    veg = np.clip((ndvi - 0.15) / 0.45, 0.0, 1.0)

    def logistic(um: float) -> float:
        return 1.0 / (1.0 + np.exp(-(um - 0.715) / 0.012))

    for name in ("B05", "B06", "B07"):
        um = next(b.center_wavelength for b in BANDS if b.name == name)
        linear = (um - 0.665) / (0.842 - 0.665)
        steep = (logistic(um) - logistic(0.665)) / (logistic(0.842) - logistic(0.665))
        weight = (1 - veg) * linear + veg * steep
        out[name] = red20 + weight * (nir20 - red20)
    # B8A (865 nm): between NIR and SWIR1 by wavelength, a touch brighter over vegetation.
    out["B8A"] = (nir20 + (0.865 - 0.842) / (1.610 - 0.842) * (swir20 - nir20)) * (1 + 0.02 * veg)
    # B01 (443 nm) and B09 (945 nm) at 60 m from the real blue and NIR.
    out["B01"] = 0.93 * block_mean(blue / 1e4, 6) + 0.010
    out["B09"] = 0.85 * block_mean(nir / 1e4, 6)
    for name in ("B05", "B06", "B07", "B8A", "B01", "B09"):
        out[name] = np.round(out[name] * 1e4).astype(np.int64)
    for b in BANDS:
        assert out[b.name].shape == grid_shape(b.resolution), b.name
    return out


# --------------------------------------------------------------------------------------------
# Synthetic clouds
# --------------------------------------------------------------------------------------------


@dataclass
class Sky:
    """Per-item atmosphere on the padded 10 m domain, plus the item's SCL."""

    cloud: np.ndarray  # opacity of low cloud, 0..1
    cirrus: np.ndarray  # opacity of thin cirrus, 0..~0.25
    shadow: np.ndarray  # strength of the cloud shadow, 0..1
    texture: np.ndarray  # multiplicative brightness texture of the cloud tops
    nodata: dict[int, np.ndarray]  # per resolution: True where the swath has no data
    scl: np.ndarray  # 20 m scene classification (uint8)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Unit-variance fractal-like noise: three octaves of Gaussian-smoothed white noise."""
    out = np.zeros(shape)
    for sigma, weight in ((22.0, 1.0), (9.0, 0.45), (3.5, 0.2)):
        layer = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
        out += weight * layer / layer.std()
    return out / out.std()


def streaks(rng: np.random.Generator, shape: tuple[int, int], angle: float) -> np.ndarray:
    """Unit-variance elongated noise (cirrus streaks) at ``angle`` degrees."""
    size = int(np.hypot(*shape)) + 2
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), (5.0, 45.0), mode="wrap")
    field = ndimage.rotate(field, angle, reshape=False, order=1, mode="wrap")
    r0, c0 = (size - shape[0]) // 2, (size - shape[1]) // 2
    field = field[r0 : r0 + shape[0], c0 : c0 + shape[1]]
    return (field - field.mean()) / field.std()


def shift(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Move a padded field ``rows`` south and ``cols`` east (the margin absorbs the wrap)."""
    return np.roll(a, (rows, cols), axis=(0, 1))


def swath_nodata(resolution: int) -> np.ndarray:
    """Nodata east of a slanted swath edge (pixel centres), on the native grid."""
    rows, cols = grid_shape(resolution)
    x = ORIGIN_X + (np.arange(cols) + 0.5) * resolution
    y = ORIGIN_Y - (np.arange(rows) + 0.5) * resolution
    return x[None, :] > swath_edge_x(y)[:, None]


def swath_edge_x(y: np.ndarray | float) -> np.ndarray:
    """Easting of the swath edge at northing ``y``: 70 m inside at the top, 270 m at the bottom."""
    return ORIGIN_X + COLS10 * 10 - 70.0 - 0.1 * (ORIGIN_Y - np.asarray(y, dtype=float))


def classify(
    acq: Acquisition,
    cloud: np.ndarray,
    cirrus: np.ndarray,
    shadow: np.ndarray,
    ndvi: np.ndarray,
    nir: np.ndarray,
) -> np.ndarray:
    """20 m SCL from the padded 10 m fields: any cloud light in a 20 m pixel flags it."""
    cloud10, cirrus10, shadow10 = (window(f, 20) for f in (cloud, cirrus, shadow))
    scl = np.where(ndvi >= NDVI_VEGETATION, SCL_VEGETATION, SCL_NOT_VEGETATED).astype(np.uint8)
    scl[(ndvi < 0) & (nir < 0.10)] = SCL_WATER
    scl[block_max(shadow10, 2) > 0] = SCL_SHADOW
    scl[block_max(cirrus10, 2) > 0] = SCL_CIRRUS
    scl[block_max(cloud10, 2) > 0] = SCL_CLOUD_MEDIUM
    scl[block_mean(cloud10, 2) >= 0.5] = SCL_CLOUD_HIGH
    if acq.swath_edge:
        scl[swath_nodata(20)] = SCL_NODATA
    return scl


def cloud_fraction(scl: np.ndarray) -> float:
    valid = scl != SCL_NODATA
    return float(np.isin(scl[valid], (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)).mean())


def make_sky(acq: Acquisition, ndvi: np.ndarray, nir: np.ndarray, avoid: np.ndarray) -> Sky:
    """Clouds of one acquisition, their shadows and SCL.

    ``avoid`` (padded 10 m, 0..1) is where earlier-made items are not clear: clouds and their
    shadows are pushed away from it so that every pixel is clear in at least one item.
    """
    rng = np.random.default_rng(acq.seed)
    shape = PADDED_SHAPE
    dy, dx = acq.shadow_shift
    base = smooth_noise(rng, shape)
    texture = 1.0 + 0.08 * smooth_noise(rng, shape)
    # Penalise cloud where it, or its shadow, would land on an area not clear elsewhere
    # (dilated, then smoothed so that the cloud edges stay soft).
    blocked = np.maximum(avoid, shift(avoid, -dy, -dx))
    blocked = ndimage.gaussian_filter(ndimage.maximum_filter(blocked, size=9), 3.0)
    field = base - 3.0 * blocked

    cirrus = np.zeros(shape)
    if acq.cirrus_cover > 0:
        streak = streaks(rng, shape, angle=float(rng.uniform(20, 70)))
        inner = streak[PAD:-PAD, PAD:-PAD]
        level = np.quantile(inner, 1 - acq.cirrus_cover / 100)
        cirrus = 0.25 * np.clip((streak - level) / 1.2, 0.0, 1.0)

    def sky_for(level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cloud = np.clip((field - level) / 0.6, 0.0, 1.0)
        shadow = np.clip(1.5 * shift(cloud, dy, dx), 0.0, 1.0)
        scl = classify(acq, cloud, cirrus, shadow, ndvi, nir)
        return cloud, shadow, scl

    # Bisect the cloud threshold for the target cloud cover (monotonic in the threshold).
    low, high = float(field.min()), float(field.max())
    for _ in range(60):
        mid = 0.5 * (low + high)
        if cloud_fraction(sky_for(mid)[2]) * 100 > acq.cloud_cover:
            low = mid
        else:
            high = mid
    cloud, shadow, scl = sky_for(high)
    nodata = {
        res: swath_nodata(res) if acq.swath_edge else np.zeros(grid_shape(res), bool)
        for res in (10, 20, 60)
    }
    return Sky(cloud, cirrus, shadow, texture, nodata, scl)


def not_clear_10m(sky: Sky) -> np.ndarray:
    """Padded 10 m mask (float) of pixels that this item does not see clear."""
    out = np.zeros(PADDED_SHAPE)
    flagged = upsample(np.isin(sky.scl, NOT_CLEAR), 2, (ROWS10, COLS10))
    out[PAD : PAD + ROWS10, PAD : PAD + COLS10] = flagged | sky.nodata[10]
    return out


def observed_dn(band: BandInfo, surface: np.ndarray, sky: Sky, offset: int) -> np.ndarray:
    """Top-of-cloud-contaminated DN of one band on its native grid (uint16, 0 = nodata)."""
    res = band.resolution
    cloud, cirrus, shadow = (to_native(f, res) for f in (sky.cloud, sky.cirrus, sky.shadow))
    texture = to_native(sky.texture, res)
    refl = surface / 1e4 * (1 - band.shadow * shadow)
    refl = (1 - cloud) * refl + cloud * band.cloud * (0.8 + 0.25 * cloud) * texture
    refl = (1 - cirrus) * refl + cirrus * 0.8 * band.cloud
    touched = (cloud > 0) | (cirrus > 0) | (shadow > 0)
    dn = np.where(touched, np.round(refl * 1e4).astype(np.int64), surface)
    dn = np.clip(dn, 1, 65535 - offset) + offset
    dn[sky.nodata[res]] = 0
    return dn.astype(np.uint16)


# --------------------------------------------------------------------------------------------
# Writing: COGs and STAC
# --------------------------------------------------------------------------------------------


def write_cog(path: Path, data: np.ndarray, resolution: int) -> None:
    """Single-band COG: DEFLATE + horizontal predictor, nodata 0, no overviews."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = {10: 256, 20: 128, 60: 64}[resolution]
    profile = {
        "driver": "COG",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": f"EPSG:{EPSG}",
        "transform": grid_transform(resolution),
        "nodata": 0,
        "BLOCKSIZE": block,
        "COMPRESS": "DEFLATE",
        "PREDICTOR": "2",
        "OVERVIEWS": "NONE",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def lonlat_ring(xy: list[tuple[float, float]]) -> list[list[float]]:
    """A closed WGS84 ring from UTM corners, rounded to 1e-7 degree (~1 cm)."""
    to_wgs84 = Transformer.from_crs(EPSG, 4326, always_xy=True)
    ring = [[round(v, 7) for v in to_wgs84.transform(x, y)] for x, y in xy]
    return ring + [ring[0]]


def footprint(acq: Acquisition) -> dict:
    """GeoJSON polygon of the item's valid data (the swath edge cuts the east side)."""
    west, south, east, north = BOUNDS
    if acq.swath_edge:
        corners = [
            (west, north),
            (west, south),
            (float(swath_edge_x(south)), south),
            (float(swath_edge_x(north)), north),
        ]
    else:
        corners = [(west, north), (west, south), (east, south), (east, north)]
    return {"type": "Polygon", "coordinates": [lonlat_ring(corners)]}


def ring_bbox(geometry: dict) -> list[float]:
    lons = [p[0] for p in geometry["coordinates"][0]]
    lats = [p[1] for p in geometry["coordinates"][0]]
    return [min(lons), min(lats), max(lons), max(lats)]


def scl_stats(scl: np.ndarray) -> dict[str, float]:
    """Sen2Cor-style class percentages (of valid pixels, nodata of all pixels)."""
    valid = scl != SCL_NODATA

    def pct(*classes: int) -> float:
        return round(float(np.isin(scl[valid], classes).mean()) * 100, 2)

    return {
        "eo:cloud_cover": pct(SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS),
        "s2:nodata_pixel_percentage": round(float((~valid).mean()) * 100, 2),
        "s2:high_proba_clouds_percentage": pct(SCL_CLOUD_HIGH),
        "s2:medium_proba_clouds_percentage": pct(SCL_CLOUD_MEDIUM),
        "s2:thin_cirrus_percentage": pct(SCL_CIRRUS),
        "s2:cloud_shadow_percentage": pct(SCL_SHADOW),
        "s2:vegetation_percentage": pct(SCL_VEGETATION),
        "s2:not_vegetated_percentage": pct(SCL_NOT_VEGETATED),
        "s2:water_percentage": pct(SCL_WATER),
    }


def proj_fields(resolution: int) -> dict:
    rows, cols = grid_shape(resolution)
    return {
        "proj:code": f"EPSG:{EPSG}",
        "proj:shape": [rows, cols],
        "proj:transform": list(grid_transform(resolution))[:6],
    }


def reflectance_asset(band: BandInfo, acq: Acquisition) -> pystac.Asset:
    offset = -0.1 if acq.offset_dn else 0.0
    extra = {
        **proj_fields(band.resolution),
        "eo:bands": [
            {
                "name": band.name,
                "common_name": band.common_name,
                "center_wavelength": band.center_wavelength,
                "full_width_half_max": band.fwhm,
            }
        ],
        "raster:bands": [
            {
                "nodata": 0,
                "data_type": "uint16",
                "spatial_resolution": band.resolution,
                "scale": 0.0001,
                "offset": offset,
            }
        ],
        "demo:synthetic": not band.real,
    }
    if band.real:
        description = (
            f"Real Sentinel-2 L2A {band.name} surface reflectance (xarray-spatial sample); "
            "SYNTHETIC clouds, cirrus and cloud shadows are burnt into its cloudy pixels."
        )
    else:
        description = f"SYNTHETIC: {SYNTHESIS[band.name]}; with the synthetic clouds and shadows."
    return pystac.Asset(
        href=f"./{band.name}.tif",
        title=f"{band.name} {band.common_name} {band.resolution} m"
        + ("" if band.real else " (synthetic)"),
        description=description,
        media_type=MEDIA_TYPE,
        roles=["data"],
        extra_fields=extra,
    )


def scl_asset() -> pystac.Asset:
    extra = {
        **proj_fields(20),
        "raster:bands": [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 20}],
        "demo:synthetic": True,
    }
    return pystac.Asset(
        href="./SCL.tif",
        title="Scene classification map (SCL) 20 m (synthetic)",
        description=(
            "SYNTHETIC: 0 nodata, 3 cloud shadow, 4 vegetation (NDVI >= "
            f"{NDVI_VEGETATION}), 5 not vegetated, 6 water, 8 cloud medium probability, "
            "9 cloud high probability, 10 thin cirrus; made with the synthetic clouds."
        ),
        media_type=MEDIA_TYPE,
        roles=["data"],
        extra_fields=extra,
    )


def make_item(acq: Acquisition, stats: dict[str, float]) -> pystac.Item:
    geometry = footprint(acq)
    when = datetime.fromisoformat(f"{acq.date}T14:30:00").replace(tzinfo=UTC)
    item = pystac.Item(
        id=acq.item_id,
        geometry=geometry,
        bbox=ring_bbox(geometry),
        datetime=when,
        properties={
            "platform": "sentinel-2a/b",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "gsd": 10,
            **stats,
            "proj:code": f"EPSG:{EPSG}",
            # proj:epsg (projection < 2.0) as well, for readers such as stackstac 0.5.
            "proj:epsg": EPSG,
            "s2:processing_baseline": acq.baseline,
            "s2:product_type": "S2MSI2A",
            "demo:synthetic": SYNTHETIC_NOTE
            + " The date is synthetic; the real scene date and MGRS tile are unknown.",
        },
        stac_extensions=list(EXTENSIONS),
    )
    for band in BANDS:
        item.add_asset(band.name, reflectance_asset(band, acq))
    item.add_asset("SCL", scl_asset())
    return item


def make_collection(items: list[pystac.Item]) -> pystac.Collection:
    bboxes = np.array([i.bbox for i in items])
    bbox = [*bboxes[:, :2].min(axis=0).tolist(), *bboxes[:, 2:].max(axis=0).tolist()]
    dates = sorted(i.datetime for i in items if i.datetime is not None)
    collection = pystac.Collection(
        id=COLLECTION_ID,
        title="Sentinel-2 L2A demo (partly synthetic)",
        description=(
            "Three acquisitions of a 2 km × 3 km Sentinel-2 L2A scene in Patagonia "
            "(EPSG:32719), native 10/20/60 m COGs with SCL, for demos and tests. "
            + SYNTHETIC_NOTE
            + " Contains modified Copernicus Sentinel data."
        ),
        extent=pystac.Extent(
            pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[dates[0], dates[-1]]])
        ),
        license="other",
        keywords=["sentinel-2", "l2a", "demo", "synthetic"],
        providers=[
            pystac.Provider(
                "ESA", roles=[pystac.ProviderRole.PRODUCER], url="https://sentinel.esa.int"
            ),
            pystac.Provider(
                "xarray-spatial (sample data, MIT)",
                roles=[pystac.ProviderRole.HOST],
                url=XRSPATIAL_URL,
            ),
            pystac.Provider(
                "s2sr examples/make_demo.py (synthetic bands and clouds)",
                roles=[pystac.ProviderRole.PROCESSOR],
            ),
        ],
        summaries=pystac.Summaries(
            {
                "platform": ["sentinel-2a/b"],
                "constellation": ["sentinel-2"],
                "instruments": ["msi"],
                "gsd": [10, 20, 60],
                "s2:processing_baseline": sorted({a.baseline for a in ACQUISITIONS}),
            }
        ),
    )
    collection.add_link(
        pystac.Link(
            "license",
            SENTINEL_LICENCE,
            "application/pdf",
            "Legal notice on the use of Copernicus Sentinel data",
        )
    )
    collection.add_link(pystac.Link("via", XRSPATIAL_URL, "text/html", "Source of the real bands"))
    collection.add_items(items)
    return collection


def write_aoi() -> None:
    """``examples/demo.geojson``: the footprint inset by AOI_INSET metres, in WGS84."""
    west, south, east, north = BOUNDS
    d = AOI_INSET
    ring = lonlat_ring(
        [(west + d, north - d), (west + d, south + d), (east - d, south + d), (east - d, north - d)]
    )
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {
                    "name": "s2sr-demo-aoi",
                    "description": f"Demo scene footprint (EPSG:{EPSG}) inset by {d:g} m",
                },
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }
    AOI_PATH.write_text(json.dumps(doc, indent=2) + "\n")


def write_preview(folder: Path, item_id: str, rgb: list[np.ndarray], offset: int) -> None:
    """A true-colour PNG (reflectance 0..0.35 stretched to 0..255) for eyeballing."""
    folder.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)
    bands = [np.clip((b.astype(float) - offset) / 1e4 / 0.35 * 255, 0, 255) for b in rgb]
    data = np.stack([np.where(b == 0, 0, v) for b, v in zip(rgb, bands, strict=True)])
    profile = {
        "driver": "PNG",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": 3,
        "dtype": "uint8",
    }
    with rasterio.open(folder / f"{item_id}.png", "w", **profile) as dst:
        dst.write(data.astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=None, help="xarray-spatial sample folder")
    parser.add_argument("--preview", type=Path, default=None, help="write true-colour PNGs here")
    args = parser.parse_args()

    surface = surface_dn(args.source or source_dir())
    red20, nir20 = (block_mean(surface[b] / 1e4, 2) for b in ("B04", "B08"))
    ndvi20 = (nir20 - red20) / (nir20 + red20)

    # Make the cloudiest item first; each next one avoids what the earlier ones cannot see.
    skies: dict[str, Sky] = {}
    avoid = np.zeros(PADDED_SHAPE)
    for n, acq in enumerate(sorted(ACQUISITIONS, key=lambda a: -a.cloud_cover)):
        sky = make_sky(acq, ndvi20, nir20, avoid)
        skies[acq.item_id] = sky
        avoid = not_clear_10m(sky) if n == 0 else avoid * not_clear_10m(sky)

    if OUT_DIR.exists():
        shutil.rmtree(OUT_DIR)
    items = []
    for acq in ACQUISITIONS:
        sky = skies[acq.item_id]
        item_dir = OUT_DIR / COLLECTION_ID / acq.item_id
        observed = {}
        for band in BANDS:
            observed[band.name] = observed_dn(band, surface[band.name], sky, acq.offset_dn)
            write_cog(item_dir / f"{band.name}.tif", observed[band.name], band.resolution)
        write_cog(item_dir / "SCL.tif", sky.scl, 20)
        items.append(make_item(acq, scl_stats(sky.scl)))
        if args.preview:
            rgb = [observed[b] for b in ("B04", "B03", "B02")]
            write_preview(args.preview, acq.item_id, rgb, acq.offset_dn)

    catalog = pystac.Catalog(
        id="s2sr-demo",
        title="s2sr demo catalog",
        description="Static, self-contained STAC catalog of the s2sr demo scene. " + SYNTHETIC_NOTE,
    )
    catalog.add_child(make_collection(items))
    catalog.normalize_hrefs(str(OUT_DIR))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    write_aoi()

    never = int(avoid[PAD : PAD + ROWS10, PAD : PAD + COLS10].sum())
    for item in items:
        print(
            f"{item.id}: cloud cover {item.properties['eo:cloud_cover']:.2f} %, "
            f"shadow {item.properties['s2:cloud_shadow_percentage']:.2f} %, "
            f"nodata {item.properties['s2:nodata_pixel_percentage']:.2f} %"
        )
    print(f"10 m pixels never clear (SCL): {never} of {ROWS10 * COLS10}")


if __name__ == "__main__":
    main()
