"""Quality of super-resolved images: OpenSR-test metrics and fusion metrics, with pixel maps."""

from pipeline.quality.fusion import FusionResult, fusion_metrics
from pipeline.quality.opensr import (
    HALLUCINATION,
    IMPROVEMENT,
    NOT_ASSESSED,
    OMISSION,
    OpenSRResult,
    opensr_metrics,
)

__all__ = [
    "HALLUCINATION",
    "IMPROVEMENT",
    "NOT_ASSESSED",
    "OMISSION",
    "FusionResult",
    "OpenSRResult",
    "fusion_metrics",
    "opensr_metrics",
]
