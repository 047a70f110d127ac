"""Gaussian noise that is a pure function of (seed, stream, channel, global pixel position).

The diffusion sampler starts from noise; drawing it from a generator would make a pixel's
noise depend on which tile and halo it falls in. Hashing its global position instead (a
SplitMix64 counter hash, then Box–Muller) gives every pixel one noise value in every tile, so
overlapping halos agree, re-runs are bit-identical and tile seams do not show.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective scramble of 64-bit integers."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _feed(state: np.ndarray, values: np.ndarray) -> np.ndarray:
    return _mix(state + values.astype(np.int64).view(np.uint64) * _GOLDEN)


def _uniform(bits: np.ndarray) -> np.ndarray:
    """Top 53 bits to a float64 in (0, 1)."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def position_noise(
    seed: int, stream: int, channels: int, row0: int, col0: int, height: int, width: int
) -> np.ndarray:
    """N(0,1) float32 noise [channels, height, width] for the pixels starting at (row0, col0).

    ``stream`` separates independent draws at the same pixels (the sampler's initial noise is
    stream 0, the noise of DDIM step k with eta > 0 is stream k + 1).
    """
    with np.errstate(over="ignore"):
        state = _feed(_mix(np.array([seed], dtype=np.int64).view(np.uint64)), np.array([stream]))
        rows = _feed(state, np.arange(row0, row0 + height))[:, None]
        cells = _feed(rows, np.arange(col0, col0 + width)[None, :])
        lanes = np.arange(2 * channels).reshape(-1, 1, 1)
        bits = _feed(cells[None], lanes)
    u1, u2 = _uniform(bits[0::2]), _uniform(bits[1::2])
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)
