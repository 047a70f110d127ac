"""The fusion stage's sensor degradation: what a band would look like seen by a sensor with
``ratio``-times-larger pixels. Fusion training degrades its HR proxy with it, and the Wald
evaluation of the fusion stage degrades its reference with it, so both test one protocol."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

#: Gaussian σ of the degradation as a fraction of its ratio r (σ = 0.39 r in the pixels of the
#: band degraded): with the r × r mean this gives a system MTF of 0.30 at the Nyquist
#: frequency of the degraded grid, the sharp end of the MSI specification (0.15 to 0.30). The
#: HR proxy is itself Sentinel-2, already blurred once, hence the sharp end.
BLUR_SIGMA = 0.39


def degradation_taps(ratio: int, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """1-D taps of the blur followed by the ratio-wide mean: a Gaussian of σ = sigma · ratio
    pixels (out to 3σ) convolved with a box of ``ratio`` pixels; just the box when σ is 0."""
    taps = np.full(ratio, 1 / ratio)
    s = sigma * ratio
    if s > 0:
        x = np.arange(-math.ceil(3 * s), math.ceil(3 * s) + 1)
        gaussian = np.exp(-(x**2) / (2 * s**2))
        taps = np.convolve(gaussian / gaussian.sum(), taps)
    return torch.from_numpy(taps).float()


def degrade(x: torch.Tensor, ratio: int, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """[B, C, H, W] → [B, C, H/ratio, W/ratio]: the Gaussian blur of σ = sigma · ratio pixels,
    then the mean of each ratio × ratio block: what a sensor with ratio-times-larger pixels
    would record. Edges are replicated, so a patch needs nothing outside it. One separable
    convolution of stride ``ratio``, which skips the blurred pixels the mean would discard."""
    taps = degradation_taps(ratio, sigma).to(x)
    pad = (len(taps) - ratio) // 2
    b, c, h, w = x.shape
    y = F.pad(x.reshape(b * c, 1, h, w), (pad, pad, pad, pad), mode="replicate")
    y = F.conv2d(y, taps.view(1, 1, 1, -1), stride=(1, ratio))
    y = F.conv2d(y, taps.view(1, 1, -1, 1), stride=(ratio, 1))
    return y.reshape(b, c, h // ratio, w // ratio)
