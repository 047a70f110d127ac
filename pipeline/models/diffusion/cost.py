"""What the RGB diffusion stage computes for a tile, against what the tile needs.

Every window the sampler evaluates costs the same (one conditioning, then one U-Net evaluation
per step and sample, on a fixed window size), so executed / useful FLOPs is a ratio of pixels:
the windows evaluated, times a window's output pixels, over the tile's own output pixels,
which useful work computes once each at the network's FLOPs per output pixel. The rest is
waste: windows overlapping their neighbours, the tile's halo, the halos of the blocks inside
the tile's region and the lattice windows that reach past a block's edge. Windows holding no
data are not evaluated and cost nothing.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.geo.bands import SCALE
from pipeline.geo.blocks import halo_blocks
from pipeline.models.diffusion.rgb import _lattice, _on_lattice, _padded, _Windows


def sampled_windows(
    rgb: np.ndarray,
    origin: tuple[int, int],
    window: int,
    overlap: int,
    needed: tuple[slice, ...] | None = None,
) -> int:
    """Windows the sampler evaluates for the block ``rgb`` (3, h, w) whose first pixel is at
    ``origin`` on the global 10 m lattice: the lattice windows that touch it, or the rows and
    columns ``needed`` of it (see ``DiffFuSRRGB.needed``), and hold data."""
    block = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))
    lr, top, left = _on_lattice(block, origin, window, overlap)
    return _Windows(lr, window, overlap, _padded(needed, top, left)).count


def tile_windows(
    shape: tuple[int, int],
    halo: int,
    block_size: int | None,
    window: int,
    overlap: int,
    origin: tuple[int, int] = (0, 0),
    inset: int = 0,
) -> int:
    """Windows evaluated for a tile of ``shape`` (rows, columns) 10 m pixels whose first pixel
    is at ``origin``, holding data everywhere, as the region flow lays it out: the tile's
    region (the tile and ``halo`` pixels on each side) cut into blocks of ``block_size``
    (None: one block), each handed to the model with ``halo`` pixels of its neighbours
    (:func:`pipeline.geo.blocks.map_with_halo`), which samples only the windows touching
    the block less ``inset`` pixels at each edge (the RGB model's ``needed``)."""
    rows, cols = (
        [
            len(_lattice(o - halo + at + inset, size - 2 * inset, window, overlap))
            for at, size, _, _ in halo_blocks(n + 2 * halo, block_size or n + 2 * halo, halo)
        ]
        for n, o in zip(shape, origin, strict=True)
    )
    return sum(rows) * sum(cols)


def executed_over_useful(windows: int, window: int, output_pixels: int) -> float:
    """Executed / useful FLOPs of ``windows`` window evaluations for ``output_pixels`` 2.5 m
    pixels of product: the same at any number of steps and samples, on any hardware."""
    return windows * (SCALE * window) ** 2 / output_pixels
