"""A benchmark's scores as tables: mean ± std over images per model, group and metric, as CSV
(full precision, for machines) and as markdown laid out like the DiffFuSR paper's Table I
(RGB ×4) and Table IV (fusion per band group)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from pipeline.evaluation.benchmark import BenchmarkResult, Score
from pipeline.protocol.scores import FUSION_METRICS, RGB_METRICS, SSIM_WINDOW

#: Column headings, with ↑ where higher is better and ↓ where lower is.
HEADINGS = {
    "psnr": "PSNR dB ↑",
    "ssim": "SSIM ↑",
    "reflectance": "reflectance ↓",
    "spectral": "spectral ° ↓",
    "spatial": "spatial px ↓",
    "synthesis": "synthesis ↑",
    "improvement": "improvement ↑",
    "omission": "omission ↓",
    "hallucination": "hallucination ↓",
    "blockiness": "blockiness ↓",
    "r2": "R² ↑",
    "cross_correlation": "CC ↑",
    "mse": "MSE ↓",
    "ergas": "ERGAS ↓",
}


@dataclass(frozen=True)
class Summary:
    """Mean and population standard deviation over the images where the metric is defined
    (``images`` of them; SSIM is undefined on a grid narrower than its window)."""

    stage: str
    model: str
    group: str
    bands: str
    metric: str
    mean: float
    std: float
    images: int


def summarize(scores: Iterable[Score]) -> list[Summary]:
    """One summary per (stage, model, group, metric), in the order the scores came."""
    values: dict[tuple[str, str, str, str, str], list[float]] = {}
    for s in scores:
        values.setdefault((s.stage, s.model, s.group, " ".join(s.bands), s.metric), []).append(
            s.value
        )
    summaries = []
    for key, found in values.items():
        defined = np.array([v for v in found if not math.isnan(v)], dtype=np.float64)
        mean, std = (
            (float(defined.mean()), float(defined.std())) if len(defined) else (math.nan, math.nan)
        )
        summaries.append(Summary(*key, mean, std, len(defined)))
    return summaries


def write_csv(path: Path, rows: Iterable[Summary | Score]) -> None:
    """Rows of one dataclass as CSV, floats at full precision, so that a rerun can be compared
    byte for byte."""
    rows = list(rows)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(field.name for field in fields(rows[0]))
        for row in rows:
            writer.writerow(" ".join(v) if isinstance(v, tuple) else v for v in astuple(row))


def cell(metric: str, value: float) -> str:
    """A number as tables show it: PSNR in dB to 0.01, MSE in scientific notation
    (reflectance² is tiny), the rest to 4 decimals; n/a for undefined."""
    if math.isnan(value):
        return "n/a"
    if metric == "mse":
        return f"{value:.3e}"
    return f"{value:.2f}" if metric == "psnr" else f"{value:.4f}"


def mean_std(row: Summary) -> str:
    if math.isnan(row.mean):
        return "n/a"
    return f"{cell(row.metric, row.mean)} ± {cell(row.metric, row.std)}"


def labelled(bands: str, labels: dict[str, str]) -> str:
    """'B11 B12 (real); B05 B06 (synthetic)': which of a group's bands are real data."""
    parts = []
    for kind in ("real", "synthetic"):
        chosen = [b for b in bands.split() if labels[b] == kind]
        if chosen:
            parts.append(f"{' '.join(chosen)} ({kind})")
    return "; ".join(parts)


def markdown(
    result: BenchmarkResult,
    summaries: list[Summary],
    labels: dict[str, str],
    settings: dict[str, str],
) -> str:
    """The report: settings, then Table I and Table IV (each only when its stage ran)."""
    lines = ["# Wald-protocol benchmark", ""]
    lines += [f"* {key}: {value}" for key, value in settings.items()]
    lines += [
        f"* images ({len(result.images)}): {', '.join(result.images)}",
        "* cells: mean ± population std over the images; s/image: wall time per image, "
        "not part of the CSV",
    ]
    index = {(s.stage, s.model, s.group, s.metric): s for s in summaries}
    rgb = [s for s in summaries if s.stage == "rgb" and s.metric == RGB_METRICS[0]]
    if rgb:
        lines += [
            "",
            f"## RGB ×4 (Table I): {labelled(rgb[0].bands, labels)}",
            "",
            "| model | " + " | ".join(HEADINGS[m] for m in RGB_METRICS) + " | s/image |",
            "|---|" + "---:|" * (len(RGB_METRICS) + 1),
        ]
        for first in rgb:
            cells = [mean_std(index["rgb", first.model, first.group, m]) for m in RGB_METRICS]
            took = result.seconds["rgb", first.model]
            lines.append(f"| {first.model} | " + " | ".join(cells) + f" | {took:.2f} |")
    fusion = [s for s in summaries if s.stage == "fusion" and s.metric == FUSION_METRICS[0]]
    if fusion:
        lines += [
            "",
            "## Band fusion per group (Table IV): ERGAS h/l = 1/4",
            "",
            "| group | bands | model | "
            + " | ".join(HEADINGS[m] for m in FUSION_METRICS)
            + " | s/image |",
            "|---|---|---|" + "---:|" * (len(FUSION_METRICS) + 1),
        ]
        for first in sorted(fusion, key=lambda s: _group_order(s.group)):
            cells = [mean_std(index["fusion", first.model, first.group, m]) for m in FUSION_METRICS]
            took = result.seconds["fusion", first.model]
            lines.append(
                f"| {first.group} | {labelled(first.bands, labels)} | {first.model} | "
                + " | ".join(cells)
                + f" | {took:.2f} |"
            )
    return "\n".join(lines + _notes(summaries, labels)) + "\n"


def _notes(summaries: list[Summary], labels: dict[str, str]) -> list[str]:
    """The caveats that apply to these tables."""
    notes = []
    if "synthetic" in labels.values():
        notes.append(
            "Synthetic bands are derived from the real ones: only the real bands' "
            "scores say something about real imagery."
        )
    if any(math.isnan(s.mean) for s in summaries):
        notes.append(
            "n/a: undefined on every image, such as SSIM on a native grid narrower "
            f"than its {SSIM_WINDOW}-pixel window (a small patch's 60 m grid)."
        )
    return ["", *(f"* {note}" for note in notes)] if notes else []


def _group_order(group: str) -> tuple[int, str]:
    """Groups by resolution, each group's real-bands-only row after it."""
    return int(group.split()[0]), group
