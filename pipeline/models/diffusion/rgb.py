"""DiffFuSR as the pipeline's RGB model: B04 B03 B02 at 10 m → 2.5 m by conditional diffusion.

The whole block is sampled as one image, but the U-Net sees it through fixed-size overlapping
windows, in batches: at every DDIM step each window predicts x0 and the predictions are
blended where windows overlap, so all windows follow one trajectory and no seam forms between
them, while memory stays bounded whatever the block size and self-attention never spans more
than a window. The windows lie on one lattice for the whole output grid, each is conditioned
on its own LR pixels, and the noise follows the global pixel position (see ``noise``), so a
window near a tile edge is sampled alike in the blocks of both tiles: tiles join without
seams, given a halo of one window.
With ``consistent`` (the default) every sample is then corrected so that each band, averaged
over the 4 × 4 output pixels of a 10 m pixel, equals the input there
(:mod:`pipeline.models.radiometry`:
a smooth correction, no steps at pixel edges); the halo grows by the correction's reach.
The network is loaded once per process and kept resident; the model object itself holds only
the weights' address and the sampling options, so it travels cheaply to Dask workers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.geo.bands import SCALE
from pipeline.models.diffusion.network import DiffFuSR, DiffFuSRConfig
from pipeline.models.diffusion.noise import position_noise
from pipeline.models.diffusion.sampler import ddim_chain
from pipeline.models.diffusion.sizes import network_config
from pipeline.models.radiometry import correction_reach, make_consistent
from pipeline.models.resident import PinnedWeights, default_device, resident_network
from pipeline.models.weights import (
    WeightsError,
    header_metadata,
    load_state_dict,
    shipped_weights,
)

#: The weights we trained and ship for the demo (model card: difffusr-demo.md beside them).
DEMO_WEIGHTS = shipped_weights("difffusr-demo.safetensors")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: LR window of weights that do not record theirs: the paper's training patch (256 HR px).
DEFAULT_WINDOW = 64
#: Windows per network call by default, on a CPU and on a GPU (``batch`` overrides both).
CPU_BATCH, GPU_BATCH = 8, 128
#: ``precision`` that picks bf16 on a CUDA device and fp32 elsewhere (see ``device_defaults``).
AUTO = "auto"
#: Window overlap on a GPU at most, 10 m pixels: one pixel made window seams visible.
GPU_OVERLAP = 2


def device_defaults(cuda: bool, window: int) -> dict[str, str | int]:
    """Precision and window overlap by default, on a CUDA device or not. On a GPU: bf16,
    whose change against fp32 stays within the bound measured in docs/benchmarks.md, and an
    overlap of 2 pixels (neighbours blend over 16 output pixels, as the demo weights' default
    does), which with 64-pixel windows evaluates the U-Net on 1.14 times the pixels it produces
    against 1.78 times at the CPU's eighth of a window (docs/difffusr.md)."""
    if cuda:
        return {"precision": "bf16", "overlap": min(GPU_OVERLAP, window // 8)}
    return {"precision": "fp32", "overlap": window // 8}


def trained_window(path: str | Path) -> int | None:
    """The LR window the weights were trained on, if their file records it (ours do). A
    model sampled on much larger windows than it learnt on can drift far off in brightness."""
    window = header_metadata(path).get("window")
    if not window:
        return None
    try:
        return int(window)
    except (TypeError, ValueError):
        raise WeightsError(f"{path}: its window {window!r} is not a number") from None


def _build_network(path: str, config: DiffFuSRConfig, compile: bool = False) -> DiffFuSR:
    state, _ = load_state_dict(path)
    net = DiffFuSR(config)
    net.load_weights(state)
    if compile:
        net.ema = torch.compile(net.ema)
    return net


def load_network(path: str, device: str, compile: bool, sha256: str | None = None) -> DiffFuSR:
    """The network of a local weight file on ``device``, built once per process and file
    version (``sha256`` is part of the cache key, so a replaced file is loaded again)."""
    config = network_config(path, path)
    return resident_network(_build_network, path, device, sha256, config, compile)


@dataclass(frozen=True)
class DiffFuSRRGB(PinnedWeights):
    """The RGB stage by DiffFuSR; ``samples`` > 1 averages that many seeds; ``consistent``
    makes every sample average back to the input over each 10 m pixel.

    ``weights``: a weight file (path, fsspec URL, ``hf://`` reference) or the name of a
    published checkpoint (see :mod:`pipeline.models.published`), by default the shipped demo
    weights; ``sha256`` pins it; ``network``: its sizes, by default read from the weights (see
    :func:`~pipeline.models.diffusion.sizes.network_config`).
    """

    weights: str | None = None
    sha256: str | None = None
    network: DiffFuSRConfig | None = None
    steps: int = 20
    eta: float = 0.0
    seed: int = 0
    samples: int = 1
    window: int | None = None
    overlap: int | None = None
    batch: int | None = None
    device: str | None = None
    precision: str = AUTO
    compile: bool = False
    consistent: bool = True
    name: str = "difffusr"

    def __post_init__(self) -> None:
        if self.precision not in (AUTO, *PRECISIONS):
            raise ValueError(f"precision must be one of {', '.join((AUTO, *PRECISIONS))}")
        if self.samples < 1 or self.steps < 1 or (self.batch is not None and self.batch < 1):
            raise ValueError("samples, steps and batch must be at least 1")
        if not 0 <= self.eta <= 1:  # beyond 1 the DDIM step takes the root of a negative
            raise ValueError(f"eta must be from 0 to 1, got {self.eta}")
        if not -(2**63) <= self.seed <= 2**63 - self.samples:  # each draw's seed is 64 bits
            raise ValueError(f"seed must fit in 64 bits with its samples, got {self.seed}")
        local = self._pin(DEMO_WEIGHTS)
        if self.network is None:
            object.__setattr__(self, "network", network_config(self.weights, local.path))
        if self.window is None:
            object.__setattr__(self, "window", trained_window(local.path) or DEFAULT_WINDOW)
        # Resolved once, where the plan is made (see cuda_defaults), so every worker samples
        # alike: a copy moved to another device keeps them.
        cuda = (self.device or default_device()).startswith("cuda")
        for key, value in device_defaults(cuda, self.window).items():
            if getattr(self, key) in (None, AUTO):
                object.__setattr__(self, key, value)
        if not 0 <= 4 * self.overlap <= self.window:
            raise ValueError("overlap must be between 0 and a quarter of the window")
        multiple = self._network().config.unet.multiple
        if (self.window * SCALE) % multiple:
            step = multiple // math.gcd(multiple, SCALE)
            raise ValueError(f"window must be a multiple of {step} pixels for these weights")

    @property
    def halo(self) -> int:
        """A whole window: the windows that reach a tile then lie wholly inside the block of
        that tile and of its neighbour, conditioned and noised alike in both; plus the reach
        of the consistency correction when it is on."""
        return self.own_halo + (correction_reach(1) if self.consistent else 0)

    @property
    def own_halo(self) -> int:
        """The context of the network's own samples, before the guarantee: a whole window."""
        return self.window

    def cuda_defaults(self, given: Collection[str]) -> dict[str, str | int]:
        """The options that a CUDA device resolves by default (``device_defaults``), but for
        those ``given``: a runner without a GPU builds the model on its CPU, and must fix
        what the workers' GPUs will sample with, for them all to sample alike and for the
        product's recipe to say so."""
        return {k: v for k, v in device_defaults(True, self.window).items() if k not in given}

    def _network(self) -> DiffFuSR:
        return self._resident(_build_network, self.network, self.compile)

    def __call__(self, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return self.sample(rgb, origin)[0]

    def sample(
        self, rgb: np.ndarray, origin: tuple[int, int], margin: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean, per-pixel std over the samples) at 2.5 m, both (3, 4h, 4w) reflectance,
        each sample with the radiometric guarantee when ``consistent``; within ``margin`` 10 m
        pixels of the block's edge only as far as :meth:`draw` samples it."""
        draws = self.draw(rgb, origin, margin)
        if self.consistent:
            draws = self.correct(draws, rgb)
        std = draws.std(axis=0) if self.samples > 1 else np.zeros_like(draws[0])
        return draws.mean(axis=0), std

    def draw(self, rgb: np.ndarray, origin: tuple[int, int], margin: int = 0) -> np.ndarray:
        """The network's own samples (S, 3, 4h, 4w), reflectance, before any guarantee.

        Only the windows that touch the pixels the output outside ``margin`` depends on (the
        correction's reach further in) are sampled, the others holding the bilinear ×4 of the
        input (see :meth:`draw_tensor`): a tile's halo is context, and sampling
        the windows that lie in it alone would be work thrown away (docs/benchmarks.md,
        "executed vs useful"). A kept pixel is blended from the same windows either way; over
        several steps, the windows at the edge of those sampled are blended with fewer
        neighbours, as at any block's edge, which moves the kept pixels by a few DN at most
        (the seam score is unchanged, docs/benchmarks.md).
        """
        device = next(self._network().parameters()).device
        lr = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).to(device)
        with torch.inference_mode():
            return self.draw_tensor(lr, origin, self.needed(rgb.shape[1:], margin)).cpu().numpy()

    def needed(self, shape: tuple[int, ...], margin: int) -> tuple[slice, ...] | None:
        """The rows and columns of a (h, w) block whose draws its output outside ``margin``
        depends on (None: all of them)."""
        inset = self.inset(margin)
        return tuple(slice(inset, n - inset) for n in shape) if inset else None

    def inset(self, margin: int) -> int:
        """The pixels at a block's edge whose draws no output outside ``margin`` depends on:
        the margin less the correction's reach."""
        return max(0, margin - (self.halo - self.own_halo))

    def draw_tensor(
        self,
        rgb: torch.Tensor,
        origin: tuple[int, int],
        focus: tuple[slice, slice] | None = None,
        level: int | None = None,
    ) -> torch.Tensor:
        """:meth:`draw` of a (3, h, w) tensor on the network's device, in the caller's
        autograd mode, so that an attribution can follow the samples back to the input.

        ``focus`` (rows, columns of the block): only the lattice windows that touch it are
        sampled, which leaves the focus's pixels as they are and gives the others the bilinear
        ×4 of the input, a guide without detail (see :func:`_unsampled`). ``level``:
        instead of the whole chain, one denoising step at that timestep from x_t = √ᾱ·x̂ +
        √(1 − ᾱ)·ε, x̂ the bilinear ×4 of the input (held fixed), ε the block's own noise:
        the network's x0 prediction at that noise level, for a fraction of the chain's cost.
        """
        net = self._network()
        device = rgb.device
        _, h, w = rgb.shape
        lr, top, left = _on_lattice(rgb, origin, self.window, self.overlap)
        padded = tuple(lr.shape[-2:])
        corner = (origin[0] - top, origin[1] - left)
        with self._autocast(device):
            blend = _Windows(lr, self.window, self.overlap, _padded(focus, top, left))
            context, degradation = self._condition(net, blend.gather(lr, 1))

            def denoise(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
                return self._denoise(net, context, degradation, blend, x, gamma)

            def noise(stream: int) -> torch.Tensor:
                return self._noise(stream, corner, padded, device)

            if level is None:
                out = ddim_chain(
                    denoise,
                    net.diffusion,
                    noise(0),
                    self.steps,
                    self.eta,
                    step_noise=lambda k: noise(k + 1),
                )
            else:
                out = _one_step(net, denoise, lr, noise(0), level)
            out = torch.where(blend.total > 0, out, _unsampled(net, lr, focus is not None))
        out = out[:, :, top * SCALE : (top + h) * SCALE, left * SCALE : (left + w) * SCALE]
        return net.denormalize(out.float())

    @staticmethod
    def correct(draws: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """Each sample (S, 3, 4h, 4w) corrected to average back to ``rgb`` (3, h, w) over
        every 10 m pixel that holds data (:mod:`pipeline.models.radiometry`): a pixel whose three
        bands are all 0 is the fill of no-data."""
        rgb = np.asarray(rgb, dtype=np.float32)
        valid = (rgb != 0).any(axis=0)
        return np.stack(
            [
                np.stack(
                    [
                        make_consistent(band, native, SCALE, valid)
                        for band, native in zip(sample, rgb, strict=True)
                    ]
                )
                for sample in draws
            ]
        )

    def _batch(self, device: torch.device) -> int:
        """Windows per network call: few on a CPU, where bigger batches gain nothing, many on
        a GPU, which small batches leave idle."""
        return self.batch or (GPU_BATCH if device.type == "cuda" else CPU_BATCH)

    def _condition(self, net: DiffFuSR, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial context [N, 64, win, win] and degradation embedding [N, 256] of each
        window, from the window's own LR pixels ``crops`` [N, 3, win, win]: a window on the
        global lattice is then conditioned alike in every block that holds it, which is what
        joins tiles."""
        batch = self._batch(crops.device)
        parts = [
            net.condition(net.normalize(crops[i : i + batch])) for i in range(0, len(crops), batch)
        ]
        if not parts:
            return torch.empty(0), torch.empty(0)
        return torch.cat([c for c, _ in parts]), torch.cat([e for _, e in parts])

    def _noise(
        self, stream: int, origin: tuple[int, int], padded: tuple[int, int], device: torch.device
    ) -> torch.Tensor:
        """The block's noise of one stream for every sample [S, 3, 4·H, 4·W], from the global
        position of each pixel: a window's noise is the same crop in every block."""
        draws = [
            position_noise(
                self.seed + s,
                stream,
                3,
                origin[0] * SCALE,
                origin[1] * SCALE,
                padded[0] * SCALE,
                padded[1] * SCALE,
            )
            for s in range(self.samples)
        ]
        return torch.from_numpy(np.stack(draws)).to(device)

    def _denoise(self, net, context, degradation, blend, x, gamma) -> torch.Tensor:
        """x0 of the whole block: every window's prediction, in batches, blended where windows
        overlap. Sampling one block-wide x_t this way (rather than each window on its own)
        keeps overlapping windows on one trajectory, so no seam forms between them. Windows
        are cut out and blended back with one tensor operation each, whatever their number."""
        crops = blend.gather(x, SCALE)  # sample-major: sample s, window i at s·N + i
        which = torch.arange(len(crops), device=x.device)
        sample, window = which // blend.count, which % blend.count
        batch = self._batch(x.device)
        parts = [
            net.ema(
                crops[i : i + batch],
                gamma[sample[i : i + batch]],
                context[window[i : i + batch]],
                degradation[window[i : i + batch]],
            )
            for i in range(0, len(crops), batch)
        ]
        if not parts:
            return torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        total = blend.scatter(torch.cat(parts).float(), len(x))
        return total / blend.total.clamp(min=1e-12)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        if device.type == "cpu" and dtype is torch.float16:
            raise ValueError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.autocast(device.type, dtype=dtype)


def _lattice(origin: int, n: int, window: int, overlap: int) -> list[int]:
    """Starts, relative to the block, of the windows of the global lattice (one every
    window − 2·overlap pixels, from global pixel −overlap) that touch the block's n pixels
    from global pixel ``origin``; the first may start before the block, the last end after."""
    stride = window - 2 * overlap
    first = (origin + overlap - window) // stride + 1
    last = (origin + n - 1 + overlap) // stride
    return [k * stride - overlap - origin for k in range(first, last + 1)]


def _on_lattice(
    rgb: torch.Tensor, origin: tuple[int, int], window: int, overlap: int
) -> tuple[torch.Tensor, int, int]:
    """The block (3, h, w) as [1, 3, H, W], padded (edge pixels repeated) to the extent of the
    lattice windows that touch it, and the padding's (top, left)."""
    _, h, w = rgb.shape
    rows = _lattice(origin[0], h, window, overlap)
    cols = _lattice(origin[1], w, window, overlap)
    top, left = -rows[0], -cols[0]
    bottom, right = rows[-1] + window - h, cols[-1] + window - w
    return F.pad(rgb[None], (left, right, top, bottom), mode="replicate"), top, left


def _padded(focus: tuple[slice, ...] | None, top: int, left: int) -> tuple[slice, ...] | None:
    """``focus`` (rows, columns of a block) in the block padded by (``top``, ``left``)."""
    if focus is None:
        return None
    return tuple(slice(s.start + o, s.stop + o) for s, o in zip(focus, (top, left), strict=True))


def _one_step(
    net: DiffFuSR, denoise: Callable, lr: torch.Tensor, noise: torch.Tensor, level: int
) -> torch.Tensor:
    """The denoiser's clipped x0 from x_t at timestep ``level``, x_t made of the bilinear ×4
    of ``lr`` [1, 3, H, W] (held fixed) and ``noise`` [S, 3, 4H, 4W] (see ``draw_tensor``)."""
    schedule = net.diffusion
    if not 0 <= level < schedule.timesteps:
        raise ValueError(f"the noise level must be a timestep from 0 to {schedule.timesteps - 1}")
    clean = _lifted(net, lr.detach())
    x_t = schedule.sqrt_alphas_cumprod[level] * clean + (
        schedule.sqrt_one_minus_alphas_cumprod[level] * noise
    )
    gamma = schedule.sqrt_alphas_cumprod[level].expand(len(x_t), 1)
    return denoise(x_t, gamma).clamp(-1.0, 1.0)


def _lifted(net: DiffFuSR, lr: torch.Tensor) -> torch.Tensor:
    """The bilinear ×4 of ``lr`` [1, 3, H, W] in network space."""
    return net.normalize(
        F.interpolate(lr, scale_factor=SCALE, mode="bilinear", align_corners=False)
    )


def _unsampled(net: DiffFuSR, lr: torch.Tensor, focused: bool) -> torch.Tensor:
    """What the pixels of no sampled window hold, in network space: reflectance 0 where the
    input is no-data (a window of nothing but zeros is never sampled); where a ``focused``
    draw left windows holding data out, the bilinear ×4 of the input. A fusion reading those
    pixels as its guide beyond the context it is given (see
    :data:`pipeline.models.superresolve.GUIDE_CONTEXT`) then sees no detail there, rather
    than a dark border."""
    empty = torch.tensor(-1.0, device=lr.device)
    if not focused:
        return empty
    data = lr.ne(0).any(1, keepdim=True)
    data = data.repeat_interleave(SCALE, -2).repeat_interleave(SCALE, -1)
    return torch.where(data, _lifted(net, lr), empty)


class _Windows:
    """The block's windows on the lattice: which are sampled (those holding data), their blend
    weights on the 2.5 m grid, and the gather (unfold) and scatter (fold) of all of them at
    once. A window's weight is 1 in its centre, ramping linearly down across each overlap it
    shares with a neighbour (a window's own outer edge, on the block's border, keeps weight
    1); neighbours' ramps sum to 1. A window holding nothing but zeros, the fill of no-data
    pixels, is not sampled: its pixels are no-data in the product anyway and stay at
    reflectance 0 (−1 in network space)."""

    def __init__(
        self,
        lr: torch.Tensor,
        window: int,
        overlap: int,
        focus: tuple[slice, slice] | None = None,
    ) -> None:
        """``lr`` [1, 3, H, W]: a block padded to its lattice windows (``_on_lattice``);
        ``focus``: sample only the windows that touch these rows and columns of it."""
        self.window, self.stride = window, window - 2 * overlap
        self.shape = tuple(lr.shape[-2:])
        rows, cols = ((n - window) // self.stride + 1 for n in self.shape)
        self.lattice = rows * cols
        lattice = F.unfold(lr.detach(), window, stride=self.stride)  # [1, 3·win², rows·cols]
        sampled = lattice[0].ne(0).any(0)
        if focus is not None:
            touch = [self._touching(n, s) for n, s in zip((rows, cols), focus, strict=True)]
            sampled &= (touch[0][:, None] & touch[1][None, :]).flatten().to(sampled.device)
        #: Lattice positions (row-major) of the windows that are sampled.
        self.kept = sampled.nonzero()[:, 0]
        self.count = len(self.kept)
        by_row = torch.stack([_profile(i, rows, window, overlap) for i in range(rows)])
        by_col = torch.stack([_profile(j, cols, window, overlap) for j in range(cols)])
        weights = by_row[:, None, :, None] * by_col[None, :, None, :]
        #: Each sampled window's weight [N, 1, 4·win, 4·win], made once for every step.
        self.weights = weights.flatten(0, 1)[self.kept.cpu()][:, None].to(lr.device)
        self.total = self.scatter(torch.ones_like(self.weights), 1)[0, 0]

    def _touching(self, count: int, span: slice) -> torch.Tensor:
        """Which of ``count`` windows along an axis overlap the pixels of ``span``."""
        start = torch.arange(count) * self.stride
        return (start < span.stop) & (start + self.window > span.start)

    def gather(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """The sampled windows of ``x`` [S, C, H·scale, W·scale] as [S·N, C, k, k], k =
        window·scale, sample-major."""
        k = self.window * scale
        patches = F.unfold(x, k, stride=self.stride * scale)[..., self.kept]  # [S, C·k², N]
        return patches.transpose(1, 2).reshape(-1, x.shape[1], k, k)

    def scatter(self, windows: torch.Tensor, samples: int) -> torch.Tensor:
        """The weighted sum of ``windows`` [S·N, C, 4·win, 4·win] on the block's 2.5 m grid,
        [S, C, 4·H, 4·W]."""
        k = self.window * SCALE
        weighted = (windows * self.weights.repeat(samples, 1, 1, 1)).reshape(
            samples, self.count, -1
        )
        columns = weighted.new_zeros(samples, self.lattice, weighted.shape[-1])
        columns[:, self.kept] = weighted
        return F.fold(
            columns.transpose(1, 2),
            (self.shape[0] * SCALE, self.shape[1] * SCALE),
            k,
            stride=self.stride * SCALE,
        )


def _profile(index: int, count: int, window: int, overlap: int) -> torch.Tensor:
    """One axis of a window's weight, 2.5 m pixels: a ramp over the 2·overlap pixels it
    shares with the previous window (rising) and with the next (falling), else 1."""
    weight = torch.ones(window * SCALE)
    ramp = 2 * overlap * SCALE
    if ramp:
        rising = (torch.arange(ramp) + 0.5) / ramp
        if index > 0:
            weight[:ramp] = rising
        if index < count - 1:
            weight[-ramp:] = rising.flip(0)
    return weight
