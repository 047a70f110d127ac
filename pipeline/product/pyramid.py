"""The overview pyramid's layout and its one reduction, shared by the tile writer (which
writes level 1 with each tile) and the overview builder (levels 2 and up).

Level k is the group ``overviews/<k>`` at 2.5 m × 2^k. Each pixel of a level is the 2 × 2
reduction of the stored integers of the level below: averaged, or OR-ed for flags.
"""

from __future__ import annotations

import numpy as np

#: Group holding the levels, ``overviews/1`` … ``overviews/N``.
OVERVIEWS = "overviews"
#: The reductions: flags' bits are combined, other values averaged over the pixels with data
#: (each variable's is in :mod:`pipeline.product.schema`).
BITWISE_OR = "bitwise_or"
AVERAGE = "average"


def level_path(level: int) -> str:
    """The group of a level: the root for level 0."""
    return f"{OVERVIEWS}/{level}" if level else ""


def reduce_2x2(values: np.ndarray, nodata: int, method: str) -> np.ndarray:
    """Each 2 × 2 block of the last two axes to one pixel, leaving ``nodata`` pixels out.

    A block with no valid pixel (an odd edge counts as missing pixels) stays ``nodata``; the
    average is rounded to the stored integer type.
    """
    *lead, h, w = values.shape
    padded = np.full((*lead, h + h % 2, w + w % 2), nodata, values.dtype)
    padded[..., :h, :w] = values
    blocks = padded.reshape(*lead, (h + 1) // 2, 2, (w + 1) // 2, 2)
    valid = blocks != nodata
    kept = np.where(valid, blocks, 0)
    count = valid.sum(axis=(-3, -1))
    if method == BITWISE_OR:
        out = np.bitwise_or.reduce(kept, axis=(-3, -1))
    else:
        out = np.rint(kept.sum(axis=(-3, -1), dtype=np.float64) / np.maximum(count, 1))
    out = out.astype(values.dtype)
    out[count == 0] = nodata
    return out
