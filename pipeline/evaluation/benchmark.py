"""Registered models run over an evaluation set by the Wald protocol, one image at a time.

RGB stage: each patch's B04 B03 B02 degraded ×4 (:func:`~pipeline.protocol.wald.rgb_input`),
super-resolved back by every RGB model and scored against the patch. Fusion stage: all 12
bands degraded ×4 from their native grids (:func:`~pipeline.protocol.wald.wald_trial`), fused
by every fusion model with the patch's real 10 m RGB as the guide, and each group scored on
its native grid against the patch's. The
scores are flat records, one per image, model, group and metric, so that tables, CSVs and
charts are all views of one list.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.evaluation.data import EvaluationSet, Patch
from pipeline.geo.bands import RGB_BANDS, RGB_INDEX, SCALE
from pipeline.models import FusionModel, RGBModel
from pipeline.protocol.scores import rgb_scores
from pipeline.protocol.wald import FusionTrial, rgb_input, wald_trial

#: The group name of the RGB stage's scores.
RGB_GROUP = "RGB"


@dataclass(frozen=True)
class Score:
    """One number of one image."""

    stage: str  # "rgb" or "fusion"
    model: str
    group: str
    bands: tuple[str, ...]
    image: str
    metric: str
    value: float


@dataclass
class Example:
    """One image's arrays, kept for the figures: its reference (12, P, P), the inputs of both
    stages, every model's output and the RGB models' OpenSR-test maps."""

    name: str
    reference: np.ndarray
    rgb_input: np.ndarray
    fusion_input: np.ndarray
    rgb: dict[str, np.ndarray] = field(default_factory=dict)
    rgb_maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    fusion: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class BenchmarkResult:
    scores: list[Score]
    example: Example
    #: Wall seconds per image of each (stage, model).
    seconds: dict[tuple[str, str], float]
    images: list[str]


def run_benchmark(
    data: EvaluationSet,
    rgb_models: dict[str, RGBModel],
    fusion_models: dict[str, FusionModel],
    on_step: Callable[[], None] = lambda: None,
) -> BenchmarkResult:
    """Every model on every patch, scored; ``on_step`` after each model call. The first patch
    is kept as the figures' example."""
    scores: list[Score] = []
    seconds: dict[tuple[str, str], float] = {}
    example = None
    for patch in data.patches:
        lr, trial = rgb_input(patch.bands[RGB_INDEX]), wald_trial(patch.bands, _lr_origin(patch))
        keep = example is None
        if keep:
            example = Example(patch.name, patch.bands, lr, trial.bands)
        for name, model in rgb_models.items():
            sr, took = _timed(model, lr, _lr_origin(patch))
            values, maps = rgb_scores(lr, sr, patch.bands[RGB_INDEX])
            scores += [
                Score("rgb", name, RGB_GROUP, RGB_BANDS, patch.name, m, float(v))
                for m, v in values.items()
            ]
            seconds["rgb", name] = seconds.get(("rgb", name), 0.0) + took
            if keep:
                example.rgb[name], example.rgb_maps[name] = sr, maps
            on_step()
        for name, model in fusion_models.items():
            output, groups, took = run_trial(model, trial, data.labels)
            scores += [
                Score("fusion", name, group, tuple(g["bands"]), patch.name, m, float(v))
                for group, g in groups.items()
                for m, v in g["mean"].items()
            ]
            seconds["fusion", name] = seconds.get(("fusion", name), 0.0) + took
            if keep:
                example.fusion[name] = output
            on_step()
    images = [p.name for p in data.patches]
    per_image = {key: total / len(images) for key, total in seconds.items()}
    return BenchmarkResult(scores, example, per_image, images)


def run_trial(
    model: FusionModel, trial: FusionTrial, labels: dict[str, str]
) -> tuple[np.ndarray, dict[str, dict], float]:
    """A fusion model on one trial: its output, its scores per group and its wall seconds."""
    output, took = _timed(model, trial.bands, trial.rgb, trial.origin)
    return output, trial.score(output, labels), took


def _lr_origin(patch: Patch) -> tuple[int, int]:
    """Where the patch's 40 m input lies on a 40 m lattice: a model whose noise follows the
    pixel position draws different noise for each patch."""
    row, column = patch.origin
    return row // SCALE, column // SCALE


def _timed(model: Callable[..., np.ndarray], *args: object) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    out = model(*args)
    return np.asarray(out, dtype=np.float32), time.perf_counter() - started
