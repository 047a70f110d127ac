"""The RGB stage's cost accounting: the windows a layout evaluates, counted without running the
model, against the windows the network is actually called on."""

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.models import get_fusion_model
from pipeline.models.diffusion.cost import executed_over_useful, sampled_windows, tile_windows
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.superresolve import SuperResolver

WEIGHTS = str(Path(__file__).parent / "fixtures" / "difffusr" / "sr_small.ckpt")
#: One step: the count of U-Net rows per step is what is checked, not the sample.
MODEL = {"weights": WEIGHTS, "steps": 1, "window": 16, "overlap": 4, "batch": 64, "device": "cpu"}


def evaluated_windows(model: DiffFuSRRGB, run) -> int:
    """Windows the U-Net evaluated while ``run()`` ran: the rows of its calls per step."""
    rows: list[int] = []
    unet = model._network().ema
    hook = unet.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    try:
        run()
    finally:
        hook.remove()
    return sum(rows) // (model.steps * model.samples)


@pytest.mark.parametrize("block_size", [48, None])
def test_the_tile_layout_count_is_what_the_model_evaluates(block_size) -> None:
    """A 24-pixel tile with its halo of 36 (the window, the RGB guarantee's reach and the
    fusion's, in whole 60 m pixels), through the halo wrapper as the region flow runs it
    (cropped by the halo, so the windows that only the halo needs are skipped): blocks of 48
    (two along each axis of the 96-pixel region) or one block for the whole region."""
    model = DiffFuSRRGB(**MODEL)
    resolver = SuperResolver(model, get_fusion_model("bicubic"))
    tile, halo, origin = 24, resolver.halo, (606, -1200)
    inset = model.inset(resolver.rgb_margin(halo))
    lazy = resolver.apply(
        da.from_array(region_bands(tile, halo)), block_size, offset(origin, halo), cropped=True
    )
    counted = evaluated_windows(model, lambda: lazy.compute(scheduler="sync"))
    assert counted == tile_windows((tile, tile), halo, block_size, 16, 4, origin, inset)
    assert counted < tile_windows((tile, tile), halo, block_size, 16, 4, origin)
    assert halo == 36 and inset > 0 and lazy.numblocks[1] == (2 if block_size else 1)


def test_skipping_the_halos_windows_leaves_a_one_step_tile_as_it_was() -> None:
    """At one step no window's trajectory depends on its neighbours', so the tile the flow
    keeps is the same to the bit whether the windows that only the halo needs are sampled."""
    model = DiffFuSRRGB(**MODEL)
    resolver = SuperResolver(model, get_fusion_model("bicubic"))
    tile, halo, origin = 24, resolver.halo, (606, -1200)
    bands = da.from_array(region_bands(tile, halo))
    keep = (slice(None), slice(4 * halo, -4 * halo), slice(4 * halo, -4 * halo))
    out = {
        cropped: resolver.apply(bands, None, offset(origin, halo), cropped=cropped)[keep].compute(
            scheduler="sync"
        )
        for cropped in (True, False)
    }
    np.testing.assert_array_equal(out[True], out[False])


def region_bands(tile: int, halo: int) -> np.ndarray:
    """The 12 bands of a tile's region, data everywhere."""
    region = tile + 2 * halo
    return np.random.default_rng(1).uniform(0.02, 0.3, (12, region, region)).astype(np.float32)


def offset(origin: tuple[int, int], halo: int) -> tuple[int, int]:
    """The region's first pixel on the 10 m lattice, for a tile at ``origin``."""
    return origin[0] - halo, origin[1] - halo


def test_windows_without_data_are_neither_evaluated_nor_counted() -> None:
    model = DiffFuSRRGB(**MODEL)
    rgb = np.random.default_rng(2).uniform(0.02, 0.3, (3, 40, 40)).astype(np.float32)
    rgb[:, 20:, :] = 0  # no data in the lower half
    counted = evaluated_windows(model, lambda: model(rgb, (5, 7)))
    assert counted == sampled_windows(rgb, (5, 7), 16, 4)
    assert 0 < counted < sampled_windows(np.ones_like(rgb), (5, 7), 16, 4)


def test_executed_over_useful_is_a_ratio_of_pixels() -> None:
    # 16-pixel windows, one every 12 pixels from global pixel -2: a 48-pixel tile from there
    # touches the windows from -14 to 34 along each axis, 5 × 5 of them; without overlap, a
    # 48 × 32 tile on the lattice touches 3 × 2, no more pixels than it has
    assert tile_windows((48, 48), 0, None, 16, 2, (-2, -2)) == 25
    assert tile_windows((48, 32), 0, None, 16, 0, (0, 0)) == 6
    assert executed_over_useful(25, 16, (4 * 48) ** 2) == pytest.approx(25 * 16**2 / 48**2)
    assert executed_over_useful(6, 16, 4 * 48 * 4 * 32) == 1


def test_pixels_of_no_sampled_window_hold_the_bilinear_lift_or_no_data() -> None:
    """Beyond the windows a block's kept pixels need, the RGB model's output is a guide
    without detail for the fusion, which reads it as far as its reach (``GUIDE_CONTEXT``
    sampled): the bilinear ×4 of the input, and reflectance 0 where the input has none."""
    model = DiffFuSRRGB(**MODEL)
    lr = smooth_bands(72)[:3]
    lr[:, 60:, :12] = 0  # no data in the bottom-left corner
    margin = 30
    out = model.draw(lr, (606, -1200), margin)[0]
    lifted = F.interpolate(torch.from_numpy(lr)[None], scale_factor=4, mode="bilinear")[0]
    far = (slice(None), slice(8, 40), slice(200, 280))  # top right, clear of every window
    np.testing.assert_allclose(out[far], lifted[far].numpy(), atol=1e-6)
    assert (out[:, 260:, :30] == 0).all()  # inside the no-data corner
    near = (slice(None), slice(4 * margin, -4 * margin), slice(4 * margin, -4 * margin))
    assert np.abs(out[near] - lifted[near].numpy()).max() > 1e-3  # sampled


def smooth_bands(region: int) -> np.ndarray:
    """12 bands of a region with texture at several scales, like land cover."""
    rng = np.random.default_rng(2)
    bands = np.zeros((12, region, region), np.float32)
    for cells in (3, 12, 48):
        field = rng.uniform(0, 0.1, (12, cells, cells)).astype(np.float32)
        bands += np.kron(field, np.ones((region // cells + 1,) * 2, np.float32))[
            :, :region, :region
        ]
    return bands + 0.02
