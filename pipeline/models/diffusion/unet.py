"""The denoising U-Net of DiffFuSR (SR3-style, x0-prediction), with degradation-aware convs.

It works on the HR image folded 2×2 into channels (pixel folding), conditioned on the noise
level γ (sinusoidal embedding, added in every residual block), on the spatial context of the
RRDB encoder (resized and concatenated at the input) and on the degradation embedding, which
generates per-sample depthwise kernels inside every residual block. Module names follow the
reference checkpoint layout so that published weights load with strict key matching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

NORM_GROUPS = 32
CONTEXT_CHANNELS = 64
DEGRADATION_CHANNELS = 256
COMPRESSED = 64


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the U-Net; defaults are the paper configuration."""

    in_channel: int = 3
    out_channel: int = 3
    inner_channel: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 4, 8)
    res_blocks: int = 5
    attn_strides: tuple[int, ...] = (16,)
    #: Recorded for checkpoint compatibility; the reference's dropout sits in the discarded
    #: half of each residual block, so it never acts.
    dropout: float = 0.0
    fold: int = 2

    @property
    def multiple(self) -> int:
        """HR sizes must be divisible by this."""
        return self.fold * 2 ** (len(self.channel_mults) - 1)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swish(x)


class NoiseEmbedding(nn.Module):
    """Sinusoidal features of the continuous noise level γ, sines first."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        count = self.dim // 2
        step = torch.arange(count, dtype=gamma.dtype, device=gamma.device) / count
        angle = gamma.unsqueeze(-1) * torch.exp(-math.log(1e4) * step)
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class Block(nn.Module):
    """GroupNorm → Swish → 3×3 conv, at the reference's indices 0, 1 and 3."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(NORM_GROUPS, dim),
            Swish(),
            nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class NoiseShift(nn.Module):
    """Adds a per-channel projection of the noise embedding (no scale term)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.noise_func = nn.Sequential(nn.Linear(dim, dim_out))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return x + self.noise_func(temb).view(x.shape[0], -1, 1, 1)


class DegradationAwareConv(nn.Module):
    """LeakyReLU(depthwise conv with kernels generated from the degradation) + a plain conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.kernel = nn.Sequential(
            nn.Linear(COMPRESSED, COMPRESSED, bias=False),
            nn.LeakyReLU(0.1),
            nn.Linear(COMPRESSED, 9 * channels, bias=False),
        )
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        kernels = self.kernel(degradation).view(b * c, 1, 3, 3)
        depthwise = F.conv2d(x.reshape(1, b * c, h, w), kernels, padding=1, groups=b * c)
        return F.leaky_relu(depthwise.view(b, c, h, w), 0.1) + self.conv(x)


class DegradationBlock(nn.Module):
    """The second half of a residual block.

    The reference builds a GroupNorm+Swish here whose output it discards; the norm is kept as a
    parameter holder (``block.0``) so checkpoints load, and is not evaluated.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(NORM_GROUPS, channels))
        self.da_conv = DegradationAwareConv(channels)

    def forward(self, x: torch.Tensor, degradation: torch.Tensor) -> torch.Tensor:
        return self.da_conv(x, degradation)


class ResBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, noise_dim: int) -> None:
        super().__init__()
        self.noise_func = NoiseShift(noise_dim, dim_out)
        self.block1 = Block(dim, dim_out)
        self.block2 = DegradationBlock(dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor, degradation: torch.Tensor):
        h = self.noise_func(self.block1(x), temb)
        return self.block2(h, degradation) + self.res_conv(x)


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions, residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(NORM_GROUPS, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
        attended = (v @ weights.transpose(1, 2)).view(b, c, h, w)
        return self.out(attended) + x


class ResAttnBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, noise_dim: int, with_attn: bool) -> None:
        super().__init__()
        self.res_block = ResBlock(dim, dim_out, noise_dim)
        self.attn = SelfAttention(dim_out) if with_attn else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, degradation: torch.Tensor):
        x = self.res_block(x, temb, degradation)
        return self.attn(x) if self.attn is not None else x


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class DiffusionUNet(nn.Module):
    """x0-predicting U-Net: (x_t [B,3,H,W], γ [B,1], context [B,64,h,w], degradation [B,256])."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = cfg = config
        c, fold2 = cfg.inner_channel, cfg.fold**2
        self.noise_level_mlp = nn.Sequential(
            NoiseEmbedding(c), nn.Linear(c, c * 4), Swish(), nn.Linear(c * 4, c)
        )
        self.compress = nn.Sequential(
            nn.Linear(DEGRADATION_CHANNELS, COMPRESSED, bias=False), nn.LeakyReLU(0.1)
        )
        self.first_conv_x = nn.Conv2d(cfg.in_channel * fold2, c, 3, padding=1)
        self.first_conv_ctx = nn.Conv2d(CONTEXT_CHANNELS, c, 3, padding=1)

        def block(dim: int, dim_out: int, level: int, attn: bool | None = None) -> ResAttnBlock:
            with_attn = 2**level in cfg.attn_strides if attn is None else attn
            return ResAttnBlock(dim, dim_out, c, with_attn)

        downs: list[nn.Module] = [nn.Conv2d(2 * c, c, 3, padding=1)]
        skips, channels = [c], c
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.res_blocks):
                downs.append(block(channels, c * mult, level))
                channels = c * mult
                skips.append(channels)
            if level < len(cfg.channel_mults) - 1:
                downs.append(Downsample(channels))
                skips.append(channels)
        self.downs = nn.ModuleList(downs)
        deepest = len(cfg.channel_mults) - 1
        self.mid = nn.ModuleList(
            [block(channels, channels, deepest, True), block(channels, channels, deepest, False)]
        )
        ups: list[nn.Module] = []
        for level in reversed(range(len(cfg.channel_mults))):
            for _ in range(cfg.res_blocks + 1):
                ups.append(block(channels + skips.pop(), c * cfg.channel_mults[level], level))
                channels = c * cfg.channel_mults[level]
            if level > 0:
                ups.append(Upsample(channels))
        self.ups = nn.ModuleList(ups)
        self.final_conv = Block(channels, cfg.out_channel * fold2)

    def forward(
        self,
        x: torch.Tensor,
        gamma: torch.Tensor,
        context: torch.Tensor,
        degradation: torch.Tensor,
    ) -> torch.Tensor:
        fold = self.config.fold
        folded = F.pixel_unshuffle(x, fold)
        ctx = F.interpolate(context, size=folded.shape[-2:], mode="bilinear", align_corners=False)
        h = torch.cat([self.first_conv_x(folded), self.first_conv_ctx(ctx)], dim=1)
        deg = self.compress(degradation)
        temb = self.noise_level_mlp(gamma.view(x.shape[0], -1)[:, :1]).view(x.shape[0], -1)

        stack = []
        for layer in self.downs:
            h = layer(h, temb, deg) if isinstance(layer, ResAttnBlock) else layer(h)
            stack.append(h)
        for layer in self.mid:
            h = layer(h, temb, deg)
        for layer in self.ups:
            if isinstance(layer, ResAttnBlock):
                h = layer(torch.cat([h, stack.pop()], dim=1), temb, deg)
            else:
                h = layer(h)
        return F.pixel_shuffle(self.final_conv(h), fold)
