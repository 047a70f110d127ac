"""The baselines' resampling kernels as torch operators, so that gradients go through them.

Every kernel of :mod:`pipeline.geo.resample` that the baselines use is linear and separable: along
an axis of n pixels it is an (m, n) matrix. The matrix is read off the NumPy kernel itself,
applied to unit impulses, so the weights stay defined in one place; a tensor (c, h, w) then
goes through one matrix per axis.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from pipeline.geo import resample


@functools.lru_cache(maxsize=64)
def axis_matrix(kernel: str, n: int, parameter: int) -> np.ndarray:
    """The (m, n) matrix of ``resample.<kernel>(x, parameter)`` along an axis of ``n`` pixels.

    The impulses are the channels of an (n, n, w) array that is constant along its last axis,
    which every kernel leaves constant: its first column is the response along the rows.
    """
    width = parameter if kernel == "block_mean" else 1
    impulses = np.repeat(np.eye(n)[:, :, None], width, axis=2)
    return getattr(resample, kernel)(impulses, parameter)[:, :, 0].T


class TorchKernels:
    """:class:`pipeline.models.baselines.Kernels` on tensors (c, h, w), with gradients."""

    @staticmethod
    def _separable(x: torch.Tensor, kernel: str, parameter: int) -> torch.Tensor:
        rows, cols = (
            torch.from_numpy(axis_matrix(kernel, n, parameter)).to(x) for n in x.shape[-2:]
        )
        return rows @ x @ cols.T

    def upsample_cubic(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        return self._separable(x, "upsample_cubic", factor)

    def block_mean(self, x: torch.Tensor, ratio: int) -> torch.Tensor:
        return self._separable(x, "block_mean", ratio)

    def box_mean(self, x: torch.Tensor, radius: int) -> torch.Tensor:
        return self._separable(x, "box_mean", radius)


TORCH_KERNELS = TorchKernels()
