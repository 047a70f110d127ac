"""Our DiffFuSR fusion networks against the reference implementation's numerical fixture.

Tolerance is the fixture README's (section 7): 1e-5 for single forwards and preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.geo.bands import RGB_BANDS
from pipeline.models.fusion.network import (
    FUSION_GROUPS,
    FusionNetwork,
    denormalize,
    normalize,
    upsample,
)

FIXTURES = Path(__file__).parent / "fixtures" / "difffusr"
SINGLE = 1e-5
#: Fixture tensor prefix of each group.
SHORT = {
    "rrdb_block_10_fusion": "g10",
    "rrdb_block_20_fusion": "g20",
    "rrdb_block_60_fusion": "g60",
}


#: One torch thread: the reference fixtures were made that way, and CPU kernels round alike.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    return torch.load(FIXTURES / "fusion_small.ckpt", weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "fusion_small_io.safetensors")


@pytest.fixture(scope="module")
def net(checkpoint: dict) -> FusionNetwork:
    return FusionNetwork.from_state_dict(checkpoint["state_dict"]).eval()


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


def test_paper_configuration_has_exactly_the_reference_keys_and_shapes() -> None:
    listing = json.loads((FIXTURES / "fusion_large_keys.json").read_text())
    with torch.device("meta"):
        net = FusionNetwork()  # our defaults are the paper's
    ours = [
        (k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()
    ]
    assert ours == [(e["key"], e["shape"], e["dtype"]) for e in listing["keys"]]  # order too
    assert sum(v.numel() for v in net.state_dict().values()) == listing["total_elements"]
    expected = {
        "rrdb_block_10_fusion": 10_986_696,
        "rrdb_block_20_fusion": 10_991_306,
        "rrdb_block_60_fusion": 10_990_150,
    }
    for g in FUSION_GROUPS:
        sub = net.group(g.name)
        assert sum(p.numel() for p in sub.parameters()) == expected[g.name]
        assert len(sub.state_dict()) == 470
        info = listing["groups"][g.name]
        assert (info["ms_in_nc"], info["out_nc"]) == (len(g.inputs), len(g.outputs))
        assert info["parameters"] == expected[g.name]


def test_groups_describe_the_paper_bands() -> None:
    assert [g.name for g in FUSION_GROUPS] == [
        "rrdb_block_60_fusion",
        "rrdb_block_20_fusion",
        "rrdb_block_10_fusion",
    ]
    assert [(g.ratio_10m, g.ratio_2p5m) for g in FUSION_GROUPS] == [(6, 24), (2, 8), (1, 4)]
    outputs = sorted(b for g in FUSION_GROUPS for b in g.outputs)
    assert outputs == sorted(
        ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    )


def test_small_checkpoint_loads_strictly_and_infers_its_sizes(
    checkpoint: dict, net: FusionNetwork
) -> None:
    assert (net.features, net.blocks, net.growth) == (8, 2, 4)
    config = json.loads((FIXTURES / "fusion_small_config.json").read_text())
    for name, sizes in config["groups"].items():
        assert (sizes["nf"], sizes["nb"], sizes["gc"]) == (8, 2, 4)
        assert sizes["ms_in_nc"] == net.group(name).ms_conv_first.in_channels
    assert list(net.state_dict()) == list(checkpoint["state_dict"])
    assert len(checkpoint["state_dict"]) == 600


def test_preprocessing(io: dict) -> None:
    lr = normalize(io["lr12_reflectance"])
    assert _max_diff(lr, io["lr12_normalized"]) <= SINGLE
    guide = normalize(io["sr_rgb_reflectance"], RGB_BANDS)
    assert _max_diff(guide, io["guide_rgb_in"]) <= SINGLE
    lr_up = upsample(io["lr12_normalized"])
    for g in FUSION_GROUPS:
        ms = FusionNetwork.ms_input(g.name, lr_up)
        assert _max_diff(ms, io[f"{SHORT[g.name]}_ms_in"]) <= SINGLE, g.name


def test_each_group_output(net: FusionNetwork, io: dict) -> None:
    with torch.inference_mode():
        for g in FUSION_GROUPS:
            short = SHORT[g.name]
            out = net.group_forward(g.name, io["guide_rgb_in"], io[f"{short}_ms_in"])
            assert _max_diff(out, io[f"{short}_out"]) <= SINGLE, g.name


def test_whole_fusion_from_reflectance(net: FusionNetwork, io: dict) -> None:
    with torch.inference_mode():
        lr = normalize(io["lr12_reflectance"])
        guide = normalize(io["sr_rgb_reflectance"], RGB_BANDS)
        fused = denormalize(net(lr, guide))
    assert _max_diff(fused, io["fused12_reflectance"]) <= SINGLE


def test_guide_dropout_acts_only_in_training(checkpoint: dict, io: dict) -> None:
    sub = FusionNetwork.from_state_dict(checkpoint["state_dict"]).group("rrdb_block_10_fusion")
    assert [m.p for m in sub.modules() if isinstance(m, torch.nn.Dropout)] == [0.2]
    with torch.inference_mode():
        torch.manual_seed(0)
        trained = sub.train()(io["guide_rgb_in"], io["g10_ms_in"])
        evaluated = sub.eval()(io["guide_rgb_in"], io["g10_ms_in"])
    assert _max_diff(evaluated, io["g10_out"]) <= SINGLE
    assert _max_diff(trained, io["g10_out"]) > 1e-3
