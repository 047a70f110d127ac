"""DDIM sampling with x0-prediction, written as the reference evaluates it in float32.

The update uses the checkpoint's float32 schedule buffers literally (ε from
``sqrt_recip_alphas_cumprod`` and ``sqrt_recipm1_alphas_cumprod``, √ᾱ' computed at run time),
which is what reproduces the reference to float32 rounding, including its last t = 0 → 0 step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pipeline.models.diffusion.schedule import NoiseSchedule

#: x0 prediction of the network for (x_t, γ as [B,1]).
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Fresh N(0,1) noise of x's shape for step k (used only when eta > 0).
StepNoise = Callable[[int], torch.Tensor]


def ddim_timesteps(timesteps: int, steps: int) -> list[tuple[int, int]]:
    """(t, t_prev) pairs walked by the sampler: t = T−skip … 0, the last step being 0 → 0."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be between 1 and {timesteps}, got {steps}")
    skip = timesteps // steps
    seq = list(range(0, timesteps, skip))[:steps]
    prev = [0, *seq[:-1]]
    return list(zip(reversed(seq), reversed(prev), strict=True))


@torch.inference_mode()
def ddim_sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    steps: int = 20,
    eta: float = 0.0,
    step_noise: StepNoise | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """Run the reverse process from ``x_t`` (noise at t = T) to an x0 sample, network space."""
    return ddim_chain(denoise, schedule, x_t, steps, eta, step_noise, clip)


def ddim_chain(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    steps: int = 20,
    eta: float = 0.0,
    step_noise: StepNoise | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """:func:`ddim_sample` in the caller's autograd mode: differentiable when the denoiser's
    inputs require gradients (what an attribution of the sample to its input needs)."""
    if eta and step_noise is None:
        raise ValueError("eta > 0 needs a step_noise source")
    s = schedule
    x = x_t
    for k, (t, t_prev) in enumerate(ddim_timesteps(s.timesteps, steps)):
        gamma = s.sqrt_alphas_cumprod[t].expand(x.shape[0], 1).to(x.dtype)
        x0 = denoise(x, gamma).to(x.dtype)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        eps = (s.sqrt_recip_alphas_cumprod[t] * x - x0) / s.sqrt_recipm1_alphas_cumprod[t]
        a, a_prev = s.alphas_cumprod[t], s.alphas_cumprod[t_prev]
        sigma = eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)
        x = x0 * torch.sqrt(a_prev) + torch.sqrt(1 - a_prev - sigma**2) * eps
        if eta and t != 0:
            x = x + sigma * step_noise(k)
    return x
