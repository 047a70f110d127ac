"""Super-resolution models behind one interface; importing this registers the built-in ones."""

from functools import partial

from pipeline.models.base import (
    FUSION_MODELS,
    RGB_MODELS,
    FusionModel,
    RGBModel,
    get_fusion_model,
    get_rgb_model,
)
from pipeline.models.baselines import Bicubic, GramSchmidt

RGB_MODELS["bicubic"] = Bicubic
FUSION_MODELS["gram-schmidt"] = GramSchmidt
FUSION_MODELS["bicubic"] = partial(GramSchmidt, detail=False)

__all__ = [
    "FUSION_MODELS",
    "RGB_MODELS",
    "FusionModel",
    "RGBModel",
    "get_fusion_model",
    "get_rgb_model",
]
