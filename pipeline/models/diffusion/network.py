"""The whole DiffFuSR RGB model in the reference LightningModule's layout.

Submodules carry the checkpoint prefixes: ``ema`` (the EMA U-Net used for sampling), ``model``
(the trained U-Net, training only), ``encoder`` (RRDB spatial encoder), ``E`` (contrastive
degradation encoder) and ``diffusion`` (schedule buffers). Built for inference, it holds only
what sampling reads, so a paper-size model costs 0.6 GB less memory.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from pipeline.models.diffusion.degradation_encoder import MoCo, QueryEncoder
from pipeline.models.diffusion.sampler import StepNoise, ddim_sample
from pipeline.models.diffusion.schedule import TIMESTEPS, NoiseSchedule
from pipeline.models.diffusion.unet import DiffusionUNet, UNetConfig
from pipeline.models.rrdb import RRDBNet

#: Network-space normalisation of reflectance: (x − 0.5) / 0.5.
MEAN = STD = 0.5
#: Keys of the encoder's ×4 head: trained by the auxiliary loss, never read at inference.
ENCODER_HEAD = ("encoder.conv_up1.", "encoder.conv_up2.", "encoder.conv_hr.", "encoder.conv_last.")


@dataclass(frozen=True)
class DiffFuSRConfig:
    """Network sizes; defaults are the paper's (``blindsrsnf_aniso_naip_degraded_harm_large``)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    encoder_features: int = 64
    encoder_blocks: int = 23
    timesteps: int = TIMESTEPS
    scale: int = 4

    @classmethod
    def from_lit_args(cls, args: Mapping[str, Any]) -> DiffFuSRConfig:
        """From the reference's ``lit_model.args`` (a checkpoint's hyper-parameters)."""
        unet = dict(args["diffusion_model"]["args"])
        for key in ("channel_mults", "attn_strides"):
            unet[key] = tuple(unet[key])
        enc = args["encoder"]["args"]
        if enc.get("num_feat", 64) != 64:
            raise ValueError("the spatial encoder must have 64 features (the U-Net expects 64)")
        diffusion = args.get("diffusion", {})
        if (
            diffusion.get("beta_type", "cosine") != "cosine"
            or diffusion.get("model_mean_type", "xstart") != "xstart"
        ):
            raise ValueError("only the cosine schedule with x0-prediction is supported")
        return cls(
            unet=UNetConfig(**unet),
            encoder_blocks=int(enc["num_block"]),
            timesteps=int(diffusion.get("n_timestep", TIMESTEPS)),
            scale=int(args.get("scale", 4)),
        )

    def to_lit_args(self) -> dict[str, Any]:
        """The inverse of :meth:`from_lit_args`, for weight files we write."""
        unet = asdict(self.unet)
        for key in ("channel_mults", "attn_strides"):
            unet[key] = list(unet[key])
        return {
            "scale": self.scale,
            "mean": [MEAN] * 3,
            "std": [STD] * 3,
            "encoder": {
                "name": "RRDBNet",
                "args": {
                    "scale": self.scale,
                    "num_in_ch": 3,
                    "num_out_ch": 3,
                    "num_feat": self.encoder_features,
                    "num_block": self.encoder_blocks,
                },
            },
            "diffusion_model": {"name": "DiffUNetSR3Atom", "args": unet},
            "diffusion": {
                "beta_type": "cosine",
                "n_timestep": self.timesteps,
                "model_mean_type": "xstart",
                "t_encode_mode": "continuous",
            },
        }


class DiffFuSR(nn.Module):
    def __init__(self, config: DiffFuSRConfig = DiffFuSRConfig(), training: bool = False) -> None:
        super().__init__()
        self.config = config
        self.encoder = RRDBNet(features=config.encoder_features, blocks=config.encoder_blocks)
        self.ema = DiffusionUNet(config.unet)
        if training:
            self.model = DiffusionUNet(config.unet)
            self.ema.load_state_dict(self.model.state_dict())
            self.ema.requires_grad_(False)
            self.E: QueryEncoder = MoCo()
        else:
            self.E = QueryEncoder()
        self.diffusion = NoiseSchedule(config.timesteps)

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a checkpoint's state dict, requiring every key this module has (strict shapes).

        Keys the module does not hold (training-only parts) are ignored, and so is the
        encoder's ×4 head, which inference never reads and compact weight files may omit.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state and not k.startswith(ENCODER_HEAD)]
        if missing:
            raise ValueError(
                f"the weights lack {len(missing)} keys of this model, e.g. {missing[0]}"
            )
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if wrong:
            k = wrong[0]
            raise ValueError(
                f"weights do not fit this configuration: {k} is {tuple(state[k].shape)}, "
                f"expected {tuple(own[k].shape)}"
            )
        self.load_state_dict({k: state[k] for k in own if k in state}, strict=False)

    @staticmethod
    def normalize(reflectance: torch.Tensor) -> torch.Tensor:
        return (reflectance - MEAN) / STD

    @staticmethod
    def denormalize(x: torch.Tensor) -> torch.Tensor:
        return x * STD + MEAN

    def condition(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(spatial context [B,64,h,w], degradation embedding [B,256]) of normalised LR input."""
        return self.encoder.context(lr), self.E.embed(lr)

    def sample(
        self,
        context: torch.Tensor,
        degradation: torch.Tensor,
        x_t: torch.Tensor,
        steps: int = 20,
        eta: float = 0.0,
        step_noise: StepNoise | None = None,
    ) -> torch.Tensor:
        """DDIM from initial noise ``x_t`` with the EMA U-Net; network space, not clipped."""

        def denoise(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
            return self.ema(x, gamma, context, degradation)

        return ddim_sample(denoise, self.diffusion, x_t, steps, eta, step_noise)

    def training_copy(self) -> DiffFuSR:
        """A copy with the training-only parts, initialised from this model's weights."""
        full = DiffFuSR(self.config, training=True)
        full.load_state_dict(self.state_dict(), strict=False)
        full.model.load_state_dict(copy.deepcopy(self.ema.state_dict()))
        return full
