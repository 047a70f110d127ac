"""Residual-in-residual dense blocks (ESRGAN), shared by the spatial encoder and the fusion nets.

The two reference networks name the three dense blocks of an RRDB differently (``rdb1`` in the
spatial encoder, ``RDB1`` in the fusion networks); ``names`` keeps both checkpoint layouts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


def lrelu(x: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    return F.leaky_relu(x, slope)


class ResidualDenseBlock(nn.Module):
    """Five 3×3 convs, each seeing the block input and every earlier output; residual ×0.2."""

    def __init__(self, features: int = 64, growth: int = 32) -> None:
        super().__init__()
        for i in range(4):
            setattr(self, f"conv{i + 1}", nn.Conv2d(features + i * growth, growth, 3, 1, 1))
        self.conv5 = nn.Conv2d(features + 4 * growth, features, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(lrelu(conv(torch.cat(feats, 1))))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks in sequence with an outer residual scaled by 0.2."""

    def __init__(
        self,
        features: int = 64,
        growth: int = 32,
        names: tuple[str, str, str] = ("rdb1", "rdb2", "rdb3"),
    ) -> None:
        super().__init__()
        self._names = names
        for name in names:
            setattr(self, name, ResidualDenseBlock(features, growth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled() and not self.training:
            # an attribution through a trained network: keep only the block's input and
            # compute its dense activations again for the backward pass, so that a
            # paper-size fusion over a 2.5 m region fits a CPU's memory (training keeps them)
            return checkpoint(self._blocks, x, use_reentrant=False)
        return self._blocks(x)

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self._names:
            out = getattr(self, name)(out)
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """The ESRGAN ×4 network; its trunk features are DiffFuSR's spatial context.

    ``context`` is what the diffusion U-Net consumes; ``forward`` adds the ×4 reconstruction
    head, used only by the auxiliary L1 loss in training.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        features: int = 64,
        blocks: int = 23,
        growth: int = 32,
    ) -> None:
        super().__init__()
        self.conv_first = nn.Conv2d(in_channels, features, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_hr = nn.Conv2d(features, features, 3, 1, 1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, 1, 1)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv_first(x)
        return first + self.conv_body(self.body(first))

    def reconstruct(self, context: torch.Tensor) -> torch.Tensor:
        feat = lrelu(self.conv_up1(F.interpolate(context, scale_factor=2, mode="nearest")))
        feat = lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(lrelu(self.conv_hr(feat)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(self.context(x))
