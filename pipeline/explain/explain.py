"""Explain a window of a product: the LAM of each of its stages, and of the baselines.

The stages, each with the product's model and, for comparison, the baseline in its place:

* the RGB stage: B04 B03 B02 at 10 m → the window's RGB at 2.5 m;
* each fusion group (10, 20, 60 m): the 12 bands at 10 m and the RGB guide at 2.5 m (the
  product's own RGB, as the fusion saw it) → the group's fused bands at the window.

Each stage runs on a region of its own around the window, its model's own context wide, and
the 10 m input is rebuilt once over a region that holds them all and the guide's context.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import xarray as xr

from pipeline.errors import UserError
from pipeline.explain.differentiable import fusion_function, own_halo, rgb_function
from pipeline.explain.lam import (
    REACHES,
    Attribution,
    Path,
    detector,
    diffusion_index,
    integrate,
    pixel_map,
    shares,
)
from pipeline.explain.target import (
    Region,
    Window,
    product_attrs,
    product_models,
    region_input,
)
from pipeline.geo.bands import (
    BANDS_BY_RESOLUTION,
    FUSED_BY_RESOLUTION,
    REFLECTANCE_BANDS,
    RGB_BANDS,
    RGB_INDEX,
    SCALE,
)
from pipeline.models import FusionModel, RGBModel
from pipeline.models.baselines import Bicubic, GramSchmidt
from pipeline.models.diffusion.rgb import DiffFuSRRGB
from pipeline.models.resident import default_device
from pipeline.models.superresolve import model_input
from pipeline.product.read import product_grid

#: The fusion groups by native resolution, in metres.
FUSION_GROUPS = tuple(BANDS_BY_RESOLUTION)
#: The input channels of a fusion stage's maps: the 12 bands, then the guide.
GUIDE = tuple(f"guide {b}" for b in RGB_BANDS)


@dataclass(frozen=True)
class Settings:
    """How to explain: the path, the detector (see :data:`pipeline.explain.lam.DETECTORS`),
    the diffusion model's single step at noise ``level`` (None: the whole chain), the fusion
    groups, and whether to explain the baselines too."""

    path: Path = field(default_factory=Path)
    detector: str = "value"
    level: int | None = None
    groups: tuple[int, ...] = FUSION_GROUPS
    baselines: bool = True
    #: The learned models' torch device (None: CUDA when present).
    device: str | None = None


@dataclass(frozen=True)
class Stage:
    """One model's attribution at one stage, on the stage's own region."""

    model: str
    stage: str
    #: The output bands the detector reads, and the input channels of the maps, in order.
    bands: tuple[str, ...]
    inputs: tuple[str, ...]
    attribution: Attribution
    #: Pixels per 10 m pixel of each input.
    scales: tuple[int, ...]
    region: Region
    #: The window's 10 m pixels in the region.
    window: tuple[slice, slice]
    seconds: float

    @cached_property
    def map(self) -> np.ndarray:
        """|attribution| per 10 m pixel of the region, over every input channel."""
        return pixel_map(self.attribution.maps, self.scales)

    @property
    def diffusion_index(self) -> float:
        return diffusion_index(self.map)

    @property
    def shares(self) -> dict[int, float]:
        """The share of the attribution within 1, 2 and 4 10 m pixels of the window."""
        return shares(self.map, *self.window, REACHES)

    @cached_property
    def channels(self) -> dict[str, np.ndarray]:
        """|attribution| per 10 m pixel, by input channel (a guide band summed over each 10 m
        pixel's 4 × 4 pixels)."""
        out = {}
        names = iter(self.inputs)
        for m, s in zip(self.attribution.maps, self.scales, strict=True):
            for channel in m:
                out[next(names)] = pixel_map([channel[None]], [s])
        return out

    @property
    def channel_shares(self) -> dict[str, float]:
        total = sum(float(v.sum()) for v in self.channels.values())
        return {k: float(v.sum()) / total if total else 0.0 for k, v in self.channels.items()}


@dataclass(frozen=True)
class Explanation:
    """Every stage explained at a window of a product, and the input they read."""

    product: str
    window: Window
    settings: Settings
    stages: list[Stage]
    #: The 12 bands at 10 m over ``region`` (NaN: no data), which holds every stage's region.
    bands: np.ndarray
    region: Region
    #: max |Δ| between the RGB recomputed at the window and the product's B04 B03 B02.
    reproduced: float


def explain(
    url: str,
    window: Window,
    settings: Settings = Settings(),
    weights: str | None = None,
    fusion_weights: str | None = None,
) -> Explanation:
    """Explain ``window`` of the product at ``url`` (see the module)."""
    attrs = product_attrs(url)
    grid = product_grid(attrs)
    window.check(grid)
    resolver = product_models(attrs, weights, fusion_weights, settings.device)
    if settings.level is not None and not isinstance(resolver.rgb, DiffFuSRRGB):
        raise UserError(
            f"a noise level applies to the diffusion RGB model, and the product "
            f"was made with {resolver.rgb.name}"
        )
    rgb_models = _with_baseline(resolver.rgb, Bicubic(), settings.baselines)
    fusion_models = (
        _with_baseline(resolver.fusion, GramSchmidt(), settings.baselines)
        if settings.groups
        else []
    )
    fusion_halo = max((own_halo(m) for m in fusion_models), default=0)
    rgb_halo = max(own_halo(m) for m in rgb_models)
    outer = Region.around(window, max(rgb_halo, fusion_halo + resolver.rgb.halo))
    bands = region_input(attrs, outer)
    valid, filled = model_input(bands)
    if not valid[outer.local_coarse(window)].any():
        raise UserError(f"the product has no data at column {window.col}, row {window.row}")
    _, guide, _ = resolver.rgb_stage(filled[RGB_INDEX], outer.origin(grid))
    stored = _stored_rgb(url, window)
    reproduced = float(np.nanmax(np.abs(guide[(slice(None), *outer.local(window))] - stored)))
    stages = []
    for model in rgb_models:
        region = Region.around(window, rgb_halo)
        rgb = filled[RGB_INDEX][(slice(None), *region.within(outer))]
        stages.append(_rgb_stage(model, rgb, region, region.origin(grid), window, settings))
    for model in fusion_models:
        region = Region.around(window, fusion_halo)
        rows, cols = region.within(outer)
        high = (
            slice(None),
            slice(SCALE * rows.start, SCALE * rows.stop),
            slice(SCALE * cols.start, SCALE * cols.stop),
        )
        stages += _fusion_stages(
            model, filled[:, rows, cols], guide[high], region, window, settings
        )
    return Explanation(url, window, settings, stages, bands, outer, reproduced)


def _with_baseline(
    model: RGBModel | FusionModel, baseline: RGBModel | FusionModel, wanted: bool
) -> list:
    return [model, baseline] if wanted and model.name != baseline.name else [model]


def _stored_rgb(url: str, window: Window) -> np.ndarray:
    """The product's B04 B03 B02 at the window (NaN: a band it does not have, or no data)."""
    at = xr.open_zarr(url).reflectance.isel(
        y=slice(window.row, window.row + window.height),
        x=slice(window.col, window.col + window.width),
    )
    values = np.full((len(RGB_BANDS), window.height, window.width), np.nan, np.float32)
    for i, b in enumerate(RGB_BANDS):
        if b in at.band.values:
            values[i] = at.sel(band=b).values
    return values


def _device(model: RGBModel | FusionModel) -> torch.device:
    """Where the model's tensors go: a learned model's device, the CPU for the baselines."""
    if not hasattr(model, "device"):
        return torch.device("cpu")
    return torch.device(model.device or default_device())


def _rgb_stage(
    model: RGBModel,
    rgb: np.ndarray,
    region: Region,
    origin: tuple[int, int],
    window: Window,
    settings: Settings,
) -> Stage:
    started = time.perf_counter()
    forward = rgb_function(model, origin, region.local_coarse(window), settings.level)
    detect = detector(settings.detector, *region.local(window))
    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(_device(model))
    result = integrate(forward, {"rgb": detect}, [x], [1], settings.path)["rgb"]
    return Stage(
        model.name,
        "rgb",
        RGB_BANDS,
        RGB_BANDS,
        result,
        (1,),
        region,
        region.local_coarse(window),
        time.perf_counter() - started,
    )


def _fusion_stages(
    model: FusionModel,
    bands: np.ndarray,
    guide: np.ndarray,
    region: Region,
    window: Window,
    settings: Settings,
) -> list[Stage]:
    """Every group asked for, from one forward pass per point of the path."""
    started = time.perf_counter()
    detect = detector(settings.detector, *region.local(window))
    fused = {g: FUSED_BY_RESOLUTION[g] for g in settings.groups}

    def group(names: tuple[str, ...]):
        return lambda out: detect(torch.stack([out[b] for b in names]))

    device = _device(model)
    inputs = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (bands, guide)]
    results = integrate(
        fusion_function(model, settings.groups),
        {g: group(fused[g]) for g in fused},
        inputs,
        [1, SCALE],
        settings.path,
    )
    seconds = (time.perf_counter() - started) / len(fused)
    return [
        Stage(
            model.name,
            f"fusion {g} m",
            fused[g],
            REFLECTANCE_BANDS + GUIDE,
            results[g],
            (1, SCALE),
            region,
            region.local_coarse(window),
            seconds,
        )
        for g in fused
    ]
