"""The product's verdict: one word from its quality summary, so that a bad product is said to be
bad where every user looks (the command's last line, the STAC Item, the notebook's top).

The per-pixel rule says where a product moved away from its input; the verdict says whether it
did so in more than a few places: more than ``FLAGGED_FRACTION_LIMIT`` of the pixels with data
flagged. The summary's means (consistency, spectral angle) go with it, to say how far.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.quality.layers import FLAGGED_FRACTION_LIMIT

#: The verdicts: nothing to worry about, too many pixels flagged, no pixel with data to judge.
OK, HALLUCINATION_RISK, NOT_ASSESSED = "ok", "hallucination risk", "not assessed"


def verdict(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``verdict``, ``verdict_reason`` and ``verdict_limit`` of a product quality summary (its
    ``hallucination_risk_fraction``, absent when no finished tile has data)."""
    fraction = summary.get("hallucination_risk_fraction")
    if fraction is None:
        return {
            "verdict": NOT_ASSESSED,
            "verdict_reason": "no finished tile has data",
            "verdict_limit": FLAGGED_FRACTION_LIMIT,
        }
    return {
        "verdict": HALLUCINATION_RISK if fraction > FLAGGED_FRACTION_LIMIT else OK,
        "verdict_reason": f"{_percent(fraction)} of the product's pixels are flagged as "
        f"hallucination risk (limit {_percent(FLAGGED_FRACTION_LIMIT)})",
        "verdict_limit": FLAGGED_FRACTION_LIMIT,
    }


def warning_line(summary: Mapping[str, Any]) -> str | None:
    """The one line a command ends with when the summary's verdict is a hallucination risk."""
    if summary.get("verdict") != HALLUCINATION_RISK:
        return None
    return (
        f"warning: {summary['verdict_reason']}, mean consistency "
        f"{summary['mean_consistency']:.2g}, spectral angle {summary['mean_spectral_angle']:.1f}°"
        ": see docs/quality.md"
    )


def no_data_line(summary: Mapping[str, Any]) -> str | None:
    """The one line a command ends with when tiles were finished but not one of their pixels
    has data: a product that looks made and holds nothing."""
    if not summary.get("tiles_done") or summary.get("valid_fraction"):
        return None
    return (
        f"warning: all {summary['tiles_done']} finished tiles are no data: no clear "
        "observation of the AOI (every scene cloudy there, or no scene over it)"
    )


def _percent(fraction: float) -> str:
    """0.234 → "23.4 %", 0.05 → "5 %"."""
    return f"{round(100 * fraction, 1):g} %"
