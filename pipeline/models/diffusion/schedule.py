"""The cosine noise schedule (Nichol & Dhariwal) as the 14 buffers of the reference checkpoint.

Computed in float64 and rounded once to float32, as the reference stores them. Sampling uses
the stored buffers literally, so that results match the reference to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

TIMESTEPS = 1000
COSINE_OFFSET = 0.008
MAX_BETA = 0.999

BUFFERS = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_alphas_cumprod_prev",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def cosine_betas(timesteps: int = TIMESTEPS, s: float = COSINE_OFFSET) -> np.ndarray:
    steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
    alphas_bar = f / f[0]
    return np.minimum(1 - alphas_bar[1:] / alphas_bar[:-1], MAX_BETA)


def schedule_arrays(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Every buffer of the schedule, float64."""
    alphas = 1.0 - betas
    cumprod = np.cumprod(alphas)
    prev = np.append(1.0, cumprod[:-1])
    variance = betas * (1.0 - prev) / (1.0 - cumprod)
    return {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": np.sqrt(cumprod),
        "sqrt_alphas_cumprod_prev": np.sqrt(prev),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / cumprod - 1),
        "posterior_variance": variance,
        "posterior_log_variance_clipped": np.log(np.append(variance[1], variance[1:])),
        "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - prev) * np.sqrt(alphas) / (1.0 - cumprod),
    }


class NoiseSchedule(nn.Module):
    """Holds the schedule buffers (checkpoint prefix ``diffusion.``)."""

    def __init__(self, timesteps: int = TIMESTEPS) -> None:
        super().__init__()
        for name, values in schedule_arrays(cosine_betas(timesteps)).items():
            self.register_buffer(name, torch.from_numpy(values.astype(np.float32)))

    @property
    def timesteps(self) -> int:
        return self.betas.shape[0]
