"""The product's output grid and its tiles, on odc-geo's GeoBox.

The output grid has 2.5 m pixels whose edges lie on a 60 m lattice, so that 4 output pixels make
one 10 m pixel and 24 make one 60 m pixel. A tile (a square of ``tile_size`` output pixels, a
multiple of 24) is the unit of work, of failure and restart, and of Zarr sharding.

The grid's affine is written once (:attr:`OutputGrid.geobox`); every other corner, bound,
transform and coordinate (a tile's, the 10 m pixels the models read around it, an overview
level's) is a GeoBox operation on it: a slice, a zoom, a pad.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from pipeline.geo.aoi import project
from pipeline.geo.bands import INPUT_RESOLUTION, MAX_RATIO, RESOLUTION, SCALE

#: Lattice that tile edges follow so every band's native pixels nest in a tile (one 60 m pixel).
LATTICE = MAX_RATIO * INPUT_RESOLUTION
#: Tile sizes must be a multiple of this many output pixels (one 60 m pixel).
TILE_QUANTUM = int(LATTICE / RESOLUTION)
#: 10 m pixels per lattice cell: blocks and halos are whole multiples of it.
LATTICE_PIXELS = MAX_RATIO
#: The largest tile edge in output pixels (76.8 km): twice the default on a GPU. A tile is one
#: Zarr shard, which a worker holds whole: 12 bands of it are 22.6 GB as stored integers and
#: twice that as float32.
MAX_TILE_SIZE = 30720


@dataclass(frozen=True)
class Tile:
    """One square of the output grid, addressed by its tile row and column."""

    row: int
    col: int
    y_off: int  # first output pixel row
    x_off: int  # first output pixel column
    height: int  # output pixels
    width: int

    @property
    def key(self) -> str:
        return f"{self.row}_{self.col}"


@dataclass(frozen=True)
class OutputGrid:
    """The product's 2.5 m grid: CRS, top-left corner, size in pixels, tile size."""

    crs: CRS
    x0: float
    y0: float
    width: int
    height: int
    tile_size: int

    @cached_property
    def geobox(self) -> GeoBox:
        """The grid as a GeoBox: its shape, and the affine of its 2.5 m pixels from the corner."""
        affine = Affine(RESOLUTION, 0.0, self.x0, 0.0, -RESOLUTION, self.y0)
        return GeoBox((self.height, self.width), affine, self.crs)

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """Affine coefficients (a, b, c, d, e, f) of the output pixel grid."""
        return transform(self.geobox)

    @property
    def geotransform(self) -> str:
        """GDAL GeoTransform string, as CF ``spatial_ref`` variables carry it."""
        return geotransform(self.geobox)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Bounds (minx, miny, maxx, maxy) of the grid."""
        return self.geobox.boundingbox.bbox

    def level(self, level: int) -> GeoBox:
        """Overview level ``level`` (0: the grid): the same corner, pixels 2^level times larger,
        a last row and column that the grid fills only in part."""
        return self.geobox.zoom_out(2**level) if level else self.geobox

    def tile_box(self, tile: Tile) -> GeoBox:
        """The tile's part of the grid."""
        return self.geobox[
            tile.y_off : tile.y_off + tile.height, tile.x_off : tile.x_off + tile.width
        ]

    def tile_bounds(self, tile: Tile, halo: float = 0.0) -> tuple[float, float, float, float]:
        """Bounds (minx, miny, maxx, maxy) of a tile, widened by ``halo`` metres on each side:
        the grid's affine at the tile's corners, the same as :meth:`tile_box`'s bounds at a
        sixth of the cost (planning a continent asks for it half a million times)."""
        affine = self.geobox.affine
        left, top = affine * (tile.x_off, tile.y_off)
        right, bottom = affine * (tile.x_off + tile.width, tile.y_off + tile.height)
        return left - halo, bottom - halo, right + halo, top + halo

    def input_box(self, tile: Tile, halo: int) -> GeoBox:
        """The 10 m pixels that the models read for a tile: its own and ``halo`` more on each
        side (the tile's edges lie on the 60 m lattice, so its 10 m pixels are whole)."""
        return self.tile_box(tile).zoom_out(SCALE).pad(halo)

    def input_bounds(self, tile: Tile, halo: int) -> tuple[float, float, float, float]:
        """Bounds of :meth:`input_box`: the tile's, widened by ``halo`` 10 m pixels."""
        return self.tile_bounds(tile, halo * INPUT_RESOLUTION)

    def all_tiles(self) -> Iterator[Tile]:
        rows, cols = self._tile_counts
        for row in range(rows):
            yield from self._row(row, range(cols))

    def tiles_in(self, footprint: BaseGeometry) -> list[Tile]:
        """Tiles that intersect ``footprint`` (a polygon in the grid's CRS), not just its bbox.

        Tested a row of tiles at a time with shapely's vectorised predicates, so that the
        million tiles of a continent's bounding box take seconds.
        """
        shapely.prepare(footprint)
        rows, cols = self._tile_counts
        n = self.tile_size
        columns = np.minimum(np.arange(cols + 1) * n, self.width)
        lines = np.minimum(np.arange(rows + 1) * n, self.height)
        xs, _ = self.geobox.pix2wld(columns, np.zeros_like(columns))  # tile column edges
        _, ys = self.geobox.pix2wld(np.zeros_like(lines), lines)  # tile row edges, downwards
        tiles = []
        for row in range(rows):
            cells = shapely.box(xs[:-1], ys[row + 1], xs[1:], ys[row])
            hits = shapely.intersects(footprint, cells)
            tiles += self._row(row, np.flatnonzero(hits).tolist())
        return tiles

    @property
    def _tile_counts(self) -> tuple[int, int]:
        """Rows and columns of tiles, the last of each ending at the grid's edge."""
        return math.ceil(self.height / self.tile_size), math.ceil(self.width / self.tile_size)

    def _row(self, row: int, cols: Iterable[int]) -> list[Tile]:
        """The tiles of a row at columns ``cols``."""
        n = self.tile_size
        y = row * n
        height = min(n, self.height - y)
        return [Tile(row, col, y, col * n, height, min(n, self.width - col * n)) for col in cols]


def transform(box: GeoBox) -> tuple[float, float, float, float, float, float]:
    """Affine coefficients (a, b, c, d, e, f) of a box's pixels, as STAC and the
    zarr-conventions write them."""
    return tuple(box.affine[:6])


def geotransform(box: GeoBox) -> str:
    """GDAL GeoTransform string of a box's pixels, as CF ``spatial_ref`` variables carry it."""
    return " ".join(str(v) for v in box.affine.to_gdal())


def lattice_origin(box: GeoBox) -> tuple[int, int]:
    """The first pixel of a 10 m box on the global 10 m lattice: its row counted down from
    y = 0 and its column from x = 0 (see :mod:`pipeline.models`)."""
    _, _, left, _, _, top = box.affine[:6]
    return round(-top / INPUT_RESOLUTION), round(left / INPUT_RESOLUTION)


def pixel_centres(box: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """x and y of the centres of a box's pixel columns and rows, as CF coordinates give them."""
    ys, xs = (c.values for c in box.coordinates.values())
    return xs, ys


def check_tile_size(size: int) -> int:
    """``size`` when it is a tile edge the grid can take, else ValueError saying why."""
    if size <= 0 or size % TILE_QUANTUM:
        raise ValueError(f"a tile size must be a positive multiple of {TILE_QUANTUM} pixels")
    if size > MAX_TILE_SIZE:
        raise ValueError(
            f"a tile size is at most {MAX_TILE_SIZE} pixels "
            f"({MAX_TILE_SIZE * RESOLUTION / 1000:g} km), the most a worker holds"
        )
    return size


def snap_outward(
    bounds: tuple[float, float, float, float], anchor: tuple[float, float], cell: float
) -> tuple[float, float, float, float]:
    """``bounds`` widened outward to whole ``cell`` × ``cell`` cells of the lattice through
    ``anchor``."""
    ax, ay = anchor
    minx, miny, maxx, maxy = bounds
    return (
        math.floor((minx - ax) / cell) * cell + ax,
        math.floor((miny - ay) / cell) * cell + ay,
        math.ceil((maxx - ax) / cell) * cell + ax,
        math.ceil((maxy - ay) / cell) * cell + ay,
    )


def plan_grid(
    aoi: BaseGeometry,
    crs: CRS,
    tile_size: int = 1920,
    anchor: tuple[float, float] = (0.0, 0.0),
) -> OutputGrid:
    """Snap the AOI's footprint in ``crs`` outward to the 60 m lattice shifted by ``anchor``.

    ``anchor`` is a point of the lattice (for instance the corner of a scene's pixel grid), so
    that when the output CRS is the scenes' own, native 10/20/60 m pixels nest in output pixels.
    """
    check_tile_size(tile_size)
    anchor = (anchor[0] % LATTICE, anchor[1] % LATTICE)
    left, bottom, right, top = snap_outward(project(aoi, crs).bounds, anchor, LATTICE)
    return OutputGrid(
        crs=crs,
        x0=left,
        y0=top,
        width=round((right - left) / RESOLUTION),
        height=round((top - bottom) / RESOLUTION),
        tile_size=tile_size,
    )
