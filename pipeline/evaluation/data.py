"""The images a benchmark scores: clear 10 m patches of all 12 bands, and which bands are real.

They are cut from the clear-sky composite of a STAC AOI (the pipeline's own search, loader
and compositing, on the 60 m lattice) or from local 12-band GeoTIFFs. Every patch is a whole
number of 240 m cells starting on the 60 m lattice, so that it degrades ×4 onto whole 60 m
pixels and every band's native grid can be recovered from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pystac
import rasterio
from rasterio.errors import RasterioIOError
from shapely.geometry.base import BaseGeometry

from pipeline.errors import UserError, reason
from pipeline.geo.bands import BANDS, REFLECTANCE_BANDS, SCALE
from pipeline.geo.grid import LATTICE, LATTICE_PIXELS
from pipeline.inputs.catalog import search
from pipeline.inputs.load import asset_key
from pipeline.inputs.memory import default_scale, sentinel_composite
from pipeline.protocol.split import clear_part, clear_tiles, held_out_cut

#: A patch side must be a multiple of this (10 m pixels): whole 60 m pixels after ×4.
PATCH_MULTIPLE = SCALE * LATTICE_PIXELS
#: The STAC asset flag of synthetic bands (the demo catalog sets it).
SYNTHETIC_FLAG = "demo:synthetic"


@dataclass(frozen=True)
class Patch:
    """One evaluation image: 12 bands of 10 m reflectance, (12, P, P), no NaN."""

    name: str
    origin: tuple[int, int]  # (row, column) of its top-left pixel in its scene, 10 m pixels
    bands: np.ndarray


@dataclass(frozen=True)
class EvaluationSet:
    """The patches of every scene, and 'real' or 'synthetic' per band."""

    patches: list[Patch]
    labels: dict[str, str]
    source: str


def check_patch(patch: int) -> None:
    """Refuse a patch side the Wald protocol of both stages cannot use."""
    if patch < PATCH_MULTIPLE or patch % PATCH_MULTIPLE:
        raise UserError(f"--patch must be a positive multiple of {PATCH_MULTIPLE}, got {patch}")


def stac_patches(
    stac: str,
    aoi: BaseGeometry,
    start: date,
    end: date,
    *,
    patch: int,
    held_out: float,
    collection: str | None = None,
    max_cloud: float = 100.0,
    label: str | None = None,
) -> EvaluationSet:
    """Patches of the AOI's clear-sky composite east of the held-out cut (all of it at 0);
    ``label`` names the catalog in the description (default: ``stac`` itself)."""
    items = search(stac, aoi, start, end, collection, max_cloud).items
    composite = sentinel_composite(
        stac,
        aoi,
        start,
        end,
        REFLECTANCE_BANDS,
        collection=collection,
        max_cloud=max_cloud,
        lattice=LATTICE,
    )
    patches = cut_patches(composite.image, patch, held_out, "aoi")
    if not patches:
        raise UserError(
            f"no clear {patch} px patch in the composite's "
            f"{_part(held_out)} ({composite.image.shape[1]} × "
            f"{composite.image.shape[2]} px at 10 m); use a smaller --patch, a "
            "larger AOI or more dates"
        )
    return EvaluationSet(
        patches,
        band_labels(items),
        f"{label or stac} over the AOI, {start} to {end}: {len(items)} "
        f"items; scored: the {_part(held_out)}",
    )


def scene_patches(paths: Sequence[str], *, patch: int, held_out: float) -> EvaluationSet:
    """Patches of local GeoTIFFs that hold the 12 bands at 10 m in product order (20 m and
    60 m bands repeated over 2 × 2 and 6 × 6 pixels from the file's top-left corner, the way
    the pipeline loads them). Their bands are taken as real."""
    patches = []
    for path in paths:
        patches += cut_patches(read_scene(path), patch, held_out, path)
    if not patches:
        raise UserError(
            f"no clear {patch} px patch in the {_part(held_out)} of the scenes; "
            "use a smaller --patch"
        )
    return EvaluationSet(
        patches,
        dict.fromkeys(REFLECTANCE_BANDS, "real"),
        f"{len(paths)} local scene(s); scored: the {_part(held_out)}",
    )


def read_scene(path: str) -> np.ndarray:
    """float32 (12, H, W) reflectance of a 12-band GeoTIFF; no-data as NaN; H and W cropped to
    whole 60 m cells."""
    try:
        with rasterio.open(path) as ds:
            if ds.count != len(REFLECTANCE_BANDS):
                raise UserError(
                    f"{path} has {ds.count} band(s), not the 12 L2A bands "
                    f"{' '.join(REFLECTANCE_BANDS)}"
                )
            data = ds.read(masked=True)
            scale = default_scale(ds.dtypes[0])
    except RasterioIOError as err:
        raise UserError(f"cannot read scene {path}: {reason(err)}") from None
    image = np.ma.filled(data.astype(np.float32) * np.float32(scale), np.nan)
    rows, cols = (n // LATTICE_PIXELS * LATTICE_PIXELS for n in image.shape[1:])
    return image[:, :rows, :cols]


def cut_patches(image: np.ndarray, patch: int, held_out: float, scene: str) -> list[Patch]:
    """Non-overlapping, wholly clear ``patch`` × ``patch`` windows on the 60 m lattice, in
    raster order, of the columns east of the held-out cut of ``image`` (12, H, W)."""
    part = clear_part(image, held_out_cut(image.shape[2], held_out) if held_out else 0)
    if part is None:
        return []
    return [
        Patch(f"{scene} r{y} c{x}", (y, x), image[:, y : y + patch, x : x + patch])
        for y, x in clear_tiles(part.clear, patch, (part.top, part.bottom), (part.left, part.right))
    ]


def held_out_strip(image: np.ndarray, held_out: float) -> tuple[Patch, int]:
    """The held-out part of ``image`` (12, H, W) as one block, and the cut: from the first
    clear row and column on the 60 m lattice, as many whole ``PATCH_MULTIPLE`` cells as the
    clear pixels reach; the block must be wholly clear."""
    cut = held_out_cut(image.shape[2], held_out)
    part = clear_part(image, cut)
    if part is None:
        raise UserError("the held-out strip has no clear pixel")
    top, left = part.top, part.left
    height = (part.bottom - top) // PATCH_MULTIPLE * PATCH_MULTIPLE
    width = (part.right - left) // PATCH_MULTIPLE * PATCH_MULTIPLE
    strip = image[:, top : top + height, left : left + width]
    if not height or not width or not np.isfinite(strip).all():
        raise UserError(f"no clear {PATCH_MULTIPLE}-pixel-multiple block east of column {cut}")
    return Patch(f"held-out strip r{top} c{left}", (top, left), strip), cut


def band_labels(items: Sequence[pystac.Item]) -> dict[str, str]:
    """'synthetic' for a band whose asset carries ``demo:synthetic`` in any item, else 'real':
    a score on a synthetic band says little about real imagery."""
    labels = {}
    for band in REFLECTANCE_BANDS:
        keys = [(item, asset_key(item, BANDS[band].aliases)) for item in items]
        synthetic = any(
            item.assets[key].extra_fields.get(SYNTHETIC_FLAG) for item, key in keys if key
        )
        labels[band] = "synthetic" if synthetic else "real"
    return labels


def _part(held_out: float) -> str:
    return f"eastern {held_out:g} of the columns" if held_out else "whole area"
