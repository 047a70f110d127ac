"""The halo wrapper: run a scale-changing block function over a chunked array without seams.

Each block is handed to the function together with ``halo`` input pixels of its neighbours on
every side (fewer at the array's outer edges, where the whole-array function would see no more
either); the function returns the block ×``scale`` and the wrapper crops ``halo × scale`` output
pixels where a halo was added. For a function whose output pixel depends only on inputs within
``halo`` pixels, the blocked result equals the whole-array result exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da
import numpy as np
from dask.array.overlap import ensure_minimum_chunksize

#: fn(block (c, h, w), origin (row, col) of the block's first pixel in the array) -> (c', h·s, w·s)
BlockFunction = Callable[[np.ndarray, tuple[int, int]], np.ndarray]


def map_with_halo(
    array: da.Array,
    fn: BlockFunction,
    halo: int,
    scale: int,
    out_channels: int,
    dtype: np.dtype | type = np.float32,
    token: str = "halo-block",
) -> da.Array:
    """Apply ``fn`` to every (channel, y, x) block of ``array`` with a halo; crop it ×scale.

    The channel axis must be a single chunk. Chunks smaller than the halo first grow from
    their neighbours, so that every halo comes from one adjacent block. ``token`` is the
    prefix of the tasks' keys, by which the task stream tells the model's time apart.
    """
    if array.ndim != 3:
        raise ValueError("expected a (channel, y, x) array")
    if halo < 0 or scale < 1:
        raise ValueError("halo must be >= 0 and scale >= 1")
    array = array.rechunk(
        {0: -1, 1: _at_least_halo(array.chunks[1], halo), 2: _at_least_halo(array.chunks[2], halo)}
    )
    depth = {
        0: 0,
        1: halo if array.numblocks[1] > 1 else 0,
        2: halo if array.numblocks[2] > 1 else 0,
    }
    padded = da.overlap.overlap(array, depth=depth, boundary="none")
    spans = [halo_spans(c, halo) for c in array.chunks[1:]]

    def run(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        iy, ix = block_info[None]["chunk-location"][1:]
        (y, top, bottom), (x, left, right) = spans[0][iy], spans[1][ix]
        out = fn(block, (y, x))
        h, w = block.shape[1:]
        expected = (out_channels, h * scale, w * scale)
        if out.shape != expected:
            raise ValueError(f"block function returned {out.shape}, expected {expected}")
        return out[
            :,
            top * scale : (h - bottom) * scale,
            left * scale : (w - right) * scale,
        ].astype(dtype, copy=False)

    out_chunks = ((out_channels,),) + tuple(tuple(c * scale for c in ax) for ax in array.chunks[1:])
    return padded.map_blocks(
        run, chunks=out_chunks, dtype=dtype, meta=np.empty((0, 0, 0), dtype), token=token
    )


def _at_least_halo(chunks: tuple[int, ...], halo: int) -> tuple[int, ...]:
    """``chunks`` grown by dask's rule for overlaps until none is smaller than ``halo`` (one
    chunk when the axis is shorter than that)."""
    return ensure_minimum_chunksize(min(halo, sum(chunks)), chunks)


def halo_spans(chunks: tuple[int, ...], halo: int) -> list[tuple[int, int, int]]:
    """Per block of one axis (chunks already grown to at least the halo, see
    ``_at_least_halo``): the first pixel handed to the block function, and the halo added
    before and after the block. A single block gets no halo, and the array's outer edges none
    either."""
    depth = halo if len(chunks) > 1 else 0
    spans, start = [], 0
    for i, size in enumerate(chunks):
        before = depth if i > 0 else 0
        after = depth if i < len(chunks) - 1 else 0
        spans.append((start - before, before, after))
        start += size
    return spans


def halo_blocks(length: int, block_size: int, halo: int) -> list[tuple[int, int, int, int]]:
    """The blocks that :func:`map_with_halo` hands to its function along an axis of
    ``length`` pixels chunked by ``block_size``: (first pixel, size, halo before, halo after),
    the size counting the halo."""
    chunks = _at_least_halo(da.core.normalize_chunks(block_size, (length,))[0], halo)
    return [
        (at, size + before + after, before, after)
        for (at, before, after), size in zip(halo_spans(chunks, halo), chunks, strict=True)
    ]
