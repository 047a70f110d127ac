"""The figures of an explanation: the input with the attribution over it, and per input band.

Figures are made without pyplot, so that they draw anywhere (a command without a display, a
notebook) and are the caller's to save or show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pipeline.explain.explain import Explanation, Stage
from pipeline.explain.target import Region
from pipeline.geo.bands import RGB_INDEX

#: Share of the largest attribution under which the overlay is transparent.
FLOOR = 0.02
#: Narrowest summary figure, in inches: with one or two stages its panels are scaled up to it,
#: keeping their shape (widening alone leaves blank margins that a notebook crops away).
MIN_SUMMARY_WIDTH = 9.0


def true_colour(bands: np.ndarray) -> np.ndarray:
    """(12, h, w) reflectance → an (h, w, 3) image: B04 B03 B02 stretched from their 2nd to
    98th percentile; no data black."""
    rgb = bands[RGB_INDEX].astype(np.float64)
    finite = rgb[np.isfinite(rgb)]
    low, high = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    return np.nan_to_num(np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)).transpose(1, 2, 0)


def _overlay(
    ax: Axes, background: np.ndarray, heat: np.ndarray, window: tuple[slice, slice], title: str
) -> None:
    ax.imshow(background, interpolation="nearest")
    scaled = heat / heat.max() if heat.max() > 0 else heat
    ax.imshow(
        np.ma.masked_less(scaled, FLOOR),
        cmap="inferno",
        vmin=0,
        vmax=1,
        alpha=0.7,
        interpolation="nearest",
    )
    rows, cols = window
    ax.add_patch(
        Rectangle(
            (cols.start - 0.5, rows.start - 0.5),
            cols.stop - cols.start,
            rows.stop - rows.start,
            fill=False,
            edgecolor="cyan",
            linewidth=1,
        )
    )
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _stage_input(explanation: Explanation, region: Region) -> np.ndarray:
    return explanation.bands[(slice(None), *region.within(explanation.region))]


def stage_figure(explanation: Explanation, stage: Stage) -> Figure:
    """The stage's input (true colour, 10 m) with the attribution overlaid, the window in
    cyan; for a fusion stage also the attribution per input band and of the guide."""
    background = true_colour(_stage_input(explanation, stage.region))
    title = (
        f"{stage.model}, {stage.stage}: diffusion index {stage.diffusion_index:.1f}, "
        f"{100 * stage.shares[1]:.0f} % within 1 px"
    )
    if stage.stage == "rgb":
        fig = Figure(figsize=(5, 5), layout="constrained")
        _overlay(fig.add_subplot(), background, stage.map, stage.window, title)
        return fig
    channels = stage.channels
    bands = [k for k in channels if not k.startswith("guide")]
    guide = sum(v for k, v in channels.items() if k.startswith("guide"))
    panels = {**{b: channels[b] for b in bands}, "guide (B04 B03 B02)": guide}
    top = max(float(v.max()) for v in panels.values()) or 1.0
    fig = Figure(figsize=(14, 6), layout="constrained")
    grid = fig.add_gridspec(2, 9)
    _overlay(
        fig.add_subplot(grid[:, :2]),
        background,
        stage.map,
        stage.window,
        title.replace(": ", ":\n", 1),
    )
    for i, (name, values) in enumerate(panels.items()):
        ax = fig.add_subplot(grid[i // 7, 2 + i % 7])
        ax.imshow(values, cmap="inferno", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(
            f"{name}: {100 * float(values.sum()) / max(_total(panels), 1e-30):.0f} %", fontsize=8
        )
        ax.set_axis_off()
    return fig


def _total(panels: dict[str, np.ndarray]) -> float:
    return sum(float(v.sum()) for v in panels.values())


def summary_figure(explanation: Explanation) -> Figure:
    """Every stage's overlay side by side, one row per model."""
    models = list(dict.fromkeys(s.model for s in explanation.stages))
    stages = list(dict.fromkeys(s.stage for s in explanation.stages))
    width, height = 3.2 * len(stages), 3.4 * len(models)
    scale = max(1.0, MIN_SUMMARY_WIDTH / width)
    fig = Figure(figsize=(width * scale, height * scale), layout="constrained")
    axes = fig.subplots(len(models), len(stages), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for s in explanation.stages:
        ax = axes[models.index(s.model), stages.index(s.stage)]
        _overlay(
            ax,
            true_colour(_stage_input(explanation, s.region)),
            s.map,
            s.window,
            f"{s.model}, {s.stage}\nDI {s.diffusion_index:.1f}, "
            f"{100 * s.shares[1]:.0f} % within 1 px",
        )
    return fig


def write_figures(explanation: Explanation, folder: Path) -> dict[tuple[str, str], str]:
    """One PNG per stage in ``folder``; their file names by (model, stage)."""
    names = {}
    for stage in explanation.stages:
        name = f"{stage.model}-{stage.stage.replace(' ', '-')}.png"
        stage_figure(explanation, stage).savefig(folder / name, dpi=100)
        names[stage.model, stage.stage] = name
    return names
