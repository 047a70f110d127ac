"""Super-resolution models behind one interface; importing this registers the built-in ones,
each with the options the command lines offer for it."""

from functools import partial

from pipeline.models.base import (
    FUSION_MODELS,
    RGB_MODELS,
    FusionModel,
    GuaranteedFusionModel,
    GuaranteedRGBModel,
    ModelSpec,
    Option,
    RGBModel,
    SamplingRGBModel,
    get_fusion_model,
    get_rgb_model,
)
from pipeline.models.baselines import Bicubic, GramSchmidt
from pipeline.models.published import default_weights, names


def _difffusr(**options: object) -> RGBModel:
    """Imported on demand: torch is heavy and the baselines do not need it."""
    from pipeline.models.diffusion.rgb import DiffFuSRRGB

    return DiffFuSRRGB(**options)


def _difffusr_fusion(**options: object) -> FusionModel:
    """Imported on demand, as ``difffusr`` is."""
    from pipeline.models.fusion.model import DiffFuSRFusion

    return DiffFuSRFusion(**options)


def _weights(model: str, flag: str, what: str) -> tuple[Option, Option]:
    """A learned model's weights (a file or a published name) and the sha256 that pins them."""
    return (
        Option(
            "weights",
            flag,
            f"{what} file (path, fsspec URL or hf://org/repo/file) or the name of published "
            f"weights: {', '.join(names(model))}",
            f"demo on the demo catalog, else {default_weights(model, False)}",
        ),
        Option("sha256", f"{flag}-sha256", f"refuse {what}s whose sha256 differs", metavar="HEX"),
    )


DIFFUSION_OPTIONS = (
    *_weights("difffusr", "--weights", "weight"),
    Option("steps", "--steps", "DDIM steps", "20", int),
    Option("eta", "--eta", "DDIM eta, 0 = deterministic", "0", float),
    Option("seed", "--seed", "noise seed", "0", int),
    Option(
        "samples",
        "--samples",
        "draws per pixel; N > 1 writes their mean and the per-pixel standard deviation",
        "1",
        int,
    ),
    Option("batch", "--batch", "windows per network call", "8 on CPU, 128 on GPU", int),
    Option(
        "precision",
        "--precision",
        "autocast precision",
        "auto, i.e. bf16 on CUDA, fp32 on CPU",
        choices=("auto", "fp32", "bf16", "fp16"),
    ),
    Option("compile", "--compile", "torch.compile the U-Net", switch=True),
    Option(
        "consistent",
        "--no-rgb-consistency",
        "skip the correction that makes B04 B03 B02 average back to the input over each 10 m pixel",
        "corrected",
        switch=False,
        otherwise=True,
    ),
)
FUSION_OPTIONS = (
    *_weights("difffusr-fusion", "--fusion-weights", "fusion weight"),
    Option(
        "consistent",
        "--no-fusion-consistency",
        "skip the correction that makes every fused band average back to its input over "
        "each native pixel",
        "corrected",
        switch=False,
        otherwise=True,
    ),
)

RGB_MODELS["bicubic"] = ModelSpec(Bicubic)
RGB_MODELS["difffusr"] = ModelSpec(_difffusr, DIFFUSION_OPTIONS, "diffusion RGB model")
FUSION_MODELS["gram-schmidt"] = ModelSpec(GramSchmidt)
FUSION_MODELS["bicubic"] = ModelSpec(partial(GramSchmidt, detail=False))
FUSION_MODELS["difffusr-fusion"] = ModelSpec(
    _difffusr_fusion, FUSION_OPTIONS, "learned fusion model"
)

__all__ = [
    "FUSION_MODELS",
    "RGB_MODELS",
    "FusionModel",
    "GuaranteedFusionModel",
    "GuaranteedRGBModel",
    "ModelSpec",
    "Option",
    "RGBModel",
    "SamplingRGBModel",
    "get_fusion_model",
    "get_rgb_model",
]
