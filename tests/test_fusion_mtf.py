"""The second DiffFuSR fusion generation (MTF-guided detail injection) against its fixture.

The fixture (``tests/fixtures/difffusr-mtf``) holds a random-weight checkpoint at the published
sizes and every tensor of the reference's inference on a 24 × 24 LR scene. Its tolerance:
every tensor to 1e-4 in normalised units, the fused reflectance to 2e-5. All through the
public API: the weight loader, the network container and the pipeline's fusion model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.geo.bands import FUSED_BANDS, REFLECTANCE_BANDS, RGB_BANDS, RGB_INDEX
from pipeline.geo.blocks import map_with_halo
from pipeline.models.baselines import Bicubic
from pipeline.models.fusion.model import (
    DiffFuSRFusion,
    consistency_error,
    mtf_halo,
    native_grids,
)
from pipeline.models.fusion.mtf import MTF_GROUPS, MTFFusionNetwork, MTFNet, lowpass_reach
from pipeline.models.fusion.network import FusionNetwork, denormalize, normalize, upsample
from pipeline.models.fusion.weights import (
    fusion_generations,
    load_fusion_network,
    save_fusion_network,
)
from pipeline.models.radiometry import correction_reach
from pipeline.models.superresolve import SuperResolver
from pipeline.models.weights import WeightsError

FIXTURES = Path(__file__).parent / "fixtures" / "difffusr-mtf"
CHECKPOINT = FIXTURES / "fusion_mtf.ckpt"
FIRST_GENERATION = Path(__file__).parent / "fixtures" / "difffusr" / "fusion_small.ckpt"
NORMALISED, REFLECTANCE = 1e-4, 2e-5
#: Fixture tensor prefix and the reference's up-scaling of each group's MS input.
SHORT = {
    "rrdb_block_10_fusion": ("g10", 4),
    "rrdb_block_20_fusion": ("g20", 8),
    "rrdb_block_60_fusion": ("g60", 24),
}


#: One torch thread: the reference fixtures were made that way, and CPU kernels round alike.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "fusion_mtf_io.safetensors")


@pytest.fixture(scope="module")
def net() -> MTFFusionNetwork:
    loaded, _ = load_fusion_network(CHECKPOINT)
    assert isinstance(loaded, MTFFusionNetwork)
    return loaded


@pytest.fixture(scope="module")
def model() -> DiffFuSRFusion:
    return DiffFuSRFusion(weights=str(CHECKPOINT), device="cpu")


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


def test_sizes_keys_and_parameters_are_the_published_ones(net: MTFFusionNetwork) -> None:
    listing = json.loads((FIXTURES / "fusion_mtf_keys.json").read_text())
    # nf 32, gc 16; the published nb = 3 builds nb // 2 = 1 RRDB, which is what keys show.
    assert (net.features, net.blocks, net.growth) == (32, 3 // 2, 16)
    fresh = MTFFusionNetwork()  # our defaults, kernel sizes from the MTF values
    for state in (net.state_dict(), fresh.state_dict()):
        ours = {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in state.items()
        }
        assert list(ours.items()) == list(listing["keys"].items())  # order too
    assert sum(v.numel() for v in net.state_dict().values()) == listing["elements"]
    for g in MTF_GROUPS:
        sub = net.group(g.name)
        count = sum(p.numel() for p in sub.parameters())  # mtf_ratios is a buffer
        assert count == listing["parameters_per_group"][str(g.resolution)], g.name
        assert sub.ratios == (g.ratio_2p5m,) * len(g.outputs)


def test_preprocessing_and_inputs(net: MTFFusionNetwork, io: dict) -> None:
    lr = normalize(io["lr12_reflectance"])
    assert _max_diff(lr, io["lr12_normalized"]) <= NORMALISED
    assert (
        _max_diff(normalize(io["sr_rgb_reflectance"], RGB_BANDS), io["guide_rgb_in"]) <= NORMALISED
    )
    lr_up = upsample(io["lr12_normalized"])
    for name, (short, factor) in SHORT.items():
        reference = net.ms_input(name, upsample(io["lr12_normalized"], factor))
        assert _max_diff(reference, io[f"{short}_ms_in"]) <= NORMALISED, name
        # One bilinear ×4 equals the reference's ×8 or ×24 then bilinear shrink to 2.5 m.
        ms_up = io["g10_ms_in"] if factor == 4 else io[f"{short}_ms_up"]
        assert _max_diff(net.ms_input(name, lr_up), ms_up) <= NORMALISED, name


@pytest.mark.parametrize("name", list(SHORT))
def test_every_intermediate_of_each_group(net: MTFFusionNetwork, io: dict, name: str) -> None:
    short, _ = SHORT[name]
    with torch.inference_mode():
        trace = net.group(name).trace(io["guide_rgb_in"], io[f"{short}_ms_in"])
        direct = net.group_forward(name, io["guide_rgb_in"], io[f"{short}_ms_in"])
    ms_up = io["g10_ms_in"] if short == "g10" else io[f"{short}_ms_up"]
    expected = {
        "pan": trace.pan,
        "pan_lp_0": trace.lowpass[0],
        "detail_0": trace.detail[0],
        "detail_hat_0": trace.detail_hat[0],
        "gain_0": trace.gain[0],
        "enhanced_ms": trace.enhanced,
        "mean_detail": trace.mean_detail,
        "out": trace.out,
    }
    assert _max_diff(trace.ms_up, ms_up) <= NORMALISED
    for key, ours in expected.items():
        assert _max_diff(ours, io[f"{short}_{key}"]) <= NORMALISED, key
    assert torch.equal(direct, trace.out)


def test_reference_inference_reproduces_the_fused_bands(net: MTFFusionNetwork, io: dict) -> None:
    with torch.inference_mode():
        fused = net(io["lr12_normalized"], io["guide_rgb_in"])
    assert _max_diff(fused, io["fused12_normalized"]) <= NORMALISED
    assert _max_diff(denormalize(fused), io["fused12_reflectance"]) <= REFLECTANCE


def test_the_fusion_model_reproduces_the_fused_reflectance(model, io: dict) -> None:
    """The pipeline's model on the fixture's 10 m bands and guide, without the guarantee:
    the reference's fused reflectance for every band it fuses; RGB stays the guide."""
    bands = io["lr12_reflectance"][0].numpy()
    rgb = io["sr_rgb_reflectance"][0].numpy()
    loose = dataclasses.replace(model, consistent=False)
    out = loose(bands, rgb, (0, 0))
    expected = io["fused12_reflectance"][0]
    fused = [REFLECTANCE_BANDS.index(b) for b in FUSED_BANDS]
    assert _max_diff(torch.from_numpy(out[fused]), expected[fused]) <= REFLECTANCE
    assert np.array_equal(out[RGB_INDEX], rgb)
    # The radiometric guarantee holds for this generation as for the first.
    natives = native_grids(bands)
    corrected = consistency_error(model(bands, rgb, (0, 0)), natives)
    assert max(e[1] for e in corrected.values()) <= 1e-5
    assert min(e[0] for e in consistency_error(out, natives).values()) > 1e-3


def test_generation_is_told_by_the_keys(tmp_path: Path, net: MTFFusionNetwork) -> None:
    second = torch.load(CHECKPOINT, weights_only=True)["state_dict"]
    first = torch.load(FIRST_GENERATION, weights_only=True)["state_dict"]
    assert fusion_generations(second) == [2] and fusion_generations(first) == [1]
    assert isinstance(load_fusion_network(FIRST_GENERATION)[0], FusionNetwork)
    neither = {k: v for k, v in second.items() if not k.endswith("pan_mixer.logits")}
    both = {**second, **first}
    for state, what in ((neither, "neither"), (both, "both")):
        path = tmp_path / f"{what}.ckpt"
        torch.save({"state_dict": state}, path)
        with pytest.raises(WeightsError, match=what) as refused:
            load_fusion_network(path)
        assert "\n" not in str(refused.value)
    # Keys of the second generation that do not fit it: refused in one line, not a traceback.
    truncated = {k: v for k, v in second.items() if "refinement.3" not in k}
    torch.save({"state_dict": truncated}, tmp_path / "truncated.ckpt")
    with pytest.raises(WeightsError, match="generation-2 fusion weights do not fit"):
        load_fusion_network(tmp_path / "truncated.ckpt")


def test_our_files_record_the_generation(tmp_path: Path, net: MTFFusionNetwork) -> None:
    saved = save_fusion_network(net, tmp_path / "mtf.safetensors")
    loaded, metadata = load_fusion_network(saved.path)
    assert isinstance(loaded, MTFFusionNetwork)
    assert metadata["config"] == {"generation": 2, "features": 32, "blocks": 1, "growth": 16}
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True)
    )
    wrong = save_fusion_network(net, tmp_path / "wrong.safetensors", {"config": {"generation": 1}})
    with pytest.raises(WeightsError, match="records generation 1"):
        load_fusion_network(wrong.path)
    first = save_fusion_network(FusionNetwork(4, 1, 2), tmp_path / "first.safetensors")
    assert load_fusion_network(first.path)[1]["config"]["generation"] == 1


def test_halo_of_the_second_generation(model, net: MTFFusionNetwork) -> None:
    # 60 m group: 19-px kernel (9) + bicubic of 24 × 24 means (59) + detail net (17)
    # + refinement (4) = 89 guide pixels; the MS input path is 21 px plus one 10 m pixel.
    assert lowpass_reach(24) == 59 and lowpass_reach(4) == 9
    assert (net.guide_reach, net.ms_reach) == (89, 21)
    assert dataclasses.replace(model, consistent=False).halo == mtf_halo(net) == 23
    assert model.halo == 23 + correction_reach(6)  # the guarantee's reach over 60 m pixels


@pytest.mark.parametrize(("ratio", "kernel"), [(24, 19), (8, 7), (4, 5)])
@pytest.mark.parametrize("axis", [2, 3])
def test_reach_is_the_networks(ratio: int, kernel: int, axis: int) -> None:
    """The gradient of one output pixel, at every position within its footprint, reaches
    exactly ``guide_reach`` pixels of the guide and ``ms_reach`` of the MS input (rows and
    columns apart, on a strip one footprint wide, to keep it fast)."""
    torch.manual_seed(0)
    sub = MTFNet([ratio], features=4, blocks=1, growth=2, kernel_sizes=[kernel]).eval()
    length = ratio * (2 * -(-sub.guide_reach // ratio) + 2)
    shape = [ratio, 1, length, ratio] if axis == 2 else [ratio, 1, ratio, length]
    centre = length // 2 - length // 2 % ratio  # the first pixel of a footprint
    guide = torch.randn([ratio, 3, *shape[2:]], requires_grad=True)
    ms = torch.randn(shape, requires_grad=True)
    out = sub(guide, ms).movedim(axis, 2)  # the measured axis first
    torch.stack([out[t, 0, centre + t, ratio // 2] for t in range(ratio)]).sum().backward()
    for grad, expected in ((guide.grad, sub.guide_reach), (ms.grad, sub.ms_reach)):
        far = 0
        for t in range(ratio):
            reached = torch.nonzero(grad[t].movedim(axis - 1, 1).abs().sum((0, 2)) > 0)
            far = max(far, centre + t - int(reached.min()), int(reached.max()) - centre - t)
        assert far == expected


def test_blocks_equal_the_whole_array(model) -> None:
    """No global pooling in this generation: with the halo, a tiled run through
    ``map_with_halo`` equals one whole-array run; without it, tile edges differ."""
    rng = np.random.default_rng(7)
    coarse = rng.random((12, 1, 30)).repeat(6, 1).repeat(6, 2)
    bands = (0.05 + 0.3 * coarse + 0.03 * rng.random((12, 6, 180))).astype(np.float32)
    resolver = SuperResolver(Bicubic(), model)
    # 2 (bicubic) + 23 + 30 (the guarantee's reach), rounded up to whole 60 m pixels
    assert resolver.halo == 60
    whole = resolver.block(bands, (0, 0))
    tiled = map_with_halo(
        da.from_array(bands, chunks=(12, 6, 60)),
        resolver.block,
        resolver.halo,
        4,
        len(REFLECTANCE_BANDS),
    )
    assert tiled.numblocks == (1, 1, 3)
    blocked = tiled.compute(scheduler="single-threaded")
    assert np.abs(blocked - whole).max() <= 1e-5  # float rounding of other conv widths
    alone = resolver.block(bands[:, :, :60], (0, 0))  # the first tile without its halo
    assert np.abs(alone - whole[:, :, :240]).max() > 1e-3
