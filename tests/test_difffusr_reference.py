"""Our DiffFuSR RGB model against the reference implementation's numerical fixture.

Tolerances are the fixture README's (section 7): 1e-5 for single forwards and preprocessing,
1e-4 for the 20-step sample, ±1 on a few dozen uint8 values at most.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.models.diffusion.network import DiffFuSR, DiffFuSRConfig
from pipeline.models.diffusion.sampler import ddim_timesteps
from pipeline.models.diffusion.schedule import NoiseSchedule

FIXTURES = Path(__file__).parent / "fixtures" / "difffusr"
SINGLE, SAMPLED = 1e-5, 1e-4


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    return torch.load(FIXTURES / "sr_small.ckpt", weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / "sr_small_io.safetensors")


def _build(checkpoint: dict, training: bool = False) -> DiffFuSR:
    config = DiffFuSRConfig.from_lit_args(checkpoint["hyper_parameters"]["lit_model"]["args"])
    net = DiffFuSR(config, training=training).eval()
    net.load_weights(checkpoint["state_dict"])
    return net


@pytest.fixture(scope="module")
def net(checkpoint: dict) -> DiffFuSR:
    return _build(checkpoint)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a.double() - b.double()).abs().max().item()


def test_paper_configuration_has_exactly_the_reference_keys_and_shapes() -> None:
    listing = json.loads((FIXTURES / "sr_large_keys.json").read_text())
    config = DiffFuSRConfig.from_lit_args(listing["lit_model_args"])
    assert config == DiffFuSRConfig()  # our defaults are the paper's
    with torch.device("meta"):
        net = DiffFuSR(config, training=True)
    ours = {
        k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in net.state_dict().items()
    }
    reference = {e["key"]: (e["shape"], e["dtype"]) for e in listing["keys"]}
    assert ours == reference
    assert sum(v.numel() for v in net.state_dict().values()) == listing["total_elements"]


def test_small_checkpoint_loads_with_strict_matching(checkpoint: dict) -> None:
    full = _build(checkpoint, training=True)
    full.load_state_dict(checkpoint["state_dict"], strict=True)


def test_schedule_buffers_equal_the_checkpoint(checkpoint: dict) -> None:
    for name, value in NoiseSchedule().named_buffers():
        assert torch.equal(value, checkpoint["state_dict"][f"diffusion.{name}"]), name


def test_encoders(net: DiffFuSR, io: dict) -> None:
    with torch.inference_mode():
        x = net.normalize(io["lr_input"])
        context, degradation = net.condition(x)
    assert _max_diff(x, io["lr_normalized"]) <= SINGLE
    assert _max_diff(context, io["ctx"]) <= SINGLE
    assert _max_diff(degradation, io["deg_embedding"]) <= SINGLE


def test_training_parts_match_the_reference_diagnostics(checkpoint: dict, io: dict) -> None:
    full = _build(checkpoint, training=True)
    with torch.inference_mode():
        x = io["lr_normalized"]
        assert _max_diff(full.encoder(x), io["encoder_sr_output_unused"]) <= SINGLE
        assert _max_diff(full.E.encoder_q(x)[1], io["deg_mlp_q_unused"]) <= SINGLE
        assert _max_diff(full.E.encoder_k(x)[0], io["deg_embedding_encoder_k_unused"]) <= SINGLE
        out = full.model(io["unet_x_t"], io["unet_noise_level"], io["ctx"], io["deg_embedding"])
    assert _max_diff(out, io["unet_out_model"]) <= SINGLE


def test_single_unet_forward_and_intermediates(net: DiffFuSR, io: dict) -> None:
    seen: dict[str, torch.Tensor] = {}
    unet = net.ema
    hooks = [
        unet.first_conv_x.register_forward_hook(lambda m, a, o: seen.update(folded=a[0])),
        unet.first_conv_ctx.register_forward_hook(lambda m, a, o: seen.update(ctx=a[0])),
        unet.compress.register_forward_hook(lambda m, a, o: seen.update(deg=o)),
        unet.noise_level_mlp.register_forward_hook(lambda m, a, o: seen.update(emb=o)),
        unet.final_conv.register_forward_hook(lambda m, a, o: seen.update(final=o)),
    ]
    with torch.inference_mode():
        out = unet(io["unet_x_t"], io["unet_noise_level"], io["ctx"], io["deg_embedding"])
    for h in hooks:
        h.remove()
    assert _max_diff(out, io["unet_out_ema"]) <= SINGLE
    assert _max_diff(seen["folded"], io["unet_ema_x_folded"]) <= SINGLE
    assert _max_diff(seen["ctx"][:, :8], io["unet_ema_ctx_resized_first8ch"]) <= SINGLE
    assert _max_diff(seen["deg"], io["unet_ema_compressed_deg"]) <= SINGLE
    emb = io["unet_ema_noise_embedding"]
    assert _max_diff(seen["emb"].reshape(emb.shape), emb) <= SINGLE
    assert _max_diff(seen["final"], io["unet_ema_final_conv_folded"]) <= SINGLE


def test_ddim_walks_the_reference_timesteps(net: DiffFuSR, io: dict) -> None:
    pairs = ddim_timesteps(1000, 20)
    assert [t for t, _ in pairs] == io["ddim_t"].long().tolist()
    assert [p for _, p in pairs] == io["ddim_t_prev"].long().tolist()
    levels = torch.stack([net.diffusion.sqrt_alphas_cumprod[t] for t, _ in pairs])
    assert torch.equal(levels, io["ddim_noise_level_per_step"].reshape(levels.shape))


def test_twenty_step_sample(net: DiffFuSR, io: dict) -> None:
    with torch.inference_mode():
        context, degradation = net.condition(net.normalize(io["lr_input"]))
        out = net.sample(context, degradation, io["x_T"], steps=20)
    assert _max_diff(out, io["sr_final_network_space"]) <= SAMPLED
    sr = net.denormalize(out)
    assert _max_diff(sr, io["sr_final_denormalized"]) <= SAMPLED
    uint8 = torch.round(torch.clip(255 * sr, 0, 255)).to(torch.uint8).permute(0, 2, 3, 1)
    diff = (uint8.int() - io["sr_final_uint8_hwc"].int()).abs()
    assert diff.max() <= 1 and int((diff > 0).sum()) <= 36


def test_sample_trajectory(net: DiffFuSR, io: dict) -> None:
    """Every step's input state and raw network output, on the fixture's crop."""
    states, raw = [], []
    unet = net.ema

    def record(module, args, output):  # noqa: ARG001
        states.append(args[0][:, :, 48:80, 48:80].clone())
        raw.append(output[:, :, 48:80, 48:80].clone())

    hook = unet.register_forward_hook(record)
    with torch.inference_mode():
        context, degradation = net.condition(net.normalize(io["lr_input"]))
        net.sample(context, degradation, io["x_T"], steps=20)
    hook.remove()
    assert _max_diff(torch.cat(states), io["ddim_x_t_per_step_crop"]) <= SAMPLED
    assert _max_diff(torch.cat(raw), io["ddim_unet_raw_out_per_step_crop"]) <= SAMPLED
