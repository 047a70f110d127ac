"""The product's variables, declared once: how each is stored (integer type, fill value, scale),
what CF attributes and STAC raster facts describe it, how its overviews are reduced and how the
tiles' summaries of it combine into the product's summary.

The store, the overviews, the STAC files, the size estimate and the product's summary of the
tiles' all iterate over :data:`VARIABLES`, so that a new quality layer is one entry of
:data:`QUALITY_LAYERS` here (its computation lives in :mod:`pipeline.quality.layers`, which
also defines the flags' bits). The root attributes that describe the grid are here too: the
store writes them and every reader rebuilds the grid from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyproj import CRS
from pystac.extensions.raster import DataType, RasterBand

from pipeline.geo.bands import RESOLUTION, RGB_BANDS
from pipeline.geo.grid import OutputGrid
from pipeline.product.pyramid import AVERAGE, BITWISE_OR
from pipeline.quality.layers import (
    INCONSISTENT,
    MEAN_CONSISTENCY,
    MEAN_SPECTRAL_ANGLE,
    RISK_FILL,
    RISK_FRACTION,
    SPECTRAL_DISTORTION,
    UNCERTAIN,
    risk_rule,
)

#: Reflectance is stored as round(reflectance / SCALE_FACTOR) in uint16, 0 meaning no data.
SCALE_FACTOR = 1e-4

#: How a tile's statistic of a variable is weighted in the product's summary: by all the
#: tile's pixels, or by its pixels with data (all pixels × the reflectance's valid fraction).
PIXELS, WITH_DATA = "pixels", "with_data"
#: STAC asset roles: the reflectance is the product's data (the Zarr asset itself); each other
#: variable is an asset of its own.
DATA, QUALITY, METADATA = "data", "quality", "metadata"


@dataclass(frozen=True)
class Axis:
    """A leading axis of some variables, stored as a coordinate of string labels."""

    name: str
    long_name: str
    #: The labels, or None for the product's bands (chosen per run).
    labels: tuple[str, ...] | None = None

    def labels_for(self, bands: tuple[str, ...]) -> tuple[str, ...]:
        return self.labels if self.labels is not None else bands


BAND = Axis("band", "Sentinel-2 band")
RGB_BAND = Axis("rgb_band", "band of the RGB model", RGB_BANDS)
AXES: tuple[Axis, ...] = (BAND, RGB_BAND)


@dataclass(frozen=True)
class Summary:
    """A tile summary's statistic of a variable (``key``), and the pixels it is a mean over,
    which weigh it when the tiles' summaries combine (see
    :class:`pipeline.product.stac.QualitySummary`)."""

    key: str
    over: str  # PIXELS or WITH_DATA


@dataclass(frozen=True)
class Variable:
    """One data array of the product on the (y, x) grid, optionally with a leading axis."""

    name: str
    #: Stored integer type and fill value; with ``scale``, floats are stored in its units.
    dtype: str
    fill: int
    scale: float | None
    #: CF attributes besides the scaling, fill value and grid mapping.
    attributes: dict[str, Any]
    summary: Summary
    axis: Axis | None = None
    #: Whether the fill value means "no data" (CF ``_FillValue``, STAC ``nodata``); the clear
    #: count's 0 is a real value, its fill only the storage's default.
    nodata: bool = True
    #: How overviews reduce 2 × 2 stored integers (see :func:`pipeline.product.pyramid.reduce_2x2`).
    resampling: str = AVERAGE
    role: str = QUALITY
    #: Only in products whose RGB model draws several samples.
    optional: bool = False

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    def shape(self, bands: tuple[str, ...], height: int, width: int) -> tuple[int, ...]:
        """The array's shape on a grid of ``height`` × ``width`` pixels."""
        return (*self.depth(bands), height, width)

    def depth(self, bands: tuple[str, ...]) -> tuple[int, ...]:
        """The leading dimension, if any: one entry per label of the axis."""
        return () if self.axis is None else (len(self.axis.labels_for(bands)),)

    def count(self, bands: tuple[str, ...]) -> int:
        """Values per pixel: one per label of the axis, or one."""
        return math.prod(self.depth(bands))

    def dimensions(self) -> list[str]:
        return [*([] if self.axis is None else [self.axis.name]), "y", "x"]

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Values (float with NaN for no data when scaled) → the stored integers."""
        if self.scale is not None:
            return encode_scaled(values, self.scale, self.fill)
        limits = np.iinfo(self.dtype)
        return np.clip(values, limits.min, limits.max).astype(self.dtype)

    def cf_attributes(self) -> dict[str, Any]:
        """The CF attributes by which readers name and decode the stored integers."""
        scaling = {} if self.scale is None else {"scale_factor": self.scale, "add_offset": 0.0}
        fill = {"_FillValue": self.fill} if self.nodata else {}
        return {**self.attributes, **scaling, **fill}

    def raster_band(self) -> RasterBand:
        """The STAC raster extension's description of one band of the variable."""
        return RasterBand.create(
            nodata=self.fill if self.nodata else None,
            data_type=DataType(self.dtype),
            scale=self.scale,
            offset=0.0 if self.scale else None,
            spatial_resolution=RESOLUTION,
            unit=self.attributes.get("units"),
        )


REFLECTANCE = Variable(
    "reflectance",
    "uint16",
    0,
    SCALE_FACTOR,
    {
        "long_name": "surface reflectance (Sentinel-2 L2A super-resolved to 2.5 m)",
        "standard_name": "surface_bidirectional_reflectance",
        "units": "1",
    },
    Summary("valid_fraction", PIXELS),
    axis=BAND,
    role=DATA,
)
CLEAR_COUNT = Variable(
    "clear_count",
    "uint8",
    0,
    None,
    {"long_name": "number of clear observations in the composite"},
    Summary("mean_clear_count", PIXELS),
    nodata=False,
    role=METADATA,
)
#: The layers of :class:`pipeline.quality.layers.QualityLayers`, in every product
#: (docs/output-format.md); their summaries are keyed as it names them.
QUALITY_LAYERS: tuple[Variable, ...] = (
    Variable(
        "consistency",
        "uint16",
        65535,
        SCALE_FACTOR,
        {
            "long_name": "mean absolute difference between the input and the result averaged "
            "back over each band's native pixel (reflectance)",
            "units": "1",
        },
        Summary(MEAN_CONSISTENCY, WITH_DATA),
    ),
    Variable(
        "spectral_angle",
        "uint16",
        65535,
        0.01,
        {
            "long_name": "spectral angle between the input and the result averaged back over "
            "each band's native pixel",
            "units": "degree",
        },
        Summary(MEAN_SPECTRAL_ANGLE, WITH_DATA),
    ),
    Variable(
        "hallucination_risk",
        "uint8",
        RISK_FILL,
        None,
        {
            "long_name": "hallucination risk flags (0: no reason for concern)",
            "flag_masks": [INCONSISTENT, SPECTRAL_DISTORTION, UNCERTAIN],
            "flag_meanings": "inconsistent_reflectance spectral_distortion uncertain_rgb",
            **{f"rule_{k}": v for k, v in risk_rule().items()},
        },
        Summary(RISK_FRACTION, WITH_DATA),
        resampling=BITWISE_OR,
    ),
)
#: The per-pixel spread of the RGB model's samples, written when it draws more than one; a
#: standard deviation, for which 0 is a real value, so its fill is 65535.
UNCERTAINTY = Variable(
    "rgb_uncertainty",
    "uint16",
    65535,
    SCALE_FACTOR,
    {"long_name": "standard deviation of the RGB model's samples (reflectance)", "units": "1"},
    Summary("mean_rgb_uncertainty", WITH_DATA),
    axis=RGB_BAND,
    optional=True,
)

#: Every variable, in the order of the STAC assets and of the product's summary.
VARIABLES: tuple[Variable, ...] = (REFLECTANCE, CLEAR_COUNT, *QUALITY_LAYERS, UNCERTAINTY)
BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}
#: The variables whose overviews are not averaged, and their reduction (a root attribute).
RESAMPLING: dict[str, str] = {v.name: v.resampling for v in VARIABLES if v.resampling != AVERAGE}


def stored(uncertainty: bool) -> tuple[Variable, ...]:
    """The variables of a product, with the RGB model's spread or without."""
    return tuple(v for v in VARIABLES if uncertainty or not v.optional)


def axes(variables: tuple[Variable, ...]) -> list[Axis]:
    """The leading axes that ``variables`` use."""
    return [axis for axis in AXES if any(v.axis == axis for v in variables)]


def bytes_per_pixel(bands: tuple[str, ...], uncertainty: bool = False) -> int:
    """Uncompressed bytes per 2.5 m pixel of a product's variables (see :func:`stored`)."""
    return sum(v.itemsize * v.count(bands) for v in stored(uncertainty))


def encode_scaled(values: np.ndarray, scale: float, fill: int) -> np.ndarray:
    """Float values → uint16 in units of ``scale``; NaN → ``fill`` (0 or 65535), which no
    value takes: a fill of 0 clips the values to [1, 65535], one of 65535 to [0, 65534]."""
    scaled = np.rint(values * np.float32(1 / scale))
    low, high = (1, 65535) if fill == 0 else (0, 65534)
    np.clip(scaled, low, high, out=scaled)
    scaled[np.isnan(values)] = fill
    return scaled.astype(np.uint16)


def grid_attrs(grid: OutputGrid, bands: tuple[str, ...]) -> dict[str, Any]:
    """The root attributes that describe the grid and bands; they must match for a run to
    resume into an existing product."""
    return {
        "grid_crs_wkt": grid.crs.to_wkt(),
        "grid_transform": list(grid.transform),
        "grid_shape": [grid.height, grid.width],
        "grid_tile_size": grid.tile_size,
        "bands": list(bands),
    }


def product_grid(attrs: Mapping[str, Any]) -> OutputGrid:
    """The output grid recorded in a product's root attributes (by :func:`grid_attrs`)."""
    a, _, x0, _, _, y0 = attrs["grid_transform"]
    height, width = attrs["grid_shape"]
    return OutputGrid(
        CRS.from_wkt(attrs["grid_crs_wkt"]), x0, y0, width, height, attrs["grid_tile_size"]
    )
