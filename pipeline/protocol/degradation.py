"""The DiffFuSR training degradation: HR RGB reflectance in [0, 1] -> LR at 1/scale resolution.

The blind SR model learns from synthetic pairs, so this module is the model of what a
Sentinel-2 pixel is. The steps and their order follow the DiffFuSR reference (its NAIP data
loader, then the SRMD/DASR-style degradation of its LightningModule):

1. **Harmonisation** (optional, on the HR patch, which stays the training target):
   ``x ** (1 / gamma)`` per channel. It maps 8-bit camera values (NAIP DN / 255) towards
   Sentinel-2 surface reflectance; leave it off for sources that already are reflectance.
2. **Blur**: one random anisotropic Gaussian kernel (21 x 21) per sample, the same for its
   three channels, reflect padding (as the reference).
3. **Bicubic down** by ``scale``: MATLAB ``imresize`` style (Keys cubic, a = -0.5, kernel
   widened by ``scale`` so it antialiases, edge pixels replicated). This is what the reference
   uses. ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` gives the same
   values inside the image but renormalises the kernel at the borders instead of replicating.
4. **Noise**: Gaussian, sigma drawn per sample uniformly in ``[0, noise_max]``.
5. **Clamp** to [0, 1] and round to ``levels`` steps (the reference rounds to 8 bits).

Where the default numbers come from:

* ``scale`` 4, ``kernel_size`` 21, anisotropic blur, ``lambda_range`` (0.2, 4.0),
  ``sigma_range`` (2.0, 4.0), noise 25 (on a 0..255 scale, so ``noise_max`` = 25/255): the
  reference config ``blindsrsnf_aniso_naip_degraded_harm_large.yaml``. The lambdas are the
  standard deviations (pixels) along the kernel's two principal axes; the sigmas are used only
  by the isotropic blur. The isotropic sigma 1.2, no noise of ``VALIDATION`` is its ``valid`` block.
* Rotation: the reference documents an angle uniform in [0, pi), but its code divides a U(0, 1)
  draw by 180 before converting degrees to radians, so its kernels turn by less than 1 degree.
  The default here is the documented intent (``rotation_max_deg`` = 180); set it to 1.0 to
  reproduce the reference's kernels.
* ``levels`` 255: the reference rounds the LR image to integers on its 0..255 scale.
* Gamma profile: the "statistical" model of ESA's opensr-degradation package fits a
  multivariate Gaussian to the best per-band gammas between NAIP and Sentinel-2. Its mean and
  covariance below (R, G, B block) are the values in that package's public code; DiffFuSR's
  loader adds +0.02 (red) and +0.01 (green) to that mean and uses the 50th percentile of each
  marginal, i.e. the mean (up to sampling noise), for every image (``gamma_random`` False).
  These numbers come from the public code of both projects; no paper table listing them was
  found.
  ``gamma_random`` True draws one gamma triple per sample from the Gaussian instead.

The reference also truncates the harmonised HR image to 8 bits; here it stays float.

Random draws come from the ``torch.Generator`` given, on that generator's device, in a fixed
order (gamma when random, kernel parameters, noise sigmas, noise field), so a seed gives the same
pairs on any device the data then moves to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Range = tuple[float, float]
Triple = tuple[float, float, float]

#: Mean gamma (R, G, B) of opensr-degradation's statistical NAIP -> Sentinel-2 model.
OPENSR_GAMMA_MEAN: Triple = (0.33212655, 0.32608668, 0.35346831)
#: Covariance of those gammas (R, G, B block of the published 4-band matrix).
OPENSR_GAMMA_COV: tuple[Triple, Triple, Triple] = (
    (0.0059202, 0.00507745, 0.00445213),
    (0.00507745, 0.00494151, 0.00445722),
    (0.00445213, 0.00445722, 0.00485922),
)
#: What DiffFuSR's data loader adds to that mean before use.
DIFFFUSR_GAMMA_SHIFT: Triple = (0.02, 0.01, 0.0)
DIFFFUSR_GAMMA_MEAN: Triple = (
    OPENSR_GAMMA_MEAN[0] + DIFFFUSR_GAMMA_SHIFT[0],
    OPENSR_GAMMA_MEAN[1] + DIFFFUSR_GAMMA_SHIFT[1],
    OPENSR_GAMMA_MEAN[2] + DIFFFUSR_GAMMA_SHIFT[2],
)
#: Random gammas are kept above this, so a far tail draw cannot make the power law explode.
GAMMA_FLOOR = 0.05


@dataclass(frozen=True)
class DegradationConfig:
    """How HR patches become LR inputs; the defaults are the DiffFuSR reference config."""

    scale: int = 4
    kernel_size: int = 21
    blur: Literal["aniso", "iso"] = "aniso"
    #: Isotropic blur: standard deviation range (HR pixels).
    sigma_range: Range = (2.0, 4.0)
    #: Anisotropic blur: range of each principal-axis standard deviation (HR pixels).
    lambda_range: Range = (0.2, 4.0)
    #: Anisotropic blur: the kernel turns by an angle uniform in [0, rotation_max_deg).
    rotation_max_deg: float = 180.0
    #: Largest noise standard deviation, reflectance units.
    noise_max: float = 25 / 255
    #: Round the LR image to multiples of 1/levels; None keeps floats.
    levels: int | None = 255
    harmonize: bool = True
    gamma_mean: Triple = DIFFFUSR_GAMMA_MEAN
    gamma_cov: tuple[Triple, Triple, Triple] = OPENSR_GAMMA_COV
    gamma_random: bool = False

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {self.scale}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.blur not in ("aniso", "iso"):
            raise ValueError(f"blur must be 'aniso' or 'iso', got {self.blur!r}")
        for name in ("sigma_range", "lambda_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(low, high)}")
        if self.noise_max < 0:
            raise ValueError(f"noise_max must be >= 0, got {self.noise_max}")
        if self.levels is not None and self.levels < 1:
            raise ValueError(f"levels must be None or >= 1, got {self.levels}")
        if min(self.gamma_mean) <= 0:
            raise ValueError(f"gamma_mean must be positive, got {self.gamma_mean}")


#: The reference's validation degradation: isotropic sigma 1.2, no noise.
VALIDATION = DegradationConfig(blur="iso", sigma_range=(1.2, 1.2), noise_max=0.0)


@dataclass(frozen=True)
class Degraded:
    """A training pair and how it was made."""

    lr: torch.Tensor  # [..., 3, H/scale, W/scale]
    hr: torch.Tensor  # the target: the input, harmonised when harmonize is on
    kernel: torch.Tensor  # [B, k, k]
    noise_sigma: torch.Tensor  # [B]
    gamma: torch.Tensor | None  # [B, 3] when harmonised


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def gamma_profile(batch: int, cfg: DegradationConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-sample gammas [B, 3]: the mean, or draws from the Gaussian when gamma_random."""
    mean = torch.tensor(cfg.gamma_mean, dtype=torch.float64, device=generator.device)
    if not cfg.gamma_random:
        return mean.expand(batch, 3).float()
    cov = torch.tensor(cfg.gamma_cov, dtype=torch.float64, device=generator.device)
    z = torch.randn((batch, 3), generator=generator, device=generator.device, dtype=torch.float64)
    return (mean + z @ torch.linalg.cholesky(cov).T).clamp(min=GAMMA_FLOOR).float()


def harmonize(hr: torch.Tensor, gamma: torch.Tensor | Triple) -> torch.Tensor:
    """``hr ** (1 / gamma)`` per channel; gamma is [3] or one triple per sample [B, 3]."""
    g = torch.as_tensor(gamma, dtype=hr.dtype, device=hr.device)
    if g.ndim == 2:
        g = g.reshape(g.shape[0], *([1] * (hr.ndim - 4)), g.shape[1])
    return hr.clamp(min=0) ** (1 / g[..., None, None])


def gaussian_kernels(
    sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor, size: int
) -> torch.Tensor:
    """Normalised Gaussian kernels [B, size, size] with covariance R diag(sx², sy²) Rᵀ.

    ``theta`` (radians) turns the first principal axis from the column axis towards the row axis.
    """
    ax = torch.arange(size, dtype=torch.float32, device=sigma_x.device) - size // 2
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    u = cos * x + sin * y
    v = cos * y - sin * x
    k = torch.exp(-0.5 * ((u / sigma_x[:, None, None]) ** 2 + (v / sigma_y[:, None, None]) ** 2))
    return k / k.sum(dim=(-2, -1), keepdim=True)


def anisotropic_gaussian_kernels(
    batch: int, cfg: DegradationConfig, generator: torch.Generator
) -> torch.Tensor:
    """Random blur kernels [B, k, k] on the generator's device.

    Anisotropic: both axis deviations uniform in ``lambda_range`` and the angle uniform in
    ``[0, rotation_max_deg)`` (isotropic when the range is one value). ``blur="iso"``: one
    deviation uniform in ``sigma_range``. Three uniforms per sample are drawn in both cases.
    """
    u = _rand(generator, 3, batch)
    if cfg.blur == "iso":
        low, high = cfg.sigma_range
        sigma = low + (high - low) * u[0]
        return gaussian_kernels(sigma, sigma, torch.zeros_like(sigma), cfg.kernel_size)
    low, high = cfg.lambda_range
    theta = u[2] * math.radians(cfg.rotation_max_deg)
    return gaussian_kernels(
        low + (high - low) * u[0], low + (high - low) * u[1], theta, cfg.kernel_size
    )


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each sample of [B, C, H, W] with its own kernel [B, k, k], reflect padding."""
    b, c, h, w = x.shape
    pad = kernels.shape[-1] // 2
    if pad >= min(h, w):
        raise ValueError(f"a {h}x{w} image is too small for a {kernels.shape[-1]}-pixel kernel")
    padded = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
    weight = kernels.to(x).repeat_interleave(c, dim=0).unsqueeze(1)
    return F.conv2d(padded, weight, groups=b * c).reshape(b, c, h, w)


def _cubic(d: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``imresize`` bicubic)."""
    d = np.abs(d)
    near = (1.5 * d - 2.5) * d * d + 1
    far = ((-0.5 * d + 2.5) * d - 4) * d + 2
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _resize_matrix(n: int, scale: int) -> np.ndarray:
    """[n / scale, n] weights of MATLAB-style antialiased bicubic reduction along one axis."""
    out = np.arange(n // scale)
    centre = (out + 0.5) * scale - 0.5
    source = np.floor(centre)[:, None] + np.arange(-2 * scale, 2 * scale + 2)
    weights = _cubic((centre[:, None] - source) / scale)
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = np.zeros((len(out), n))
    rows = np.broadcast_to(out[:, None], source.shape)
    np.add.at(matrix, (rows, np.clip(source, 0, n - 1).astype(int)), weights)
    return matrix


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Reduce the last two axes by ``scale`` (MATLAB-style bicubic, see the module notes)."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"a {h}x{w} image does not divide by the scale {scale}")
    rows = torch.from_numpy(_resize_matrix(h, scale)).to(x)
    cols = torch.from_numpy(_resize_matrix(w, scale)).to(x)
    return rows @ x @ cols.T


def add_noise(x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus Gaussian noise of standard deviation ``sigma[b]`` for sample b."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
    return x + noise * sigma.to(x).reshape(-1, *([1] * (x.ndim - 1)))


@torch.no_grad()
def degrade(hr: torch.Tensor, cfg: DegradationConfig, generator: torch.Generator) -> Degraded:
    """Make LR inputs from HR patches [B, 3, H, W] (or [B, N, 3, H, W]).

    With N patches per sample (the reference cuts two per image for the contrastive
    degradation encoder) the N patches share one gamma, kernel and noise level, and get
    independent noise fields.
    """
    if hr.ndim not in (4, 5) or hr.shape[-3] != 3:
        shape = tuple(hr.shape)
        raise ValueError(f"expected HR patches [B, 3, H, W] or [B, N, 3, H, W], got {shape}")
    b, (h, w) = hr.shape[0], hr.shape[-2:]
    gamma = gamma_profile(b, cfg, generator).to(hr.device) if cfg.harmonize else None
    target = harmonize(hr, gamma) if gamma is not None else hr
    kernels = anisotropic_gaussian_kernels(b, cfg, generator).to(hr.device)
    blurred = blur(target.reshape(b, -1, h, w), kernels).reshape(hr.shape)
    low = bicubic_down(blurred, cfg.scale)
    sigma = cfg.noise_max * _rand(generator, b).to(hr.device)
    low = add_noise(low, sigma, generator).clamp(0, 1)
    if cfg.levels is not None:
        low = torch.round(low * cfg.levels) / cfg.levels
    return Degraded(lr=low, hr=target, kernel=kernels, noise_sigma=sigma, gamma=gamma)
