"""The JSON report of an explanation: where, how, and per stage the LAM's figures."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.explain.explain import Explanation, Stage


def stage_entry(stage: Stage, figure: str | None = None) -> dict:
    """One stage's figures: the diffusion index, the shares within 1, 2 and 4 10 m pixels of
    the window and per input channel, and the path integral's completeness."""
    a = stage.attribution
    entry = {
        "model": stage.model,
        "stage": stage.stage,
        "bands": list(stage.bands),
        "diffusion_index": round(stage.diffusion_index, 3),
        "share_within_10m_px": {str(r): round(s, 4) for r, s in stage.shares.items()},
        "input_shares": {k: round(v, 4) for k, v in stage.channel_shares.items()},
        "detector_change": a.change,
        "attribution_sum": a.total,
        "integration_error": a.error,
        "region_10m": {
            "row": stage.region.top,
            "col": stage.region.left,
            "height": stage.region.height,
            "width": stage.region.width,
        },
        "seconds": round(stage.seconds, 3),
    }
    if figure:
        entry["figure"] = figure
    return entry


def report(explanation: Explanation, figures: dict[tuple[str, str], str] | None = None) -> dict:
    """The whole explanation as JSON-ready data; ``figures``: file name by (model, stage)."""
    w, s = explanation.window, explanation.settings
    figures = figures or {}
    return {
        "product": explanation.product,
        "window": {"row": w.row, "col": w.col, "height": w.height, "width": w.width},
        "detector": s.detector,
        "path": {"steps": s.path.steps, "sigma_10m_px": s.path.sigma},
        "diffusion_noise_level": s.level,
        "reproduced_rgb_max_abs_diff": explanation.reproduced,
        "stages": [stage_entry(st, figures.get((st.model, st.stage))) for st in explanation.stages],
    }


def write_report(
    explanation: Explanation, path: Path, figures: dict[tuple[str, str], str] | None = None
) -> None:
    path.write_text(json.dumps(report(explanation, figures), indent=2) + "\n")
