"""What an explanation starts from: the product's window, its models and the 10 m input
around it, all rebuilt from what the product records.

The models are built from the recipe (names, options, and the weights' sha256, which pins the
file: the demo weights on the demo catalog, the published default elsewhere, or the weights
given); the input is the run's own composite of the recorded items (see
:func:`pipeline.product.read.product_input`) over a region around the window, on the product's
10 m pixels, so the models see what they saw when they made the product.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from odc.geo.geobox import GeoBox

from pipeline.errors import ModelError, UserError, reason
from pipeline.geo.bands import SCALE
from pipeline.geo.grid import LATTICE_PIXELS, OutputGrid, lattice_origin
from pipeline.inputs.catalog import is_demo_catalog
from pipeline.models import get_fusion_model, get_rgb_model
from pipeline.models.published import default_weights
from pipeline.models.superresolve import SuperResolver
from pipeline.product.read import product_grid, product_input
from pipeline.product.store import RECIPE

#: The largest window side, in 2.5 m pixels: an explanation is of a detail, not an area.
MAX_WINDOW = 64


@dataclass(frozen=True)
class Window:
    """A window on the product's 2.5 m grid: first row and column, height and width."""

    row: int
    col: int
    height: int = 1
    width: int = 1

    def check(self, grid: OutputGrid) -> None:
        """A UserError unless the window lies in the grid and is small."""
        if not (1 <= self.height <= MAX_WINDOW and 1 <= self.width <= MAX_WINDOW):
            raise UserError(
                f"the window must be 1 to {MAX_WINDOW} pixels on each side, got "
                f"{self.width} x {self.height}"
            )
        inside = (
            self.row >= 0
            and self.row + self.height <= grid.height
            and self.col >= 0
            and self.col + self.width <= grid.width
        )
        if not inside:
            raise UserError(
                f"the window at column {self.col}, row {self.row} ({self.width} x "
                f"{self.height} px) is outside the product's {grid.width} x {grid.height} px grid"
            )

    @property
    def coarse(self) -> tuple[slice, slice]:
        """The 10 m pixels (rows, columns of the grid) the window lies on."""
        return (
            slice(self.row // SCALE, -(-(self.row + self.height) // SCALE)),
            slice(self.col // SCALE, -(-(self.col + self.width) // SCALE)),
        )


@dataclass(frozen=True)
class Region:
    """10 m pixels of the product's grid (the first may lie before it, the last after it)."""

    top: int
    left: int
    height: int
    width: int

    @classmethod
    def around(cls, window: Window, halo: int) -> Region:
        """The window's 10 m pixels and ``halo`` more on each side, widened to the 60 m
        lattice, on which every band's native pixels lie as in the run."""
        rows, cols = window.coarse
        top, left = (_down(s.start - halo) for s in (rows, cols))
        bottom, right = (-_down(-(s.stop + halo)) for s in (rows, cols))
        return cls(top, left, bottom - top, right - left)

    def box(self, grid: OutputGrid) -> GeoBox:
        """The region on the grid's 10 m pixels, which it may reach beyond."""
        coarse = grid.geobox.zoom_out(SCALE)
        return coarse.translate_pix(self.left, self.top).crop((self.height, self.width))

    def bounds(self, grid: OutputGrid) -> tuple[float, float, float, float]:
        return self.box(grid).boundingbox.bbox

    def origin(self, grid: OutputGrid) -> tuple[int, int]:
        """The region's first pixel on the global 10 m lattice (see :mod:`pipeline.models`)."""
        return lattice_origin(self.box(grid))

    def within(self, outer: Region) -> tuple[slice, slice]:
        """This region's pixels in ``outer``'s."""
        return (
            slice(self.top - outer.top, self.top - outer.top + self.height),
            slice(self.left - outer.left, self.left - outer.left + self.width),
        )

    def local(self, window: Window) -> tuple[slice, slice]:
        """The window's 2.5 m pixels in this region's 2.5 m grid."""
        top, left = window.row - SCALE * self.top, window.col - SCALE * self.left
        return slice(top, top + window.height), slice(left, left + window.width)

    def local_coarse(self, window: Window) -> tuple[slice, slice]:
        """The window's 10 m pixels in this region's."""
        rows, cols = window.coarse
        return (
            slice(rows.start - self.top, rows.stop - self.top),
            slice(cols.start - self.left, cols.stop - self.left),
        )


def _down(n: int) -> int:
    return math.floor(n / LATTICE_PIXELS) * LATTICE_PIXELS


def product_attrs(url: str) -> dict[str, Any]:
    """The root attributes of the product at ``url``, or a UserError when there is none or
    it does not record how it was made."""
    try:
        attrs = dict(zarr.open_group(url, mode="r").attrs)
    except Exception as err:  # noqa: BLE001 - any store's failure to open is the user's path
        raise UserError(f"cannot open the product {url}: {reason(err)}") from None
    if not attrs.get("stac_item_ids") or RECIPE not in attrs or "grid_shape" not in attrs:
        raise UserError(
            f"the product {url} records no source items and recipe: its input cannot be rebuilt"
        )
    return attrs


def product_models(
    attrs: Mapping[str, Any],
    weights: str | None = None,
    fusion_weights: str | None = None,
    device: str | None = None,
) -> SuperResolver:
    """The product's two models, as its recipe records them; a learned model's weights must
    have the recorded sha256 (a WeightsError otherwise)."""
    recipe = attrs[RECIPE]
    demo = is_demo_catalog(recipe["stac"])
    try:
        rgb = get_rgb_model(recipe["rgb_model"], **_options(recipe, "rgb", weights, demo, device))
        fusion = get_fusion_model(
            recipe["fusion_model"], **_options(recipe, "fusion", fusion_weights, demo, device)
        )
    except (ValueError, TypeError) as err:
        raise ModelError(f"cannot build the product's models: {reason(err)}") from None
    return SuperResolver(rgb, fusion)


def _options(
    recipe: Mapping[str, Any], stage: str, weights: str | None, demo: bool, device: str | None
) -> dict[str, Any]:
    """A model's recorded options, with its weights pinned to the recorded sha256."""
    options = dict(recipe.get(f"{stage}_model_options", {}))
    sha256 = recipe.get(f"{stage}_model_sha256")
    if sha256:
        name = recipe[f"{stage}_model"]
        options |= {"weights": weights or default_weights(name, demo), "sha256": sha256}
        if device is not None:
            options["device"] = device
    elif weights is not None:
        raise UserError(f"the product's {stage} model {recipe[f'{stage}_model']} has no weights")
    return options


def region_input(attrs: Mapping[str, Any], region: Region) -> np.ndarray:
    """The 12 bands at 10 m over ``region`` (NaN where never clear), as the run composited
    them."""
    composite, _ = product_input(attrs, region.bounds(product_grid(attrs)))
    return composite.values.astype(np.float32)
