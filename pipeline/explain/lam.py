"""Local attribution maps (LAM, Gu & Dong 2021): which input pixels made an output window.

A detector D reduces the model's output to one number about the window (:func:`detector`).
The attribution of an input pixel is the path integral of D's gradient along a path from a
baseline to the input (integrated gradients). LAM's path is a progressive blur: γ(α) is the
input blurred by a Gaussian of σ·(1 − α), from the input blurred by σ (α = 0: the baseline,
the input without the detail a super-resolution model could use) to the input itself (α = 1).
The integral is the trapezoid rule over ``steps`` equal steps of α:

    A = Σ_k ½ (∇D(γ(α_k)) + ∇D(γ(α_{k+1}))) ⊙ (γ(α_{k+1}) − γ(α_k)).

Summed over the input it telescopes to D(input) − D(baseline) exactly when the gradient is the
same all along the path, as for a linear model (bicubic): then only float32 rounding remains.
Otherwise the gap between the two (:attr:`Attribution.error`, in every report) is the
integration error, which falls with the square of ``steps``.

A model may have several inputs (the fusion stage: the 12 bands at 10 m and the RGB guide at
2.5 m); each is blurred on its own grid, σ scaled by its pixels per 10 m pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

#: Detectors: ``value``, the sum of the window's output values (linear in the output), and
#: ``edges``, LAM's own, the sum of the output's gradient magnitude over the window.
DETECTORS = ("value", "edges")
#: Reaches, in 10 m pixels around the window, whose share of the attribution a report gives.
REACHES = (1, 2, 4)


@dataclass(frozen=True)
class Path:
    """The progressive-blur path: ``steps`` trapezoids, the baseline blurred by ``sigma``
    10 m pixels."""

    steps: int = 16
    sigma: float = 4.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.sigma <= 0:
            raise ValueError("the path needs at least 1 step and a blur sigma above 0")

    def point(self, x: torch.Tensor, alpha: float, scale: int = 1) -> torch.Tensor:
        """γ(α) of an input with ``scale`` pixels per 10 m pixel."""
        return blur(x, self.sigma * scale * (1 - alpha))


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel of (c, h, w) blurred by a Gaussian of ``sigma`` pixels (cut at 3σ), edge
    pixels repeated; σ = 0 is the identity."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius,) * 4, mode="replicate")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def detector(kind: str, rows: slice, cols: slice) -> Callable[[torch.Tensor], torch.Tensor]:
    """D of an output (c, H, W) at the window ``rows`` × ``cols`` (see :data:`DETECTORS`).
    ``edges`` reads one pixel around the window (central differences)."""
    if kind == "value":
        return lambda out: out[:, rows, cols].sum()
    if kind == "edges":

        def edges(out: torch.Tensor) -> torch.Tensor:
            around = out[:, rows.start - 1 : rows.stop + 1, cols.start - 1 : cols.stop + 1]
            dy = (around[:, 2:, 1:-1] - around[:, :-2, 1:-1]) / 2
            dx = (around[:, 1:-1, 2:] - around[:, 1:-1, :-2]) / 2
            return torch.sqrt(dx * dx + dy * dy + 1e-12).sum()

        return edges
    raise ValueError(f"unknown detector {kind!r}; choose from {', '.join(DETECTORS)}")


@dataclass(frozen=True)
class Attribution:
    """One detector's attribution: a map per input (its shape), and the detector's change
    from the baseline to the input, which the maps sum to up to the integration error."""

    maps: tuple[np.ndarray, ...]
    change: float

    @property
    def total(self) -> float:
        return float(sum(m.sum(dtype=np.float64) for m in self.maps))

    @property
    def error(self) -> float:
        """|Σ attribution − change| relative to |change| (absolute when the change is 0)."""
        gap = abs(self.total - self.change)
        return gap / abs(self.change) if self.change else gap


def integrate(
    forward: Callable[..., object],
    detectors: Mapping[str, Callable[[object], torch.Tensor]],
    inputs: Sequence[torch.Tensor],
    scales: Sequence[int],
    path: Path,
) -> dict[str, Attribution]:
    """The attribution of every detector (of ``forward(*inputs)``) to ``inputs``, whose
    pixels per 10 m pixel are ``scales``: one forward pass per point of the path, and one
    backward pass per detector."""
    totals = {name: [torch.zeros_like(x) for x in inputs] for name in detectors}
    values: dict[str, list[float]] = {name: [] for name in detectors}
    previous: tuple[list[torch.Tensor], dict[str, list[torch.Tensor]]] | None = None
    for k in range(path.steps + 1):
        with torch.no_grad():
            point = [path.point(x, k / path.steps, s) for x, s in zip(inputs, scales, strict=True)]
        leaves = [p.detach().requires_grad_() for p in point]
        out = forward(*leaves)
        grads = {}
        for i, (name, detect) in enumerate(detectors.items()):
            value = detect(out)
            values[name].append(float(value.detach()))
            found = torch.autograd.grad(
                value, leaves, retain_graph=i < len(detectors) - 1, allow_unused=True
            )
            grads[name] = [
                torch.zeros_like(x) if g is None else g for g, x in zip(found, leaves, strict=True)
            ]
        if previous is not None:
            before, grads_before = previous
            for name, total in totals.items():
                for j, step in enumerate(zip(before, point, strict=True)):
                    total[j] += 0.5 * (grads_before[name][j] + grads[name][j]) * (step[1] - step[0])
        previous = point, grads
    return {
        name: Attribution(
            tuple(t.detach().cpu().numpy() for t in total), values[name][-1] - values[name][0]
        )
        for name, total in totals.items()
    }


def pixel_map(maps: Sequence[np.ndarray], scales: Sequence[int]) -> np.ndarray:
    """|attribution| per 10 m pixel: summed over the channels of every input, an input on a
    finer grid summed over each 10 m pixel's ``scale`` × ``scale`` pixels."""
    total = None
    for m, s in zip(maps, scales, strict=True):
        a = np.abs(m.astype(np.float64)).sum(axis=0)
        h, w = a.shape[0] // s, a.shape[1] // s
        a = a.reshape(h, s, w, s).sum(axis=(1, 3))
        total = a if total is None else total + a
    return total


def gini(values: np.ndarray) -> float:
    """The Gini coefficient of non-negative ``values``: 0 when all are equal, towards 1 when
    one holds everything."""
    v = np.sort(values.ravel().astype(np.float64))
    n, total = v.size, v.sum()
    if not n or total <= 0:
        return 0.0
    rank = np.arange(1, n + 1)
    return float((2 * (rank * v).sum()) / (n * total) - (n + 1) / n)


def diffusion_index(attribution: np.ndarray) -> float:
    """LAM's diffusion index, (1 − Gini) × 100, of a map of |attribution|: high when many
    pixels share the attribution, low when a few hold it. It depends on the map's extent
    (more pixels far away, each with nothing, raise the Gini), so compare it between models
    at one window, whose maps have the same extent."""
    return (1 - gini(attribution)) * 100


def shares(
    attribution: np.ndarray, rows: slice, cols: slice, reaches: Sequence[int] = REACHES
) -> dict[int, float]:
    """The share of the map's total within each reach (10 m pixels, Chebyshev distance) of
    the window's 10 m pixels ``rows`` × ``cols``."""
    total = attribution.sum()
    out = {}
    for r in reaches:
        near = attribution[
            max(rows.start - r, 0) : rows.stop + r, max(cols.start - r, 0) : cols.stop + r
        ]
        out[r] = float(near.sum() / total) if total > 0 else 0.0
    return out
