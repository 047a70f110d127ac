"""DiffFuSR's learned fusion as the pipeline's fusion model: bands, consistency, halo, weights."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch

from pipeline.geo.bands import FUSED_BANDS, NATIVE_RATIO, REFLECTANCE_BANDS, RGB_BANDS, RGB_INDEX
from pipeline.models import get_fusion_model
from pipeline.models.baselines import Bicubic
from pipeline.models.fusion.model import (
    DEMO_WEIGHTS,
    DiffFuSRFusion,
    consistency_error,
    fusion_halo,
    native_grids,
    receptive_radius,
)
from pipeline.models.fusion.network import (
    FUSION_GROUPS,
    ChannelAttention,
    FusionNetwork,
    FusionRRDBNet,
    denormalize,
    normalize,
)
from pipeline.models.fusion.weights import load_fusion_network, save_fusion_network
from pipeline.models.radiometry import correction_reach
from pipeline.models.superresolve import SuperResolver
from pipeline.models.weights import WeightsError, file_sha256

FIXTURES = Path(__file__).parent / "fixtures" / "difffusr"
REFERENCE = str(FIXTURES / "fusion_small.ckpt")


#: One torch thread: the reference fixtures were made that way, and CPU kernels round alike.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_weights(path: Path, seed: int = 0) -> str:
    """Random weights of a tiny network (4 features, 1 block, growth 2) saved as ours."""
    torch.manual_seed(seed)
    return str(save_fusion_network(FusionNetwork(4, 1, 2), path).path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return tiny_weights(tmp_path_factory.mktemp("fusion") / "tiny.safetensors")


@pytest.fixture(scope="module")
def model(weights: str) -> DiffFuSRFusion:
    return get_fusion_model("difffusr-fusion", weights=weights, device="cpu")


def scene(seed: int = 1, n: int = 24, w: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(12, n, w) bands with 60 m structure and 10 m texture, and a (3, 4n, 4w) RGB."""
    rng = np.random.default_rng(seed)
    w = w or n
    coarse = rng.random((12, n // 6, w // 6)).repeat(6, 1).repeat(6, 2)
    bands = (0.05 + 0.3 * coarse + 0.03 * rng.random((12, n, w))).astype(np.float32)
    rgb = bands[RGB_INDEX].repeat(4, 1).repeat(4, 2) + 0.01 * rng.random((3, 4 * n, 4 * w))
    return bands, rgb.astype(np.float32)


def test_output_shape_band_order_and_rgb(model: DiffFuSRFusion) -> None:
    assert model.name == "difffusr-fusion" and len(model.weights_sha256) == 64
    bands, rgb = scene()
    out = model(bands, rgb, (0, 0))
    assert out.shape == (12, 96, 96) and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(out[RGB_INDEX], rgb)  # B04 B03 B02 are the RGB stage's
    assert np.array_equal(model(bands, rgb, (50, -70)), out)  # no dependence on the origin
    # Each fused band averages back to its own input band, not to another of its resolution.
    natives = native_grids(bands)
    for band in FUSED_BANDS:
        assert consistency_error(out, natives, (band,))[band][1] <= 1e-6
        for other in FUSED_BANDS:
            if other != band and natives[other].shape == natives[band].shape:
                swapped = consistency_error(out, {band: natives[other]}, (band,))
                assert swapped[band][0] > 1e-3


def test_consistency_is_exact_with_the_guarantee_and_not_without(model) -> None:
    bands, rgb = scene(2, 36)
    natives = native_grids(bands)
    with_ = consistency_error(model(bands, rgb, (0, 0)), natives)
    loose = dataclasses.replace(model, consistent=False)
    without = consistency_error(loose(bands, rgb, (0, 0)), natives)
    assert set(with_) == set(FUSED_BANDS)
    assert max(e[1] for e in with_.values()) <= 1e-6
    assert min(e[0] for e in without.values()) > 1e-3


def test_the_guarantee_is_smooth_across_footprint_edges(model) -> None:
    """The correction steps no more across a footprint's edge than inside it (one constant
    per footprint would step there and nowhere else). Random weights are far off, so a few
    footprints would be corrected below 0 and are flattened instead; they are left out."""
    bands, rgb = scene(3, 48)
    corrected = model(bands, rgb, (0, 0))
    raw = dataclasses.replace(model, consistent=False)(bands, rgb, (0, 0))
    for band in FUSED_BANDS:
        i = REFLECTANCE_BANDS.index(band)
        footprint = 4 * NATIVE_RATIO[band]
        n = corrected.shape[1] // footprint
        cells = corrected[i].reshape(n, footprint, n, footprint).min(axis=(1, 3)) < 1e-6
        assert cells.mean() < 0.25
        floored = cells.repeat(footprint, 0).repeat(footprint, 1)
        correction = corrected[i].astype(np.float64) - raw[i]
        assert np.abs(correction).max() > 1e-3  # there was work to do
        for axis in (0, 1):
            steps = np.moveaxis(np.abs(np.diff(correction, axis=axis)), axis, 0)
            kept = np.moveaxis(
                ~(np.diff(floored, axis=axis) | np.delete(floored, 0, axis)), axis, 0
            )
            edge = np.arange(1, correction.shape[axis]) % footprint == 0
            assert steps[edge][kept[edge]].max() <= 1.01 * steps[~edge][kept[~edge]].max(), band


def test_a_constant_scene_stays_constant_with_the_guarantee(model) -> None:
    values = np.linspace(0.05, 0.4, 12, dtype=np.float32)
    bands = np.broadcast_to(values[:, None, None], (12, 108, 108)).copy()
    rgb = bands[RGB_INDEX].repeat(4, 1).repeat(4, 2)
    out = model(bands, rgb, (0, 0))
    error = np.abs(out - values[:, None, None])
    # The convolutions' zero padding disturbs the block's border pixels, and the correction
    # of their footprints reaches a few footprints further; beyond, every band is its input.
    inner = receptive_radius(1) + 1 + 4 * correction_reach(6)
    assert error[:, inner:-inner, inner:-inner].max() < 1e-6
    assert error.mean() < 1e-3 and error.max() < 0.1
    raw = dataclasses.replace(model, consistent=False)(bands, rgb, (0, 0))
    assert np.abs(raw - values[:, None, None])[:, inner:-inner, inner:-inner].max() > 0.01


def test_bad_weights_and_blocks_are_refused(weights: str, model) -> None:
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        DiffFuSRFusion(weights=weights, sha256="0" * 64)
    shipped = DiffFuSRFusion(device="cpu")  # without weights: the demo weights
    assert shipped.weights == DEMO_WEIGHTS and shipped.weights_sha256 == file_sha256(DEMO_WEIGHTS)
    with pytest.raises(WeightsError, match="not a DiffFuSR fusion checkpoint"):
        DiffFuSRFusion(weights=str(FIXTURES / "sr_small.ckpt"))
    pinned = DiffFuSRFusion(weights=weights, sha256=model.weights_sha256.upper(), device="cpu")
    assert pinned == model
    with pytest.raises(ValueError, match="60 m pixels"):
        model(np.zeros((12, 20, 24), np.float32), np.zeros((3, 80, 96), np.float32), (0, 0))


def test_the_model_travels_as_its_address(model) -> None:
    blob = pickle.dumps(model)
    assert len(blob) < 1000
    bands, rgb = scene(4)
    assert np.array_equal(pickle.loads(blob)(bands, rgb, (0, 0)), model(bands, rgb, (0, 0)))


def test_a_residual_network_starts_as_bilinear_and_its_file_says_so(tmp_path) -> None:
    torch.manual_seed(0)
    net = FusionNetwork(4, 1, 2, residual=True).eval()
    guide = torch.randn(1, 3, 24, 24)
    inputs = {g.name: torch.randn(1, len(g.inputs), 24, 24) for g in FUSION_GROUPS}
    for g in FUSION_GROUPS:  # a new one adds nothing to the upsampled bands
        own = inputs[g.name][:, g.own_inputs]
        assert torch.equal(net.group_forward(g.name, guide, inputs[g.name]), own)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    loaded, _ = load_fusion_network(save_fusion_network(net, tmp_path / "r.safetensors").path)
    plain = FusionNetwork.from_state_dict(net.state_dict()).eval()  # the reference's reading
    assert loaded.residual and not plain.residual
    for g in FUSION_GROUPS:
        ms = inputs[g.name]
        own = ms[:, g.own_inputs]
        out = loaded.group_forward(g.name, guide, ms)
        assert torch.equal(out, net.group_forward(g.name, guide, ms))
        assert torch.allclose(out, plain.group_forward(g.name, guide, ms) + own)
        assert not torch.allclose(out, own)


def test_reference_checkpoint_through_the_model() -> None:
    """The reference fixture's weights, on constant bands (so native grids and the
    reference's ×4 upsampling agree): the reference network's forward, band for band."""
    model = DiffFuSRFusion(weights=REFERENCE, device="cpu", consistent=False)
    assert model.halo == fusion_halo(2) == 18 + 9
    values = np.linspace(0.05, 0.4, 12, dtype=np.float32)
    bands = np.broadcast_to(values[:, None, None], (12, 12, 12)).copy()
    rng = np.random.default_rng(5)
    rgb = (0.1 + 0.2 * rng.random((3, 48, 48))).astype(np.float32)
    out = model(bands, rgb, (0, 0))
    net = FusionNetwork.from_state_dict(torch.load(REFERENCE, weights_only=True)["state_dict"])
    with torch.inference_mode():
        lr = normalize(torch.from_numpy(bands)[None])
        expected = denormalize(net.eval()(lr, normalize(torch.from_numpy(rgb)[None], RGB_BANDS)))
    expected = expected[0].numpy()
    fused = [REFLECTANCE_BANDS.index(b) for b in FUSED_BANDS]
    np.testing.assert_allclose(out[fused], expected[fused], atol=1e-5)


@pytest.mark.parametrize("blocks", [1, 2])
def test_receptive_radius_is_the_networks(blocks: int) -> None:
    """With channel attention (a global pooling) removed, the gradient of one output pixel
    reaches exactly ``receptive_radius`` pixels of the inputs."""
    torch.manual_seed(0)
    net = FusionRRDBNet(3, 2, 2, features=4, blocks=blocks, growth=2).double().eval()
    for name, module in list(net.named_children()):
        if isinstance(module, ChannelAttention):
            setattr(net, name, torch.nn.Identity())
    radius = receptive_radius(blocks)
    n = 2 * radius + 9
    rgb = torch.randn(1, 3, n, n, dtype=torch.float64, requires_grad=True)
    ms = torch.randn(1, 2, n, n, dtype=torch.float64, requires_grad=True)
    c = n // 2
    net(rgb, ms)[0, :, c, c].sum().backward()
    reached = (rgb.grad.abs().sum((0, 1)) + ms.grad.abs().sum((0, 1))) > 0
    rows, cols = torch.nonzero(reached, as_tuple=True)
    assert [c - rows.min(), rows.max() - c, c - cols.min(), cols.max() - c] == [radius] * 4


def test_blocks_are_close_to_the_whole_array_but_not_identical(model) -> None:
    """Channel attention pools over the whole block, so blocks see slightly different
    gates than a whole-array run does; everything else is within the halo."""
    bands, _ = scene(6, 24, 180)
    resolver = SuperResolver(Bicubic(), model)
    # Bicubic's 2 px, the network's 19 and the consistency correction's 30, in 60 m pixels.
    assert resolver.halo == 54
    whole = resolver.block(bands, (0, 0))
    # Three column blocks: the outer two see 114 of the 180 columns, so their gates differ.
    lazy = resolver.apply(da.from_array(bands, chunks=(12, 24, 60)), block_size=60)
    assert lazy.numblocks == (1, 1, 3)
    diff = np.abs(lazy.compute(scheduler="single-threaded") - whole)
    assert 0 < diff.max() < 1e-3, diff.max()
    print(f"block vs whole: max {diff.max():.3g}, mean {diff.mean():.3g}")
