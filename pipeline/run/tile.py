"""One tile's work, built and run on the worker in two steps.

:func:`prepare_tile` reads the tile's scenes (with the models' halo around it) and makes the
clear-sky composite: CPU work. :func:`complete_tile` runs the models over it block by block
through the halo wrapper, computes the quality layers and writes the tile: the part that
claims the GPU on a GPU cluster. Each step computes its own small Dask graph on the worker,
so the scheduler sees two tasks per tile: the reads with a few threads of their own (they
mostly wait on object storage), the models with the synchronous scheduler on the task's
thread (one GPU runs one block at a time).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from odc.geo.geobox import GeoBox

from pipeline.geo.bands import REFLECTANCE_BANDS, SCALE
from pipeline.geo.grid import OutputGrid, Tile, lattice_origin
from pipeline.geo.resample import upsample_nearest
from pipeline.inputs.composite import clear_sky
from pipeline.inputs.load import Scene
from pipeline.inputs.signing import Signer
from pipeline.models.superresolve import SuperResolver
from pipeline.network import timeout
from pipeline.product.schema import CLEAR_COUNT, REFLECTANCE, UNCERTAINTY
from pipeline.product.store import ProductStore
from pipeline.quality.layers import QualityLayers, judged
from pipeline.redact import redact
from pipeline.run.retry import may_pass

#: Reads of one tile at once (assets × scenes).
READ_THREADS = 8
#: Held while a tile's models run on a worker's GPU: the model tasks of two tiles may run on
#: one GPU worker at once (see :data:`pipeline.run.dispatch.MODEL_SHARE`), but only one of
#: them uses the GPU at a time, while the other composes its quality layers or writes.
_DEVICE = threading.Lock()


@dataclass(frozen=True)
class TileJob:
    """What every tile of a run shares: the product, its grid, the models and settings."""

    store: ProductStore
    grid: OutputGrid
    bands: tuple[str, ...]
    #: The models as the runner checked them, and the devices they run on (see
    #: :meth:`SuperResolver.on`).
    resolver: SuperResolver
    devices: tuple[str | None, str | None]
    mask_snow: bool
    block_size: int
    #: Whether each tile writes its overview level 1 too (see
    #: :func:`pipeline.product.overviews.level_one_with_tiles`).
    level_one: bool = False
    #: Whether the models of one worker process run one tile at a time (on a GPU).
    exclusive: bool = False
    #: How long a read may wait for a server: the runner's setting, wherever the job runs.
    timeout: float = field(default_factory=timeout)
    #: What signs the asset hrefs just before each read, when the catalog needs it.
    signer: Signer | None = None

    def input_box(self, tile: Tile) -> GeoBox:
        """The 10 m pixels that the models read for the tile: its own and their halo."""
        return self.grid.input_box(tile, self.resolver.halo)


@dataclass(frozen=True)
class TileInput:
    """A tile's composite, as the models read it."""

    composite: np.ndarray  # float32 (12, y, x) at 10 m with the halo; NaN where never clear
    count: np.ndarray  # uint8 (y, x) clear observations at 10 m, inside the halo
    item_ids: list[str]


def prepare_tile(job: TileJob, tile: Tile, scenes: list[Scene]) -> TileInput:
    """Read the scenes over the tile and its halo and composite them."""
    shape = tuple(job.input_box(tile).shape)
    if scenes:
        composite, count = _read(job, tile, scenes, max(shape))
    else:
        composite = np.full((len(REFLECTANCE_BANDS), *shape), np.nan, np.float32)
        count = np.zeros(shape, np.uint8)
    halo = job.resolver.halo
    inside = (slice(halo, -halo),) * 2
    return TileInput(composite, count[inside], [s.id for s in scenes])


class ReadError(OSError):
    """A tile's scenes could not be read: an asset that answers an error, or none, or is cut
    short. It may pass on another try (see :mod:`pipeline.run.retry`)."""


#: Keys of the tiles whose reads failed in this process: GDAL remembers a failed request for
#: the life of the process, so that their next reads here must bypass its memory.
_FAILED_HERE: set[str] = set()


def _read(
    job: TileJob, tile: Tile, scenes: list[Scene], chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """The composite and clear count over the tile and its halo; a read error is a
    :class:`ReadError` whose message names the asset by its URL without secrets (it reaches
    the runner and the worker's log), never no data."""
    cached = tile.key not in _FAILED_HERE
    lazy = clear_sky(
        scenes,
        job.grid.crs.to_epsg(),
        job.grid.input_bounds(tile, job.resolver.halo),
        job.mask_snow,
        chunksize=chunk,
        timeout=job.timeout,
        cached=cached,
        signer=job.signer,
    )
    try:
        composite, count = dask.compute(
            lazy[0].data, lazy[1].data, scheduler="threads", num_workers=READ_THREADS
        )
    except Exception as err:
        if not may_pass(err):
            raise
        failure = redact(str(err).strip().splitlines()[0])
    else:
        _FAILED_HERE.discard(tile.key)
        return composite, count
    _FAILED_HERE.add(tile.key)
    # raised outside the handler: the error it replaces (and its URL) does not travel with it
    raise ReadError(failure)


def complete_tile(job: TileJob, tile: Tile, prepared: TileInput) -> dict:
    """Super-resolve the composite, compute the quality layers, write the tile; return its
    summary."""
    if not (prepared.count.any() or np.isfinite(prepared.composite).any()):
        # no scene, or never clear: every array keeps its fill value, only the marker is written
        summary = _summary(prepared.item_ids, 0.0, prepared.count)
        summary |= dict.fromkeys(QualityLayers.SUMMARY_KEYS)  # null, never left out
        job.store.mark_done(job.grid, tile, summary, job.level_one)
        return summary
    resolver = _on_devices(job.resolver, job.devices)
    halo = resolver.halo
    offset = lattice_origin(job.input_box(tile))
    crop = halo * SCALE
    whole = da.from_array(prepared.composite, chunks=-1)
    lazy = resolver.apply(whole, job.block_size, offset, cropped=True)
    with _DEVICE if job.exclusive else contextlib.nullcontext():
        high = lazy[:, crop:-crop, crop:-crop].compute(scheduler="sync")
    band_index = [REFLECTANCE_BANDS.index(b) for b in job.bands]
    composite = prepared.composite[:, halo:-halo, halo:-halo]
    reflectance, uncertainty, layers = resolver.split(high)
    return write_tile(
        job.store,
        job.grid,
        tile,
        job.bands,
        prepared.item_ids,
        reflectance[band_index],
        prepared.count,
        composite,
        layers,
        uncertainty,
        job.level_one,
    )


@functools.lru_cache(maxsize=4)
def _on_devices(resolver: SuperResolver, devices: tuple[str | None, str | None]) -> SuperResolver:
    """The worker's models on their devices, built once per process."""
    return resolver.on(*devices)


def write_tile(
    store: ProductStore,
    grid: OutputGrid,
    tile: Tile,
    bands: tuple[str, ...],
    item_ids: list[str],
    reflectance: np.ndarray,
    count: np.ndarray,
    composite: np.ndarray,
    layers: np.ndarray,
    uncertainty: np.ndarray | None = None,
    level_one: bool = False,
) -> dict:
    """Compute the tile's quality layers and summary, write everything (with overview level
    1 if ``level_one``), return the summary.

    ``composite`` is the tile's 12-band 10 m input without the halo, which the quality layers
    compare the result with; ``layers`` the consistency and spectral angle that judged the
    models' own output, block by block (see :class:`~pipeline.models.superresolve.SuperResolver`).
    """
    valid = np.isfinite(reflectance).all(axis=0)
    consistency, angle = layers[:, ::SCALE, ::SCALE]  # judged at 10 m
    quality = judged(consistency, angle, composite, uncertainty)
    summary = {**_summary(item_ids, float(valid.mean()), count), **quality.summary()}
    if uncertainty is not None and np.isfinite(uncertainty).any():
        summary[UNCERTAINTY.summary.key] = round(float(np.nanmean(uncertainty)), 6)
    store.write_tile(
        grid,
        tile,
        reflectance,
        upsample_nearest(count, SCALE),
        summary,
        uncertainty,
        quality.on_output_grid(),
        level_one,
    )
    return summary


def _summary(item_ids: list[str], valid_fraction: float, count: np.ndarray) -> dict:
    """The part of a tile's summary that does not depend on its quality layers."""
    return {
        "items": item_ids,
        REFLECTANCE.summary.key: round(valid_fraction, 6),
        CLEAR_COUNT.summary.key: round(float(count.mean()), 4),
    }
