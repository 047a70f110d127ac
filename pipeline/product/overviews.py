"""Factor-2 overviews (a pyramid) of every data array, so a continental product can be browsed.

Level k is the group ``overviews/<k>``, with the same variables, coordinates and grid mapping as
the product itself at 2.5 m × 2^k; level 0 is the product (layout and reduction:
:mod:`pipeline.product.pyramid`). A region run writes level 1 with each tile, from the tile in
memory
(its level-1 shards are half a tile a side, one per tile, so no two writers share one); the
product at full resolution is never read back for it. Each higher level is built from the one
below it, one region of a tile's size per Dask task (a task reads the 2 × 2 regions of the
level below, one at a time), so no band is ever held whole. A marker per region records which
version of its sources it was built from; a re-run rebuilds only the regions whose sources
changed, up the pyramid. Level 1 is built from level 0 only where tiles were written without
it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import numpy as np
import zarr
from distributed import Client, Future, as_completed

from pipeline.errors import reason
from pipeline.geo.grid import OutputGrid, geotransform, pixel_centres, transform
from pipeline.product.conventions import MULTISCALES, PROJ, SPATIAL, spatial_grid
from pipeline.product.pyramid import AVERAGE, OVERVIEWS, level_path, reduce_2x2
from pipeline.product.schema import AXES, REFLECTANCE, RESAMPLING, VARIABLES, Variable
from pipeline.product.store import MARKERS, ProductStore


def level_count(grid: OutputGrid) -> int:
    """Levels needed for the coarsest one to fit in one inner chunk (a quarter tile a side), so
    a whole-product view is a single read."""
    side, chunk = max(grid.height, grid.width), grid.tile_size // 4
    return max(0, math.ceil(math.log2(side / chunk))) if side > chunk else 0


def level_shape(grid: OutputGrid, level: int) -> tuple[int, int]:
    return tuple(grid.level(level).shape)


def level_transform(grid: OutputGrid, level: int) -> list[float]:
    """Affine (a, b, c, d, e, f) of a level: the product's corner, pixels 2^level times larger."""
    return list(transform(grid.level(level)))


def level_one_with_tiles(store: ProductStore, grid: OutputGrid) -> bool:
    """Create level 1 if it is missing; say whether tiles may write their part of it: the grid
    has overviews, and level 1's shards are one tile's share (those of a product made before
    level 1 came with the tiles cover 2 × 2 tiles, which concurrent writers would share)."""
    if level_count(grid) < 1:
        return False
    _create_levels(store, grid, 1)
    level = zarr.open_group(
        store.zarr_store(), path=level_path(1), mode="r", use_consolidated=False
    )
    return level[REFLECTANCE.name].shards[-1] == grid.tile_size // 2


def build_overviews(
    store: ProductStore,
    grid: OutputGrid,
    client: Client,
    tiles: dict[str, str],
    with_level_one: Collection[str] = (),
) -> dict[str, str]:
    """Build or update every level on the cluster; return the regions that failed (key:
    error).

    ``tiles`` maps the key of every finished tile to the time its marker was written: the
    version of level 0 that the levels above are checked against. Tiles in ``with_level_one``
    wrote their level-1 pixels themselves; level 1 is built only where another tile is.
    """
    levels = level_count(grid)
    _create_levels(store, grid, levels)
    failed: dict[str, str] = {}
    sources = tiles
    lacking = set(_parents({k: "" for k in tiles if k not in set(with_level_one)}))
    for level in range(1, levels + 1):
        wanted = _parents(sources)
        built = {m["tile"]: m["sources"] for m in store.markers(f"{OVERVIEWS}/{level}")}
        todo = [
            (key, sig)
            for key, sig in wanted.items()
            if built.get(key) != sig and (level > 1 or key in lacking)
        ]
        errors = _run_shards(store, client, level, grid.tile_size, todo)
        failed.update({f"{level}/{key}": error for key, error in errors.items()})
        # A failed shard keeps its old data and marker: the level above is built on that.
        sources = {
            k: built[k] if k in errors else sig
            for k, sig in wanted.items()
            if k not in errors or k in built
        }
    return failed


def multiscales_attrs(grid: OutputGrid) -> dict[str, Any]:
    """Root attributes describing the pyramid (zarr-conventions multiscales v1), each level
    with its pixel grid (spatial convention), beside the root's CRS (proj convention)."""
    layout = []
    for level in range(level_count(grid) + 1):
        entry: dict[str, Any] = {"asset": level_path(level) or "."}
        if level:
            entry["derived_from"] = level_path(level - 1) or "."
            entry["transform"] = {"scale": [2.0, 2.0], "translation": [0.0, 0.0]}
        else:
            entry["transform"] = {"scale": [1.0, 1.0], "translation": [0.0, 0.0]}
        entry.update(spatial_grid(level_transform(grid, level), level_shape(grid, level)))
        layout.append(entry)
    return {
        "zarr_conventions": [MULTISCALES, PROJ, SPATIAL],
        "multiscales": {
            "layout": layout,
            "resampling_method": AVERAGE,
            "variable_resampling": RESAMPLING,
        },
    }


def build_shard(store: ProductStore, level: int, row: int, col: int, signature: str, n: int) -> str:
    """Compute one region of ``n`` × ``n`` pixels of ``level`` from the level below, then
    write its marker.

    The level below is read one region at a time: whole shards, each one request to object
    storage (a band of it is one per inner chunk), and the memory stays within two regions.
    """
    root = store.zarr_store()
    below = zarr.open_group(root, path=level_path(level - 1), mode="r", use_consolidated=False)
    for variable, source in _variables(below):
        target = zarr.open_array(root, path=f"{level_path(level)}/{variable.name}", mode="r+")
        rows = range(row * n, min((row + 1) * n, target.shape[-2]))
        cols = range(col * n, min((col + 1) * n, target.shape[-1]))
        method = variable.resampling
        out = np.empty((*source.shape[:-2], len(rows), len(cols)), source.dtype)
        for y in range(2 * rows.start, min(2 * rows.stop, source.shape[-2]), n):
            for x in range(2 * cols.start, min(2 * cols.stop, source.shape[-1]), n):
                part = reduce_2x2(source[..., y : y + n, x : x + n], source.fill_value, method)
                top, left = y // 2 - rows.start, x // 2 - cols.start
                out[..., top : top + part.shape[-2], left : left + part.shape[-1]] = part
        target[..., rows.start : rows.stop, cols.start : cols.stop] = out
    store.put_json(
        _marker(level, f"{row}_{col}"),
        {
            "tile": f"{row}_{col}",
            "sources": signature,
            "written": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return signature


def _marker(level: int, key: str) -> str:
    return f"{MARKERS}/{OVERVIEWS}/{level}/{key}.json"


def _parents(sources: dict[str, str]) -> dict[str, str]:
    """Signature of each shard one level up: a hash of its (up to 4) sources' signatures."""
    children: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for key, sig in sources.items():
        row, col = map(int, key.split("_"))
        children[f"{row // 2}_{col // 2}"].append((key, sig))
    return {
        key: hashlib.sha256(json.dumps(sorted(parts)).encode()).hexdigest()[:16]
        for key, parts in children.items()
    }


def _run_shards(
    store: ProductStore, client: Client, level: int, n: int, todo: Iterable[tuple[str, str]]
) -> dict[str, str]:
    """Build the shards on the cluster, a bounded number in flight; return the failures."""
    in_flight = max(2, 4 * len(client.scheduler_info(n_workers=-1).get("workers", {})))
    pending = iter(todo)
    keys: dict[Future, str] = {}
    futures = as_completed()
    errors: dict[str, str] = {}

    def submit(batch: list[tuple[str, str]]) -> None:
        for key, sig in batch:
            row, col = map(int, key.split("_"))
            future = client.submit(
                build_shard, store, level, row, col, sig, n, key=f"overview-{level}-{key}-{sig}"
            )
            keys[future] = key
            futures.add(future)

    submit(list(islice(pending, in_flight)))
    for future in futures:
        key = keys.pop(future)
        try:
            future.result()
        except Exception as err:  # a shard's failure is reported, the others go on
            errors[key] = f"{type(err).__name__}: {reason(err)}"
        submit(list(islice(pending, 1)))
    return errors


def _variables(group: zarr.Group) -> list[tuple[Variable, zarr.Array]]:
    """The variables of the schema that a level has (the uncertainty is optional), with their
    arrays: one read of each array's metadata, none of the level's other members."""
    return [(v, array) for v in VARIABLES if (array := group.get(v.name)) is not None]


def _create_levels(store: ProductStore, grid: OutputGrid, levels: int) -> None:
    """Create the metadata of missing levels like level 0's: same variables, attributes,
    sharding and compression, coordinates and grid mapping of the level's pixel size; level
    1's shards are half as wide, so that each tile writes a whole one."""
    zs = store.zarr_store()
    root = zarr.open_group(zs, mode="r+", use_consolidated=False)
    for level in range(1, levels + 1):
        path = level_path(level)
        try:
            zarr.open_group(zs, path=path, mode="r", use_consolidated=False)
            continue
        except FileNotFoundError:
            pass
        box = grid.level(level)
        (height, width), size = box.shape, box.resolution.x
        group = zarr.open_group(
            zs,
            path=path,
            mode="w",
            zarr_format=3,
            attributes={"overview_level": level, "pixel_size": size},
        )
        for name, values in zip(("x", "y"), pixel_centres(box), strict=True):
            _like(group, root[name], values.shape, values.shape)[:] = values
        for name in (axis.name for axis in AXES):
            if name in root:
                _like(group, root[name], root[name].shape, root[name].shape)[:] = root[name][:]
        crs = dict(root["spatial_ref"].attrs)
        crs["GeoTransform"] = geotransform(box)
        group.create_array("spatial_ref", shape=(), dtype="int64", fill_value=0, attributes=crs)
        for variable, source in _variables(root):
            shards = source.shards
            if level == 1:
                shards = (*shards[:-2], *(side // 2 for side in shards[-2:]))
            array = _like(group, source, (*source.shape[:-2], height, width), source.chunks, shards)
            array.update_attributes(
                {
                    "resampling_method": variable.resampling,
                    **spatial_grid(transform(box), (height, width)),
                }
            )


def _like(
    group: zarr.Group,
    source: zarr.Array,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None = None,
) -> zarr.Array:
    """A new array in ``group`` with the name, type, fill, codecs and attributes of ``source``."""
    return group.create_array(
        source.basename,
        shape=shape,
        dtype=source.dtype,
        chunks=chunks,
        shards=shards,
        fill_value=source.fill_value,
        compressors=source.compressors,
        dimension_names=source.metadata.dimension_names,
        attributes=dict(source.attrs),
    )
