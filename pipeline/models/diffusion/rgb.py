"""DiffFuSR as the pipeline's RGB model: B04 B03 B02 at 10 m → 2.5 m by conditional diffusion.

A block is cut into fixed-size overlapping windows that are sampled as one batch; each window
keeps its centre, so memory is bounded whatever the block size and self-attention never spans
more than a window. The spatial context and the degradation embedding are computed once on
the whole block, and the initial noise follows the global pixel position (see ``noise``).
The network is loaded once per process and kept resident; the model object itself holds only
the weights' address and the sampling options, so it travels cheaply to Dask workers.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from pipeline.models.diffusion.network import DiffFuSR, DiffFuSRConfig
from pipeline.models.diffusion.noise import position_noise
from pipeline.models.resident import PinnedWeights, resident_network
from pipeline.models.weights import load_state_dict

SCALE = 4
#: The weights we trained and ship for the demo (model card: data/difffusr-demo.md beside them).
DEMO_WEIGHTS = "difffusr-demo.safetensors"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def demo_weights_path() -> str:
    return str(resources.files("pipeline.models") / "data" / DEMO_WEIGHTS)


def config_from_metadata(metadata: dict) -> DiffFuSRConfig:
    """Network sizes recorded in a weight file (safetensors metadata or Lightning hparams)."""
    if "config" in metadata:
        args = metadata["config"]
        args = json.loads(args) if isinstance(args, str) else args
    elif "lit_model" in metadata:
        args = metadata["lit_model"]["args"]
    else:
        raise ValueError("the weight file does not record the network configuration")
    return DiffFuSRConfig.from_lit_args(args)


def _build_network(path: str, compile: bool = False) -> DiffFuSR:
    state, metadata = load_state_dict(path)
    net = DiffFuSR(config_from_metadata(metadata))
    net.load_weights(state)
    if compile:
        net.ema = torch.compile(net.ema)
    return net


def load_network(path: str, device: str, compile: bool, sha256: str | None = None) -> DiffFuSR:
    """The network of a local weight file on ``device``, built once per process and file
    version (``sha256`` is part of the cache key, so a replaced file is loaded again)."""
    return resident_network(_build_network, path, device, sha256, compile)


@dataclass(frozen=True)
class DiffFuSRRGB(PinnedWeights):
    """The RGB stage by DiffFuSR; ``samples`` > 1 averages that many seeds."""

    weights: str | None = None
    sha256: str | None = None
    steps: int = 20
    eta: float = 0.0
    seed: int = 0
    samples: int = 1
    window: int = 64
    overlap: int = 8
    batch: int = 8
    device: str | None = None
    precision: str = "fp32"
    compile: bool = False
    name: str = "difffusr"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.samples < 1 or self.steps < 1 or self.batch < 1:
            raise ValueError("samples, steps and batch must be at least 1")
        if not 0 <= 2 * self.overlap < self.window:
            raise ValueError("overlap must be less than half the window")
        self._pin(demo_weights_path())
        multiple = self._network().config.unet.multiple
        if (self.window * SCALE) % multiple:
            step = multiple // math.gcd(multiple, SCALE)
            raise ValueError(f"window must be a multiple of {step} pixels for these weights")

    @property
    def halo(self) -> int:
        return self.overlap

    def _network(self) -> DiffFuSR:
        return self._resident(_build_network, self.compile)

    def __call__(self, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        return self.sample(rgb, origin)[0]

    def sample(self, rgb: np.ndarray, origin: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, per-pixel std over the samples) at 2.5 m, both (3, 4h, 4w) reflectance."""
        net = self._network()
        device = next(net.parameters()).device
        _, h, w = rgb.shape
        rows, cols = _starts(h, self.window, self.overlap), _starts(w, self.window, self.overlap)
        padded_h = rows[-1] + self.window
        padded_w = cols[-1] + self.window
        lr = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))[None].to(device)
        lr = torch.nn.functional.pad(lr, (0, padded_w - w, 0, padded_h - h), mode="replicate")
        # A window holding nothing but zeros, the fill of no-data pixels, is not sampled: its
        # pixels are no-data in the product anyway. It stays at reflectance 0 (−1 in network
        # space).
        windows = [(y, x, s) for y in rows for x in cols for s in range(self.samples)
                   if lr[..., y : y + self.window, x : x + self.window].any()]
        out = torch.full((self.samples, 3, padded_h * SCALE, padded_w * SCALE), -1.0,
                         device=device)
        with torch.inference_mode(), self._autocast(device):
            context, degradation = net.condition(net.normalize(lr))
            for start in range(0, len(windows), self.batch):
                part = windows[start : start + self.batch]
                result = self._sample_windows(net, context, degradation, part, origin, device)
                for (y, x, s), tile in zip(part, result, strict=True):
                    self._paste(out[s], tile, y, x, rows, cols)
        high = net.denormalize(out.float())[:, :, : h * SCALE, : w * SCALE].cpu().numpy()
        std = high.std(axis=0) if self.samples > 1 else np.zeros_like(high[0])
        return high.mean(axis=0), std

    def _sample_windows(self, net, context, degradation, part, origin, device) -> torch.Tensor:
        win, hr = self.window, self.window * SCALE
        ctx = torch.cat([context[:, :, y : y + win, x : x + win] for y, x, _ in part])

        def noise(stream: int) -> torch.Tensor:
            draws = [
                position_noise(self.seed + s, stream, 3, (origin[0] + y) * SCALE,
                               (origin[1] + x) * SCALE, hr, hr)
                for y, x, s in part
            ]
            return torch.from_numpy(np.stack(draws)).to(device)

        return net.sample(
            ctx, degradation.expand(len(part), -1), noise(0), self.steps, self.eta,
            step_noise=lambda k: noise(k + 1),
        )

    def _paste(self, out, tile, y, x, rows, cols) -> None:
        """Keep a window's centre; the first and last windows also keep their outer margins."""
        m, win = self.overlap, self.window
        top = 0 if y == rows[0] else m
        bottom = win if y == rows[-1] else win - m
        left = 0 if x == cols[0] else m
        right = win if x == cols[-1] else win - m
        s = SCALE
        out[:, (y + top) * s : (y + bottom) * s, (x + left) * s : (x + right) * s] = tile[
            :, top * s : bottom * s, left * s : right * s
        ].to(out.dtype)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        if device.type == "cpu" and dtype is torch.float16:
            raise ValueError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.autocast(device.type, dtype=dtype)


def _starts(n: int, window: int, margin: int) -> list[int]:
    """Window starts whose centres (plus the outer margins) tile [0, n) without gaps."""
    core = window - 2 * margin
    count = max(1, math.ceil((n - 2 * margin) / core))
    return [i * core for i in range(count)]
