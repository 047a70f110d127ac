"""Clear-sky compositing: SCL masking and a per-pixel temporal median of clear observations.

:func:`clear_sky` is the one way from scenes and a box to the composite: the region run's
tiles, a product's read-back, the training sources and the benchmarks all go through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pystac
import xarray as xr

from pipeline.geo.bands import (
    REFLECTANCE_BANDS,
    SCL_CIRRUS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_SHADOW,
    SCL_NO_DATA,
    SCL_SATURATED,
    SCL_SNOW,
)
from pipeline.inputs.load import Scene, load_reflectance, load_scl
from pipeline.inputs.signing import Signer

#: SCL classes that never count as a clear observation.
NOT_CLEAR = (
    SCL_NO_DATA,
    SCL_SATURATED,
    SCL_CLOUD_SHADOW,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_HIGH,
    SCL_CIRRUS,
)


def clear_mask(scl: xr.DataArray, mask_snow: bool = True) -> xr.DataArray:
    """True where the scene classification marks a clear view of the surface."""
    masked = NOT_CLEAR + ((SCL_SNOW,) if mask_snow else ())
    return scl.notnull() & ~scl.isin(masked)


def median_composite(
    reflectance: xr.DataArray, scl: xr.DataArray, mask_snow: bool = True
) -> tuple[xr.DataArray, xr.DataArray]:
    """Temporal median of clear observations, and the number of them, per pixel.

    ``reflectance`` is (time, band, y, x), ``scl`` (time, y, x). An observation counts as clear
    when SCL says so and every band has data; pixels never seen clear are NaN with count 0.
    """
    clear = clear_mask(scl, mask_snow) & reflectance.notnull().all("band")
    clear_stack = reflectance.where(clear).chunk({"time": -1})
    median = xr.apply_ufunc(
        _nanmedian_time,
        clear_stack,
        input_core_dims=[["time"]],
        dask="parallelized",
        output_dtypes=[np.float32],
    )
    count = clear.sum("time").clip(max=255).astype("uint8")  # uint8 on disk: cap, never wrap
    return median.rename("reflectance"), count.rename("clear_count")


def clear_sky(
    scenes: Sequence[pystac.Item | Scene],
    epsg: int,
    bounds: tuple[float, float, float, float],
    mask_snow: bool = True,
    bands: Sequence[str] = REFLECTANCE_BANDS,
    chunksize: int = 1024,
    timeout: float | None = None,
    cached: bool = True,
    signer: Signer | None = None,
) -> tuple[xr.DataArray, xr.DataArray]:
    """The lazy clear-sky composite of ``bands`` at 10 m over ``bounds`` (in EPSG:``epsg``)
    and its clear count, from ``scenes`` read in square chunks of ``chunksize`` pixels
    (``timeout``, ``cached``, ``signer``: see :func:`pipeline.inputs.load.load_reflectance`)."""
    reflectance = load_reflectance(scenes, bands, epsg, bounds, chunksize, timeout, cached, signer)
    scl = load_scl(scenes, epsg, bounds, chunksize, timeout, cached, signer)
    return median_composite(reflectance, scl, mask_snow)


def _nanmedian_time(values: np.ndarray) -> np.ndarray:
    """NaN-median over the last axis without the all-NaN RuntimeWarning."""
    out = np.full(values.shape[:-1], np.nan, dtype=np.float32)
    seen = ~np.all(np.isnan(values), axis=-1)
    if seen.any():
        out[seen] = np.nanmedian(values[seen], axis=-1)
    return out
