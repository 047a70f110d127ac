"""Each model as a torch function that gradients go through, computing what the model computes.

The RGB stage: (3, h, w) at 10 m → (3, 4h, 4w); the fusion stage: the (12, h, w) bands at 10 m
and the (3, 4h, 4w) RGB guide → its fused bands at 2.5 m, by name. Both are the model's own
output, before any radiometric guarantee (a fixed smooth correction towards the input, which
would attribute every fused pixel to its own native pixel). A model without such a form (one
registered by a user) is refused with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from pipeline.errors import ModelError
from pipeline.explain.kernels import TORCH_KERNELS
from pipeline.geo.bands import RGB_BANDS
from pipeline.models import FusionModel, RGBModel
from pipeline.models.baselines import Bicubic, GramSchmidt
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.fusion.model import DiffFuSRFusion

RGBFunction = Callable[[torch.Tensor], torch.Tensor]
FusionFunction = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def own_halo(model: RGBModel | FusionModel) -> int:
    """The context, in 10 m pixels, of the model's own output (before any guarantee, whose
    reach a learned model's ``halo`` adds)."""
    return getattr(model, "own_halo", model.halo)


def rgb_function(
    model: RGBModel,
    origin: tuple[int, int],
    focus: tuple[slice, slice] | None = None,
    level: int | None = None,
) -> RGBFunction:
    """The RGB model on a block whose first pixel is at ``origin`` (global 10 m lattice).
    The diffusion model: the mean of its samples through the whole DDIM chain with the
    product's own position-keyed noise, or one step at the noise ``level``, sampling only the
    windows that touch ``focus`` (see :meth:`DiffFuSRRGB.draw_tensor`)."""
    if type(model) is Bicubic:
        return lambda rgb: model.upsample(rgb, TORCH_KERNELS)
    if type(model) is DiffFuSRRGB:
        return lambda rgb: model.draw_tensor(rgb, origin, focus, level).mean(0)
    raise ModelError(
        f"the RGB model {model.name} cannot be explained: it has no differentiable form"
    )


def fusion_function(model: FusionModel, resolutions: Collection[int]) -> FusionFunction:
    """The fusion model's fused bands (not B04 B03 B02, the guide's own), at least those of
    the groups of these native ``resolutions``."""
    if type(model) is GramSchmidt:

        def baseline(bands: torch.Tensor, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
            fused = model.fuse(bands, rgb, TORCH_KERNELS)
            return {b: v for b, v in fused.items() if b not in RGB_BANDS}

        return baseline
    if type(model) is DiffFuSRFusion:
        return lambda bands, rgb: model.fuse_tensors(bands, rgb, resolutions)
    raise ModelError(
        f"the fusion model {model.name} cannot be explained: it has no differentiable form"
    )
