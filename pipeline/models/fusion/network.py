"""DiffFuSR's band-fusion networks in the reference checkpoint's layout.

One ``FusionRRDBNet`` per native-resolution group (10, 20, 60 m) maps the super-resolved RGB
guide plus the bilinearly upsampled LR bands to that group's bands at 2.5 m. ``FusionNetwork``
holds the three under the reference's names and in its registration order (60, 20, 10), so a
reference ``state_dict`` loads strictly. Every tensor here is in the normalised space of
:data:`BAND_STATS`; :func:`normalize` and :func:`denormalize` convert reflectance.
``GroupedFusion`` is what the pipeline needs of the three networks of either generation (the
second: :mod:`pipeline.models.fusion.mtf`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn import functional as F

from pipeline.geo.bands import NATIVE_RATIO, REFLECTANCE_BANDS, RGB_BANDS, SCALE
from pipeline.models.rrdb import RRDB, lrelu

#: Per-band (mean, std) of reflectance used by the reference to normalise LR bands and outputs.
#: The guide's statistics (R, G, B) are the same numbers as B04, B03, B02, so one table serves both.
BAND_STATS: dict[str, tuple[float, float]] = {
    "B01": (0.0769, 0.1708),
    "B02": (0.0906, 0.1672),
    "B03": (0.1162, 0.1614),
    "B04": (0.1318, 0.1677),
    "B05": (0.1619, 0.1698),
    "B06": (0.2275, 0.1513),
    "B07": (0.2500, 0.1490),
    "B08": (0.2588, 0.1515),
    "B8A": (0.2667, 0.1461),
    "B09": (0.2684, 0.2365),
    "B11": (0.2461, 0.1472),
    "B12": (0.1874, 0.1418),
}
#: Fixed by the reference architecture: channel attention squeezes nf → nf / 4.
ATTENTION_REDUCTION = 4
RDB_NAMES = ("RDB1", "RDB2", "RDB3")


def band_stats(bands: Sequence[str] = REFLECTANCE_BANDS) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as float32 [C] tensors for ``bands`` in the given order."""
    mean = torch.tensor([BAND_STATS[b][0] for b in bands], dtype=torch.float32)
    std = torch.tensor([BAND_STATS[b][1] for b in bands], dtype=torch.float32)
    return mean, std


def normalize(x: torch.Tensor, bands: Sequence[str] = REFLECTANCE_BANDS) -> torch.Tensor:
    """Reflectance [B,C,H,W] → network space, channel c being ``bands[c]``.

    The guide is ``normalize(sr_rgb, RGB_BANDS)`` (the de-normalised, unclipped SR output).
    """
    mean, std = (s.to(x.device).view(1, -1, 1, 1) for s in band_stats(bands))
    return (x - mean) / std


def denormalize(y: torch.Tensor, bands: Sequence[str] = REFLECTANCE_BANDS) -> torch.Tensor:
    """Network space → reflectance, the inverse of :func:`normalize`."""
    mean, std = (s.to(y.device).view(1, -1, 1, 1) for s in band_stats(bands))
    return y * std + mean


def upsample(x: torch.Tensor, factor: int = SCALE) -> torch.Tensor:
    """Bilinear resize, half-pixel centres, no antialias, each channel on its own.

    The reference resizes band by band; one multi-channel call takes another CPU kernel
    path that rounds differently (≈2e-7), so channels are folded into the batch.
    """
    b, c, h, w = x.shape
    up = F.interpolate(
        x.reshape(b * c, 1, h, w), scale_factor=factor, mode="bilinear", align_corners=False
    )
    return up.reshape(b, c, h * factor, w * factor)


class ChannelAttention(nn.Module):
    """CBAM channel gate: x · σ(M(avgpool x) + M(maxpool x)), M = fc2 ∘ ReLU ∘ fc1."""

    def __init__(self, features: int, reduction: int = ATTENTION_REDUCTION) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(features, features // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(features // reduction, features, 1, bias=False)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self._mlp(F.adaptive_avg_pool2d(x, 1))
        peak = self._mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + peak)


class SpatialAttention(nn.Module):
    """CBAM spatial gate: x · σ(conv7×7([channel mean, channel max]))."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv1(pooled))


def _trunk(features: int, blocks: int, growth: int) -> nn.Sequential:
    return nn.Sequential(*(RRDB(features, growth, names=RDB_NAMES) for _ in range(blocks)))


class FusionRRDBNet(nn.Module):
    """Two-branch RRDB fusion of the RGB guide and MS bands, all at the output grid.

    Attributes are declared in the reference's order so ``state_dict`` keys come out in
    the same order as its checkpoints.
    """

    def __init__(
        self,
        rgb_channels: int,
        ms_channels: int,
        out_channels: int,
        features: int = 64,
        blocks: int = 5,
        growth: int = 32,
    ) -> None:
        super().__init__()
        self.ms_channel_attention = ChannelAttention(features)
        self.rgb_channel_attention = ChannelAttention(features)
        self.spatial_attention_rgb = SpatialAttention()
        self.spatial_attention_ms = SpatialAttention()
        self.rgb_conv_first = nn.Conv2d(rgb_channels, features, 3, 1, 1)
        self.rgb_rrdb = _trunk(features, blocks, growth)
        self.ms_conv_first = nn.Conv2d(ms_channels, features, 3, 1, 1)
        self.ms_rrdb = _trunk(features, blocks, growth)
        self.fusion_conv = nn.Conv2d(2 * features, features, 3, 1, 1)
        self.fusion_rrdb = _trunk(features, blocks, growth)
        # The reference resizes by ×1 (nearest) before each: an identity, so omitted.
        self.upconv1 = nn.Conv2d(features, features, 3, 1, 1)
        self.upconv2 = nn.Conv2d(features, features, 3, 1, 1)
        self.HRconv = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, 1, 1)
        # Regularises the guide branch only, so the net cannot lean on RGB texture alone.
        self.rgb_dropout = nn.Dropout(0.2)

    def forward(self, rgb: torch.Tensor, ms: torch.Tensor) -> torch.Tensor:
        r = self.rgb_rrdb(lrelu(self.rgb_conv_first(rgb)))
        r = self.spatial_attention_rgb(self.rgb_channel_attention(self.rgb_dropout(r)))
        m = self.ms_rrdb(lrelu(self.ms_conv_first(ms)))
        m = self.spatial_attention_ms(self.ms_channel_attention(m))
        u = self.fusion_rrdb(lrelu(self.fusion_conv(torch.cat([m, r], 1))))  # MS first
        u = lrelu(self.upconv2(lrelu(self.upconv1(u))))
        return self.conv_last(lrelu(self.HRconv(u)))


#: Bands of each group, in the order the networks read and write them.
_P = ("B04", "B03", "B02", "B08")  # 10 m: Red, Green, Blue, NIR
_Q = ("B05", "B06", "B07", "B8A", "B11", "B12")  # 20 m: RE1..RE3, RE4, SWIR1, SWIR2
_S = ("B01", "B09")  # 60 m: coastal aerosol, water vapour


@dataclass(frozen=True)
class FusionGroup:
    """One fusion sub-network: what it reads and what it predicts."""

    name: str  # submodule name / checkpoint prefix
    resolution: int  # native ground sampling distance of its output bands, metres
    outputs: tuple[str, ...]  # predicted bands, in network output order
    inputs: tuple[str, ...]  # LR bands of its MS input, in channel order

    @property
    def own_inputs(self) -> list[int]:
        """Channels of the MS input that hold the group's own output bands, in output order."""
        return [self.inputs.index(b) for b in self.outputs]

    @property
    def ratio_10m(self) -> int:
        """Native pixel size relative to 10 m (1, 2, 6)."""
        return NATIVE_RATIO[self.outputs[0]]

    @property
    def ratio_2p5m(self) -> int:
        """Native pixel size relative to the 2.5 m output (4, 8, 24): training's upsampling."""
        return SCALE * self.ratio_10m


#: In the reference's registration (and state_dict) order.
FUSION_GROUPS: tuple[FusionGroup, ...] = (
    FusionGroup("rrdb_block_60_fusion", 60, _S, _P + _Q + _S),
    FusionGroup("rrdb_block_20_fusion", 20, _Q, _P + _Q),
    FusionGroup("rrdb_block_10_fusion", 10, _P, _P),
)
GROUPS_BY_NAME: dict[str, FusionGroup] = {g.name: g for g in FUSION_GROUPS}
#: The same groups from the finest to the coarsest (10, 20, 60 m).
FUSION_GROUPS_BY_RESOLUTION: dict[int, FusionGroup] = {
    g.resolution: g for g in sorted(FUSION_GROUPS, key=lambda g: g.resolution)
}


class GroupedFusion(nn.Module, ABC):
    """The three group networks of either generation, under the reference's names.

    A subclass builds the groups and says which LR bands each group reads; the pipeline uses
    only what is defined here. Inputs and outputs are normalised (see :func:`normalize`).
    """

    #: 1: RRDB two-branch networks (``FusionRRDBNet``); 2: MTF-guided detail injection.
    generation: ClassVar[int]
    features: int
    blocks: int
    growth: int

    @classmethod
    @abstractmethod
    def ms_bands(cls, name: str) -> tuple[str, ...]:
        """The LR bands of a group's MS input, in channel order."""

    @classmethod
    def ms_input(cls, name: str, lr_up: torch.Tensor) -> torch.Tensor:
        """A group's MS input picked from upsampled 12-band LR in ``REFLECTANCE_BANDS`` order."""
        return lr_up[:, [REFLECTANCE_BANDS.index(b) for b in cls.ms_bands(name)]]

    @abstractmethod
    def group_forward(self, name: str, guide: torch.Tensor, ms: torch.Tensor) -> torch.Tensor:
        """One group alone: guide [B,3,H,W] and its MS input → its bands [B,C,H,W]."""

    def config(self) -> dict[str, Any]:
        """The settings a weight file records, the generation among them."""
        return {
            "generation": self.generation,
            "features": self.features,
            "blocks": self.blocks,
            "growth": self.growth,
        }

    def forward(self, lr: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """12 normalised LR bands [B,12,h,w] + guide [B,3,4h,4w] → 12 bands [B,12,4h,4w].

        All bands share the LR grid here, so each is upsampled ×4 (the reference inference);
        output channels follow ``REFLECTANCE_BANDS``.
        """
        lr_up = upsample(lr)
        produced: dict[str, torch.Tensor] = {}
        for g in FUSION_GROUPS:
            out = self.group_forward(g.name, guide, self.ms_input(g.name, lr_up))
            produced.update({b: out[:, i] for i, b in enumerate(g.outputs)})
        return torch.stack([produced[b] for b in REFLECTANCE_BANDS], 1)


class FusionNetwork(GroupedFusion):
    """The three group networks; inputs and outputs are normalised (see :func:`normalize`).

    The reference predicts each band outright. With ``residual`` (ours, not the reference's)
    every group predicts a correction added to the bilinear upsampling of its own bands,
    which its MS input already holds, so it starts from bilinear instead of having to learn
    it: far fewer steps reach a useful model. The layout and key names are the same either
    way; the weight file records which (see ``weights.py``).
    """

    generation = 1

    def __init__(
        self, features: int = 64, blocks: int = 5, growth: int = 32, residual: bool = False
    ) -> None:
        super().__init__()
        self.features, self.blocks, self.growth = features, blocks, growth
        self.residual = residual
        for g in FUSION_GROUPS:
            net = FusionRRDBNet(
                len(RGB_BANDS), len(g.inputs), len(g.outputs), features, blocks, growth
            )
            if residual:  # start as bilinear upsampling exactly
                nn.init.zeros_(net.conv_last.weight)
                nn.init.zeros_(net.conv_last.bias)
            self.add_module(g.name, net)

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], residual: bool = False
    ) -> FusionNetwork:
        """Build with the sizes the weights imply (they are not stored) and load strictly."""
        head = f"{FUSION_GROUPS[0].name}.rgb_rrdb."
        features = int(state[f"{FUSION_GROUPS[0].name}.rgb_conv_first.weight"].shape[0])
        growth = int(state[f"{head}0.{RDB_NAMES[0]}.conv1.weight"].shape[0])
        blocks = len({k[len(head) :].split(".", 1)[0] for k in state if k.startswith(head)})
        net = cls(features, blocks, growth, residual)
        net.load_state_dict(state, strict=True)
        return net

    @classmethod
    def ms_bands(cls, name: str) -> tuple[str, ...]:
        return GROUPS_BY_NAME[name].inputs

    def config(self) -> dict[str, Any]:
        return {**super().config(), "residual": self.residual}

    def group(self, name: str) -> FusionRRDBNet:
        return cast(FusionRRDBNet, self.get_submodule(GROUPS_BY_NAME[name].name))

    def group_forward(self, name: str, guide: torch.Tensor, ms: torch.Tensor) -> torch.Tensor:
        """One group alone (groups train separately); ``ms`` is already on the guide's grid."""
        out = self.group(name)(guide, ms)
        if self.residual:
            out = out + ms[:, GROUPS_BY_NAME[name].own_inputs]
        return out
