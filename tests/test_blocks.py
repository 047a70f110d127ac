"""The halo wrapper: blocked results equal whole-array results exactly."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.geo.blocks import map_with_halo
from pipeline.geo.resample import upsample_cubic
from pipeline.models import get_fusion_model, get_rgb_model
from pipeline.models.superresolve import SuperResolver


def window_max_upsampled(radius: int, scale: int):
    """A deterministic model reaching exactly ``radius`` pixels: max filter then ×scale repeat."""

    def fn(block: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        padded = np.pad(block, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
        h, w = block.shape[1:]
        out = block.copy()
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                out = np.maximum(out, padded[:, dy : dy + h, dx : dx + w])
        return np.repeat(np.repeat(out, scale, axis=1), scale, axis=2)

    return fn


def chunking(total: int) -> st.SearchStrategy[tuple[int, ...]]:
    """Random chunk sizes adding up to ``total``, ragged edges included."""
    return st.lists(st.integers(1, total), min_size=1, max_size=6).map(
        lambda cuts: tuple(np.diff(sorted({0, total, *[c % total for c in cuts]})).tolist())
    )


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    height=st.integers(5, 60),
    width=st.integers(5, 60),
    radius=st.integers(0, 4),
    scale=st.sampled_from([1, 2, 4]),
)
def test_blocked_equals_whole_for_any_chunking(data, height, width, radius, scale):
    rng = np.random.default_rng(height * 100 + width)
    x = rng.random((2, height, width)).astype(np.float32)
    fn = window_max_upsampled(radius, scale)
    chunks = (2, data.draw(chunking(height)), data.draw(chunking(width)))
    halo = radius + data.draw(st.integers(0, 3))  # any halo at least the model's reach
    blocked = map_with_halo(da.from_array(x, chunks=chunks), fn, halo, scale, 2)
    np.testing.assert_array_equal(blocked.compute(scheduler="sync"), fn(x, (0, 0)))


def test_too_small_halo_shows_seams():
    """The property is not vacuous: a halo below the model's reach breaks equality."""
    x = np.random.default_rng(1).random((1, 40, 40)).astype(np.float32)
    fn = window_max_upsampled(3, 2)
    blocked = map_with_halo(da.from_array(x, chunks=(1, 10, 10)), fn, 1, 2, 1)
    assert not np.array_equal(blocked.compute(scheduler="sync"), fn(x, (0, 0)))


def test_block_origins_are_positions_in_the_array():
    seen = []

    def record(block, origin):
        seen.append((origin, block.shape[1:]))
        return block

    x = da.zeros((1, 10, 7), chunks=(1, 4, 3))
    map_with_halo(x, record, halo=3, scale=1, out_channels=1).compute(scheduler="sync")
    # chunks (4, 4, 2) x (3, 3, 1): the chunks smaller than the halo merge, giving (4, 6) x (3, 4)
    assert sorted(seen) == [
        ((0, 0), (7, 6)),  # first block: 3 halo rows below, 3 halo columns right
        ((0, 0), (7, 7)),  # its right neighbour starts 3 columns early
        ((1, 0), (9, 6)),
        ((1, 0), (9, 7)),
    ]


@pytest.mark.parametrize("fusion", ["gram-schmidt", "bicubic"])
@pytest.mark.parametrize("block", [36, 60, 120])
def test_superresolver_is_seamless_on_ragged_blocks(fusion, block):
    rng = np.random.default_rng(7)
    x = rng.random((12, 150, 126)).astype(np.float32)
    x[0, 10:20, 30:40] = np.nan  # a no-data patch crossing no block edge in particular
    resolver = SuperResolver(get_rgb_model("bicubic"), get_fusion_model(fusion))
    whole = resolver.block(x, (0, 0))
    blocked = resolver.apply(da.from_array(x), block).compute(scheduler="sync")
    np.testing.assert_array_equal(blocked, whole)


@pytest.mark.parametrize("fusion", ["gram-schmidt", "bicubic"])
def test_the_fusion_in_blocks_of_a_whole_region_block_is_seamless(fusion):
    """One model block for the whole array (as on a GPU), the fusion in blocks inside it."""
    x = np.random.default_rng(8).random((12, 150, 126)).astype(np.float32)
    x[0, 30:40, 60:70] = np.nan
    resolver = SuperResolver(get_rgb_model("bicubic"), get_fusion_model(fusion))
    whole = resolver.block(x, (0, 0))
    np.testing.assert_array_equal(resolver.block(x, (0, 0), fusion_block=36), whole)
    one_block = resolver.apply(da.from_array(x, chunks=(12, 60, 60)), None)
    assert one_block.numblocks == (1, 1, 1)
    np.testing.assert_array_equal(one_block.compute(scheduler="sync"), whole)


def test_bicubic_preserves_constants_and_linear_ramps():
    ramp = np.tile(np.arange(12, dtype=np.float32), (1, 12, 1))
    up = upsample_cubic(ramp, 4)
    centres = (np.arange(48) + 0.5) / 4 - 0.5
    inner = slice(8, 40)  # away from the clamped edges
    np.testing.assert_allclose(up[0, 5, inner], centres[inner], atol=1e-5)
    flat = upsample_cubic(np.full((1, 5, 5), 0.3, np.float32), 4)
    np.testing.assert_allclose(flat, 0.3, rtol=1e-6)
