"""What the learned models share: sha256-pinned weights and one resident network per process.

A learned model is a frozen dataclass that holds only the weights' address, their sha256 and
its options, so it travels cheaply to Dask workers. Each process builds the network the first
time a model asks for it and keeps it (:func:`resident_network`, keyed by the file's sha256
too, so a replaced file is loaded again).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pipeline.models.published import fetch, weight_source
from pipeline.models.weights import LocalWeights, resolve


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=8)
def resident_network(
    build: Callable[..., nn.Module],
    path: str,
    device: str,
    sha256: str | None = None,
    *options: Any,
) -> nn.Module:
    """``build(path, *options)`` moved to ``device``, in eval mode and without gradients,
    built once per process for each (builder, file, device, sha256, options)."""
    return build(path, *options).to(device).eval().requires_grad_(False)


class PinnedWeights:
    """Weight handling of a frozen dataclass with ``weights``, ``sha256``, ``device`` and
    ``name`` (the model's registry name) fields.

    :meth:`_pin` (from ``__post_init__``) resolves the weights once (a published checkpoint's
    name to its hub reference, see :mod:`pipeline.models.published`), checks the sha256 when
    one is given or remembered and records the file's sha256, so that every worker loads the
    very same file.
    """

    weights: str | None
    sha256: str | None
    device: str | None
    name: str

    def _pin(self, demo: str) -> LocalWeights:
        """Pin the weights; without any, the shipped ``demo`` file."""
        source = weight_source(self.name, self.weights, demo)
        local = fetch(self.name, source, self.sha256)
        object.__setattr__(self, "weights", source)
        object.__setattr__(self, "sha256", local.sha256)
        return local

    @property
    def weights_sha256(self) -> str | None:
        return self.sha256

    def _resident(self, build: Callable[..., nn.Module], *options: Any) -> nn.Module:
        """This process's copy of the network ``build`` makes from the pinned file."""
        local = resolve(self.weights, self.sha256)
        return resident_network(
            build, str(local.path), self.device or default_device(), local.sha256, *options
        )
