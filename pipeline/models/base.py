"""The model interface of the super-resolution stage, and the registry of the models with
their options.

Two stages, each a small protocol so that baselines and learned models are interchangeable:
the RGB stage takes B04 B03 B02 at 10 m to 2.5 m; the fusion stage takes all 12 bands at 10 m
(20 m and 60 m bands as read onto the 10 m grid) plus the 2.5 m RGB and returns all 12 bands
at 2.5 m. ``halo`` is the context, in 10 m pixels, an output pixel depends on; ``origin`` is the
block's position on the global 10 m pixel lattice of the output CRS (row = −y / 10 m,
col = x / 10 m of its top-left corner), for models whose noise must follow the pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


class RGBModel(Protocol):
    name: str
    halo: int
    weights_sha256: str | None

    def __call__(self, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """(3, h, w) reflectance at 10 m → (3, 4h, 4w) at 2.5 m."""
        ...


@runtime_checkable
class SamplingRGBModel(RGBModel, Protocol):
    """An RGB model that draws ``samples`` stochastic outputs per block (e.g. diffusion)."""

    samples: int

    def sample(
        self, rgb: np.ndarray, origin: tuple[int, int], margin: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mean, per-pixel standard deviation) over the samples, both (3, 4h, 4w).

        ``margin``: the 10 m pixels at each edge of the block whose output the caller
        discards (a halo); the model may leave out the work that only they need, and leaves
        their output undefined. The pixels kept near the work left out may then differ by a
        few DN from those of ``margin`` 0 (see ``DiffFuSRRGB.draw``)."""
        ...


@runtime_checkable
class GuaranteedRGBModel(SamplingRGBModel, Protocol):
    """A sampling RGB model whose output carries the radiometric guarantee when ``consistent``:
    its own draws, then their correction, apart, so that the quality layers can judge what
    the model itself made (the corrected product averages back to its input by construction)."""

    consistent: bool

    def draw(self, rgb: np.ndarray, origin: tuple[int, int], margin: int = 0) -> np.ndarray:
        """The model's own samples (S, 3, 4h, 4w), before any guarantee; defined wherever
        their correction reaches a pixel outside ``margin`` (see :meth:`sample`)."""
        ...

    def correct(self, draws: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """``draws`` made to average back to ``rgb`` over every 10 m pixel."""
        ...


class FusionModel(Protocol):
    name: str
    halo: int
    weights_sha256: str | None

    def __call__(self, bands: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """(12, h, w) at 10 m and the (3, 4h, 4w) RGB at 2.5 m → (12, 4h, 4w) at 2.5 m."""
        ...


@runtime_checkable
class GuaranteedFusionModel(FusionModel, Protocol):
    """A fusion model whose output carries the radiometric guarantee when ``consistent``,
    with its own prediction and the correction apart (see :class:`GuaranteedRGBModel`)."""

    consistent: bool

    def predict(self, bands: np.ndarray, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """The model's own (12, 4h, 4w) output, before any guarantee."""
        ...

    def correct(self, out: np.ndarray, bands: np.ndarray) -> np.ndarray:
        """``out`` made to average back to ``bands`` over every native pixel."""
        ...


@dataclass(frozen=True)
class Option:
    """One option a model takes, as the command lines offer it: ``flag`` gives the model's
    keyword ``key``. Kept with the model, so that a command lists it without knowing the model."""

    key: str
    flag: str
    help: str
    #: What the model does without it, as the help says it (None: the help says nothing).
    default: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    #: Not None for a switch, a flag without a value: what the flag gives the model ...
    switch: object = None
    #: ... and what the model is given without the flag (None: nothing, its own default).
    otherwise: object = None

    @property
    def text(self) -> str:
        """The help line: what it does, then its default."""
        return self.help if self.default is None else f"{self.help} (default: {self.default})"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and the options it takes."""

    build: Callable[..., Any]
    options: tuple[Option, ...] = ()
    #: What its options are called together on a command line ("diffusion RGB model").
    title: str = ""

    @property
    def learned(self) -> bool:
        """Whether it runs on a torch device (keyword ``device``) with weights: a file or a
        published name (the options of keys ``weights`` and ``sha256``)."""
        return self.option("weights") is not None

    def option(self, key: str) -> Option | None:
        """The option of keyword ``key``, if the model takes it."""
        return next((o for o in self.options if o.key == key), None)


#: The models of each stage by name, in the order they are listed.
RGB_MODELS: dict[str, ModelSpec] = {}
FUSION_MODELS: dict[str, ModelSpec] = {}


def get_rgb_model(name: str, **options: object) -> RGBModel:
    return _build(RGB_MODELS, "RGB", name, options)


def get_fusion_model(name: str, **options: object) -> FusionModel:
    return _build(FUSION_MODELS, "fusion", name, options)


def _build(registry: dict[str, ModelSpec], kind: str, name: str, options: dict) -> Any:
    if name not in registry:
        raise ValueError(f"unknown {kind} model {name!r}; registered: {', '.join(registry)}")
    return registry[name].build(**options)


def flag_of(model: str, key: str = "weights") -> str:
    """The command-line flag of a learned model's option ``key`` (by default its weights)."""
    spec = RGB_MODELS.get(model) or FUSION_MODELS[model]
    return spec.option(key).flag
