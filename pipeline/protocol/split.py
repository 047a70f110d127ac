"""The held-out split: which columns of a composite training never sees, and the clear
windows of them that are scored. Training and every evaluation of its weights cut at the same
place, or the test pixels overlap what the weights learnt from.

A column cut (rather than random tiles) keeps the two areas apart as blocks, which limits the
spatial correlation between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pipeline.geo.grid import LATTICE_PIXELS

Split = Literal["train", "test", "all"]


def held_out_cut(width: int, test_fraction: float, lattice: int = LATTICE_PIXELS) -> int:
    """The column east of which the last ``test_fraction`` of a ``width``-pixel composite is
    held out, on a lattice of ``lattice`` pixels: the 60 m lattice for the 12-band composite
    (every band's native pixels whole on both sides), 1 for the RGB stage's own."""
    return lattice * round(width / lattice * (1 - test_fraction))


def split_columns(width: int, cut: int, split: Split) -> tuple[int, int]:
    """The columns [first, last) of ``split`` when the image is cut at column ``cut``."""
    return {"train": (0, cut), "test": (cut, width), "all": (0, width)}[split]


@dataclass(frozen=True)
class ClearPart:
    """Where an image is clear from a first column on: its clear pixels (none west of that
    column), the first clear row and column rounded up to the 60 m lattice, and one past
    the last clear row and column."""

    clear: np.ndarray  # bool (H, W)
    top: int
    left: int
    bottom: int
    right: int


def clear_part(image: np.ndarray, first_column: int) -> ClearPart | None:
    """The clear part of ``image`` (band, H, W) from ``first_column`` east; None when it holds
    no clear pixel."""
    clear = np.isfinite(image).all(axis=0)
    clear[:, :first_column] = False
    rows, cols = np.flatnonzero(clear.any(axis=1)), np.flatnonzero(clear.any(axis=0))
    if not len(rows):
        return None
    top, left = (
        math.ceil(int(first[0]) / LATTICE_PIXELS) * LATTICE_PIXELS for first in (rows, cols)
    )
    return ClearPart(clear, top, left, int(rows[-1]) + 1, int(cols[-1]) + 1)


def clear_tiles(
    clear: np.ndarray, patch: int, rows: tuple[int, int], columns: tuple[int, int]
) -> list[tuple[int, int]]:
    """Top-left (row, column) of every wholly clear one of the non-overlapping ``patch`` ×
    ``patch`` windows that tile rows and columns [first, last) from their first, in raster
    order."""
    return [
        (y, x)
        for y in range(rows[0], rows[1] - patch + 1, patch)
        for x in range(columns[0], columns[1] - patch + 1, patch)
        if clear[y : y + patch, x : x + patch].all()
    ]
