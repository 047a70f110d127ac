"""Quality of super-resolved images: OpenSR-test metrics and fusion metrics, with pixel maps,
blockiness, and the per-pixel quality layers of a product (:mod:`pipeline.quality.layers`).

The metrics are imported on first use: they need torch, scikit-image and OpenCV, which the
region flow's workers, which only compute the layers, should not have to load.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.quality.footprints import blockiness
    from pipeline.quality.fusion import FusionResult, fusion_metrics
    from pipeline.quality.opensr import (
        HALLUCINATION,
        IMPROVEMENT,
        NOT_ASSESSED,
        OMISSION,
        OpenSRResult,
        opensr_metrics,
    )

_HOMES = {
    "blockiness": "footprints",
    "FusionResult": "fusion",
    "fusion_metrics": "fusion",
    **dict.fromkeys(
        (
            "HALLUCINATION",
            "IMPROVEMENT",
            "NOT_ASSESSED",
            "OMISSION",
            "OpenSRResult",
            "opensr_metrics",
        ),
        "opensr",
    ),
}

__all__ = [
    "HALLUCINATION",
    "IMPROVEMENT",
    "NOT_ASSESSED",
    "OMISSION",
    "FusionResult",
    "OpenSRResult",
    "blockiness",
    "fusion_metrics",
    "opensr_metrics",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"pipeline.quality.{_HOMES[name]}"), name)
