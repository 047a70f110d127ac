"""The DiffFuSR training degradation: kernels, harmonisation, bicubic reduction, noise."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.protocol.degradation import (
    DIFFFUSR_GAMMA_MEAN,
    OPENSR_GAMMA_COV,
    VALIDATION,
    DegradationConfig,
    anisotropic_gaussian_kernels,
    bicubic_down,
    blur,
    degrade,
    gamma_profile,
    gaussian_kernels,
    harmonize,
)

EXACT = DegradationConfig(noise_max=0.0, levels=None, harmonize=False)


def seeded(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def moments(kernel: torch.Tensor) -> np.ndarray:
    """Second moments [[xx, xy], [xy, yy]] of a kernel about its centre (x = column)."""
    k = kernel.double().numpy()
    ax = np.arange(k.shape[-1]) - k.shape[-1] // 2
    y, x = np.meshgrid(ax, ax, indexing="ij")
    return np.array(
        [[(k * x * x).sum(), (k * x * y).sum()], [(k * x * y).sum(), (k * y * y).sum()]]
    )


def test_default_config_is_the_reference_config():
    cfg = DegradationConfig()
    assert (cfg.scale, cfg.kernel_size, cfg.blur) == (4, 21, "aniso")
    assert cfg.sigma_range == (2.0, 4.0) and cfg.lambda_range == (0.2, 4.0)
    assert cfg.noise_max == pytest.approx(25 / 255) and cfg.levels == 255
    assert cfg.harmonize and not cfg.gamma_random
    np.testing.assert_allclose(cfg.gamma_mean, [0.35212655, 0.33608668, 0.35346831])
    assert (VALIDATION.blur, VALIDATION.sigma_range, VALIDATION.noise_max) == (
        "iso",
        (1.2, 1.2),
        0.0,
    )


def test_random_kernels_are_normalised_centred_and_of_the_configured_size():
    kernels = anisotropic_gaussian_kernels(6, DegradationConfig(), seeded())
    assert kernels.shape == (6, 21, 21) and kernels.dtype == torch.float32
    assert (kernels >= 0).all()
    torch.testing.assert_close(kernels.sum(dim=(1, 2)), torch.ones(6))
    torch.testing.assert_close(kernels, kernels.flip(-1, -2))  # centrally symmetric
    small = anisotropic_gaussian_kernels(2, DegradationConfig(kernel_size=7), seeded())
    assert small.shape == (2, 7, 7)


def test_kernel_covariance_has_the_axes_and_angle_asked_for():
    theta = math.radians(30)
    kernel = gaussian_kernels(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([theta]), 21)[
        0
    ]
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    expected = rotation @ np.diag([4.0, 1.0]) @ rotation.T
    np.testing.assert_allclose(moments(kernel), expected, atol=1e-4)


def test_random_rotation_shows_in_the_covariance_and_equal_lambdas_are_isotropic():
    turned = DegradationConfig(lambda_range=(0.8, 2.5))
    covs = [moments(k) for k in anisotropic_gaussian_kernels(64, turned, seeded())]
    assert max(abs(c[0, 1]) for c in covs) > 0.3  # tilted principal axes
    assert max(c[0, 0] / c[1, 1] for c in covs) > 2  # and unequal ones
    axis_aligned = replace(turned, rotation_max_deg=0.0)
    for c in (moments(k) for k in anisotropic_gaussian_kernels(16, axis_aligned, seeded())):
        assert abs(c[0, 1]) < 1e-6
    round_ = replace(turned, lambda_range=(1.5, 1.5))
    for c in (moments(k) for k in anisotropic_gaussian_kernels(8, round_, seeded())):
        np.testing.assert_allclose(c, 2.25 * np.eye(2), atol=1e-4)
    iso = DegradationConfig(blur="iso", sigma_range=(2.0, 2.0))
    for c in (moments(k) for k in anisotropic_gaussian_kernels(4, iso, seeded())):
        np.testing.assert_allclose(c, 4.0 * np.eye(2), atol=2e-3)


def test_seeded_generator_makes_the_same_pairs():
    hr = torch.rand((3, 2, 3, 32, 32), generator=seeded(5))
    first = degrade(hr, DegradationConfig(gamma_random=True), seeded(7))
    again = degrade(hr, DegradationConfig(gamma_random=True), seeded(7))
    other = degrade(hr, DegradationConfig(gamma_random=True), seeded(8))
    for name in ("lr", "hr", "kernel", "noise_sigma", "gamma"):
        torch.testing.assert_close(getattr(first, name), getattr(again, name), rtol=0, atol=0)
    assert not torch.equal(first.lr, other.lr)
    assert not torch.equal(first.kernel, other.kernel)


def test_degrade_shapes_and_patches_of_one_sample_share_their_degradation():
    hr = torch.rand((2, 3, 64, 48), generator=seeded(1))
    out = degrade(hr, DegradationConfig(), seeded())
    assert out.lr.shape == (2, 3, 16, 12) and out.hr.shape == hr.shape
    assert out.kernel.shape == (2, 21, 21) and out.noise_sigma.shape == (2,)
    assert out.gamma.shape == (2, 3)
    assert ((out.noise_sigma >= 0) & (out.noise_sigma <= 25 / 255)).all()
    levels = out.lr * 255
    torch.testing.assert_close(levels, levels.round())  # rounded to 8 bits, as the reference
    assert out.lr.min() >= 0 and out.lr.max() <= 1

    pair = torch.rand((2, 1, 3, 32, 32), generator=seeded(2)).expand(2, 2, 3, 32, 32)
    twin = degrade(pair, EXACT, seeded())
    assert twin.lr.shape == (2, 2, 3, 8, 8)
    torch.testing.assert_close(twin.lr[:, 0], twin.lr[:, 1])  # same kernel for both patches


def test_constant_image_stays_constant_without_noise():
    flat = torch.full((2, 3, 32, 32), 0.3)
    out = degrade(flat, EXACT, seeded())
    torch.testing.assert_close(out.lr, torch.full((2, 3, 8, 8), 0.3))
    on_grid = torch.full((1, 3, 32, 32), 77 / 255)
    quantised = degrade(on_grid, replace(EXACT, levels=255), seeded())
    torch.testing.assert_close(quantised.lr, torch.full((1, 3, 8, 8), 77 / 255))


def test_noise_level_is_the_reported_sigma():
    flat = torch.full((4, 3, 256, 256), 0.5)
    out = degrade(flat, replace(EXACT, noise_max=0.1), seeded(3))
    spread = (out.lr - 0.5).std(dim=(1, 2, 3))
    torch.testing.assert_close(spread, out.noise_sigma, rtol=0.05, atol=1e-3)


def test_harmonize_is_a_per_channel_power_law():
    hr = torch.rand((2, 3, 8, 8), generator=seeded())
    torch.testing.assert_close(harmonize(hr, (1.0, 1.0, 1.0)), hr)
    squared = harmonize(hr, torch.tensor([[0.5, 1.0, 1.0], [1.0, 1.0, 0.5]]))
    torch.testing.assert_close(squared[0, 0], hr[0, 0] ** 2)
    torch.testing.assert_close(squared[0, 1:], hr[0, 1:])
    torch.testing.assert_close(squared[1, 2], hr[1, 2] ** 2)
    pairs = torch.rand((2, 2, 3, 4, 4), generator=seeded())
    torch.testing.assert_close(harmonize(pairs, torch.full((2, 3), 0.5)), pairs**2)


def test_gamma_profile_fixed_by_default_and_gaussian_when_random():
    fixed = gamma_profile(3, DegradationConfig(), seeded())
    torch.testing.assert_close(fixed, torch.tensor([DIFFFUSR_GAMMA_MEAN] * 3))
    drawn = gamma_profile(20000, DegradationConfig(gamma_random=True), seeded()).double()
    np.testing.assert_allclose(drawn.mean(0).numpy(), DIFFFUSR_GAMMA_MEAN, atol=2e-3)
    np.testing.assert_allclose(np.cov(drawn.numpy().T), OPENSR_GAMMA_COV, atol=4e-4)


def test_harmonised_target_is_what_the_lr_is_made_from():
    hr = torch.rand((1, 3, 32, 32), generator=seeded())
    out = degrade(hr, replace(EXACT, harmonize=True), seeded())
    torch.testing.assert_close(out.hr, harmonize(hr, out.gamma))
    plain = degrade(out.hr, EXACT, seeded())
    torch.testing.assert_close(out.lr, plain.lr)
    assert plain.gamma is None


def test_bicubic_matches_torch_antialias_inside_and_replicates_edges():
    x = torch.rand((2, 3, 64, 40), generator=seeded())
    ours = bicubic_down(x, 4)
    theirs = F.interpolate(x, scale_factor=0.25, mode="bicubic", antialias=True)
    assert ours.shape == (2, 3, 16, 10)
    torch.testing.assert_close(ours[..., 2:-2, 2:-2], theirs[..., 2:-2, 2:-2])
    assert not torch.allclose(ours[..., 0, :], theirs[..., 0, :])  # borders differ by design


def test_blur_by_a_delta_kernel_is_the_identity():
    x = torch.rand((2, 3, 16, 16), generator=seeded())
    delta = torch.zeros((2, 5, 5))
    delta[:, 2, 2] = 1
    torch.testing.assert_close(blur(x, delta), x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kernel_size": 20}, "odd"),
        ({"scale": 0}, "scale"),
        ({"lambda_range": (4.0, 0.2)}, "lambda_range"),
        ({"sigma_range": (0.0, 1.0)}, "sigma_range"),
        ({"noise_max": -0.1}, "noise_max"),
        ({"blur": "box"}, "blur"),
        ({"levels": 0}, "levels"),
        ({"gamma_mean": (0.3, 0.0, 0.3)}, "gamma_mean"),
    ],
)
def test_bad_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DegradationConfig(**kwargs)


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        degrade(torch.rand(2, 4, 32, 32), DegradationConfig(), seeded())
    with pytest.raises(ValueError, match="does not divide by the scale 4"):
        degrade(torch.rand(1, 3, 30, 32), DegradationConfig(), seeded())
    with pytest.raises(ValueError, match="too small for a 21-pixel kernel"):
        degrade(torch.rand(1, 3, 8, 8), DegradationConfig(), seeded())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_pairs_on_the_gpu_from_a_cpu_generator():
    hr = torch.rand((2, 3, 64, 64), generator=seeded())
    cpu = degrade(hr, DegradationConfig(gamma_random=True, levels=None), seeded(4))
    gpu = degrade(hr.cuda(), DegradationConfig(gamma_random=True, levels=None), seeded(4))
    assert gpu.lr.is_cuda
    torch.testing.assert_close(gpu.lr.cpu(), cpu.lr, rtol=1e-4, atol=1e-5)
