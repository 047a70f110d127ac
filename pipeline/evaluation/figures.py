"""A benchmark's figures as PNGs: what the models made of one image next to its input and
reference, the OpenSR-test per-pixel maps, and the metrics as bar charts.

Figures are drawn on matplotlib's ``Figure`` directly (no pyplot, no GUI backend) at a fixed
size in pixels, so that they can be checked and compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch as LegendPatch

from pipeline.evaluation.benchmark import Example
from pipeline.evaluation.report import HEADINGS, Summary
from pipeline.geo.bands import REFLECTANCE_BANDS, RGB_INDEX
from pipeline.protocol.scores import FUSION_METRICS, RGB_METRICS
from pipeline.quality.opensr import HALLUCINATION, IMPROVEMENT, NOT_ASSESSED, OMISSION

DPI = 100
#: Side of one image panel and height of its title, in pixels.
PANEL_PX, TITLE_PX = 200, 30
#: Size of one bar chart, in pixels.
CHART_PX = (300, 240)
#: The false-colour composite of the fusion figure (SWIR, NIR, red): it shows fused 20 m bands.
FALSE_COLOUR = ("B12", "B8A", "B04")
#: Display stretch: these percentiles of the reference map to black and white.
STRETCH = (2, 98)
#: Colours of the correctness classes, by class code.
CLASSES = {
    NOT_ASSESSED: ("not assessed", "#d9d9d9"),
    IMPROVEMENT: ("improvement", "#1a9641"),
    OMISSION: ("omission", "#2c7bb6"),
    HALLUCINATION: ("hallucination", "#d7191c"),
}


def write_figures(out: Path, example: Example, summaries: list[Summary]) -> list[Path]:
    """Every figure whose stage ran; returns the files written."""
    written = []
    if example.rgb:
        written.append(
            _save(
                out / "rgb-examples.png",
                _examples(
                    example.rgb_input,
                    example.rgb,
                    example.reference[RGB_INDEX],
                    f"{example.name}, true colour (B04 B03 B02)",
                ),
            )
        )
        written.append(_save(out / "rgb-quality.png", _quality(example.rgb_maps, example.name)))
        written.append(_save(out / "rgb-metrics.png", _bars(summaries, "rgb", RGB_METRICS)))
    if example.fusion:
        index = [REFLECTANCE_BANDS.index(b) for b in FALSE_COLOUR]
        outputs = {name: image[index] for name, image in example.fusion.items()}
        written.append(
            _save(
                out / "fusion-examples.png",
                _examples(
                    example.fusion_input[index],
                    outputs,
                    example.reference[index],
                    f"{example.name}, false colour ({' '.join(FALSE_COLOUR)})",
                ),
            )
        )
        written.append(
            _save(out / "fusion-metrics.png", _bars(summaries, "fusion", FUSION_METRICS))
        )
    return written


def examples_size(models: int) -> tuple[int, int]:
    """(width, height) in pixels of an examples figure: input, each model, reference."""
    return (models + 2) * PANEL_PX, PANEL_PX + TITLE_PX + TITLE_PX


def quality_size(models: int) -> tuple[int, int]:
    """(width, height) in pixels of the quality-map figure: one row of three per model."""
    return 3 * PANEL_PX + 3 * CHART_PX[0] // 4, models * (PANEL_PX + TITLE_PX) + TITLE_PX


def bars_size(metrics: int) -> tuple[int, int]:
    """(width, height) in pixels of a bar-chart figure, three charts a row."""
    return 3 * CHART_PX[0], -(-metrics // 3) * CHART_PX[1]


def _figure(size: tuple[int, int]) -> Figure:
    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")


def _save(path: Path, figure: Figure) -> Path:
    figure.savefig(path, dpi=DPI)
    return path


def _examples(
    low: np.ndarray, outputs: dict[str, np.ndarray], reference: np.ndarray, title: str
) -> Figure:
    """Input (4× coarser), each model's output and the reference, on one stretch."""
    panels = {"input (40 m)": low, **outputs, "reference (10 m)": reference}
    figure = _figure(examples_size(len(outputs)))
    figure.suptitle(title, fontsize=9)
    lows, highs = (np.percentile(reference, p, axis=(1, 2), keepdims=True) for p in STRETCH)
    for ax, (name, image) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True
    ):
        shown = np.clip((image - lows) / np.maximum(highs - lows, 1e-6), 0, 1)
        ax.imshow(np.moveaxis(shown, 0, -1), interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.set_axis_off()
    return figure


def _quality(maps: dict[str, dict[str, np.ndarray]], name: str) -> Figure:
    """Per RGB model: LR consistency (reflectance), SAD (degrees), the correctness classes."""
    figure = _figure(quality_size(len(maps)))
    figure.suptitle(f"{name}: OpenSR-test maps", fontsize=9)
    axes = figure.subplots(len(maps), 3, squeeze=False)
    codes = sorted(CLASSES)
    classes = ListedColormap([CLASSES[c][1] for c in codes])
    for row, (model, found) in zip(axes, maps.items(), strict=True):
        for ax, key, label, cmap in (
            (row[0], "reflectance", "consistency |LR − SR↓|", "magma"),
            (row[1], "spectral", "SAD °", "viridis"),
        ):
            shown = ax.imshow(found[key], cmap=cmap, vmin=0, interpolation="nearest")
            figure.colorbar(shown, ax=ax, shrink=0.8)
            ax.set_title(f"{model}: {label}", fontsize=8)
        row[2].imshow(
            found["correctness"],
            cmap=classes,
            vmin=codes[0] - 0.5,
            vmax=codes[-1] + 0.5,
            interpolation="nearest",
        )
        row[2].set_title(f"{model}: correctness", fontsize=8)
        row[2].legend(
            handles=[LegendPatch(color=c, label=n) for n, c in CLASSES.values()],
            fontsize=6,
            loc="upper left",
            bbox_to_anchor=(1, 1),
            frameon=False,
        )
        for ax in row:
            ax.set_axis_off()
    return figure


def _bars(summaries: list[Summary], stage: str, metrics: tuple[str, ...]) -> Figure:
    """One chart per metric: a bar per model (and group), the std over images as error bars."""
    rows = [s for s in summaries if s.stage == stage]
    models = list(dict.fromkeys(s.model for s in rows))
    groups = list(dict.fromkeys(s.group for s in rows))
    figure = _figure(bars_size(len(metrics)))
    axes = figure.subplots(-(-len(metrics) // 3), 3, squeeze=False).ravel()
    width = 0.8 / len(models)
    for ax, metric in zip(axes, metrics, strict=False):
        for i, model in enumerate(models):
            chosen = {s.group: s for s in rows if s.model == model and s.metric == metric}
            means = [chosen[g].mean for g in groups]
            stds = [chosen[g].std for g in groups]
            ax.bar(
                np.arange(len(groups)) + (i - (len(models) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                label=model,
                capsize=2,
            )
        ax.set_xticks(
            np.arange(len(groups)),
            [g.replace(" group", "").replace(", real bands only", "\nreal only") for g in groups],
            fontsize=7,
        )
        ax.set_title(HEADINGS[metric], fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    axes[0].legend(fontsize=6)
    return figure
