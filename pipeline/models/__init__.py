"""Super-resolution models behind one interface; importing this registers the built-in ones."""

from functools import partial

from pipeline.models.base import (
    FUSION_MODELS,
    RGB_MODELS,
    FusionModel,
    GuaranteedFusionModel,
    GuaranteedRGBModel,
    RGBModel,
    SamplingRGBModel,
    get_fusion_model,
    get_rgb_model,
)
from pipeline.models.baselines import Bicubic, GramSchmidt


def _difffusr(**options: object) -> RGBModel:
    """Imported on demand: torch is heavy and the baselines do not need it."""
    from pipeline.models.diffusion.rgb import DiffFuSRRGB

    return DiffFuSRRGB(**options)


def _difffusr_fusion(**options: object) -> FusionModel:
    """Imported on demand, as ``difffusr`` is."""
    from pipeline.models.fusion.model import DiffFuSRFusion

    return DiffFuSRFusion(**options)


RGB_MODELS["bicubic"] = Bicubic
RGB_MODELS["difffusr"] = _difffusr
FUSION_MODELS["gram-schmidt"] = GramSchmidt
FUSION_MODELS["bicubic"] = partial(GramSchmidt, detail=False)
FUSION_MODELS["difffusr-fusion"] = _difffusr_fusion

__all__ = [
    "FUSION_MODELS",
    "RGB_MODELS",
    "FusionModel",
    "GuaranteedFusionModel",
    "GuaranteedRGBModel",
    "RGBModel",
    "SamplingRGBModel",
    "get_fusion_model",
    "get_rgb_model",
]
