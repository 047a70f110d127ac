"""The Zarr product: one sharded group on the 2.5 m grid, written tile by tile by many processes.

Each tile is exactly one shard of each array, so no two workers ever write the same object. A
JSON marker per tile, written after the tile's data, is what makes a tile count as done: a crash
in between leaves an unmarked tile that the next run redoes.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
import numpy as np
import zarr
from botocore.exceptions import BotoCoreError, ClientError
from fsspec.implementations.local import LocalFileSystem
from pyproj import CRS
from pyproj.exceptions import CRSError
from zarr.abc.store import Store
from zarr.errors import ZarrUserWarning
from zarr.storage import FsspecStore, LocalStore

from pipeline import network
from pipeline.errors import OutputError, reason
from pipeline.geo.grid import OutputGrid, Tile, pixel_centres
from pipeline.plain import plain
from pipeline.product.conventions import array_attrs, group_attrs
from pipeline.product.lease import describe, holders
from pipeline.product.pyramid import level_path, reduce_2x2
from pipeline.product.schema import (
    BY_NAME,
    CLEAR_COUNT,
    QUALITY_LAYERS,
    REFLECTANCE,
    UNCERTAINTY,
    Variable,
    axes,
    grid_attrs,
    stored,
)

#: What storage raises for unwritable locations; s3fs maps most S3 errors to OSError subclasses.
_STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)
#: Protocols whose first path element is a bucket, which a product is never written without.
_BUCKETS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})


#: Folder of the completion markers (not a Zarr node): tiles at its top, overview shards below.
MARKERS = "tiles"
#: Markers read per request when gathering them all.
_MARKER_BATCH = 1000

#: Marker entry of a tile that wrote its level-1 overview pixels too.
LEVEL_ONE = "level_one"
#: Root attribute holding the settings that decide the pixel values of a product.
RECIPE = "recipe"


@dataclass
class ProductStore:
    """Handle on the product at ``url``; holds only the URL and options, so it pickles cheaply."""

    url: str
    storage_options: dict[str, Any] | None = field(default=None, repr=False)  # may hold secrets
    #: Arrays opened by this process, by path: a tile writes a dozen, and opening one reads
    #: its metadata, a request per array and tile on object storage. Never pickled.
    _arrays: dict[str, zarr.Array] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}

    @classmethod
    def create(
        cls,
        url: str,
        grid: OutputGrid,
        bands: tuple[str, ...],
        attrs: dict[str, Any],
        *,
        uncertainty: bool = False,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        create_bucket: bool = False,
    ) -> ProductStore:
        """Create the product's metadata, or reuse a product with the same grid and bands.

        A product is reused only if its ``attrs[RECIPE]`` (the settings that decide pixel
        values) equals the new one, so tiles made in different ways never mix. Reusing keeps
        the tile markers so the caller can skip finished tiles. Nothing of an existing product
        is touched unless it is reused or ``overwrite`` is set, and ``overwrite`` is refused
        while another run holds a lease on it (see :mod:`pipeline.product.lease`). A bucket that
        does not exist is refused, or made with ``create_bucket``: a typo in a bucket's name
        should not make a new one. ``uncertainty`` adds the RGB models' per-pixel standard
        deviation over samples. The store's requests get the network's time limits (see
        :mod:`pipeline.network`; ``storage_options`` may override them).
        """
        limits = network.storage_options(url, network.timeout())
        store = cls(url, {**limits, **(storage_options or {})} or None)
        root_attrs = {
            **attrs,
            "Conventions": "CF-1.8",
            **group_attrs(grid.crs, grid.bounds),
            **grid_attrs(grid, bands),
        }
        with store._storage_errors():
            existing = store._existing_attrs()
            if existing is None:
                store._require_bucket(create_bucket)
            elif not overwrite:
                _check_reusable(url, existing, grid, bands, attrs)
                # Rewriting the attributes records this run and proves the location writable.
                store._open_group().update_attributes(plain(root_attrs))
                return store
            else:
                store._delete_unless_held()
            store._create_arrays(grid, bands, uncertainty)
            # The grid attributes go last: a product interrupted while being created lacks them.
            store._open_group().update_attributes(plain(root_attrs))
        return store

    def done_tiles(self) -> set[str]:
        """Keys of the tiles whose marker exists, from one listing."""
        fs, path = self._fs()
        tiles = f"{path}/{MARKERS}"
        fs.invalidate_cache(tiles)  # other processes write markers; never trust a cached listing
        try:
            names = fs.ls(tiles, detail=False)
        except FileNotFoundError:
            return set()
        return {posixpath.basename(n)[: -len(".json")] for n in names if n.endswith(".json")}

    def is_done(self, tile: Tile) -> bool:
        fs, path = self._fs()
        fs.invalidate_cache(f"{path}/{MARKERS}")
        return fs.exists(self._marker(path, tile))

    def write_tile(
        self,
        grid: OutputGrid,
        tile: Tile,
        reflectance: np.ndarray,
        clear_count: np.ndarray,
        summary: dict[str, Any],
        uncertainty: np.ndarray | None = None,
        quality: dict[str, np.ndarray] | None = None,
        level_one: bool = False,
    ) -> None:
        """Write one tile's window of every array (whole shards), then its completion marker.

        ``quality`` maps names of :data:`~pipeline.product.schema.QUALITY_LAYERS` to
        (tile.height, tile.width) arrays: float with NaN for no data, or the flag's integers;
        layers left out keep their fill value.
        With ``level_one``, each array's 2 × 2 reduction goes to the tile's shard of overview
        level 1 too (see :func:`pipeline.product.overviews.level_one_with_tiles`), and the marker
        says so.
        """
        _check_tile(grid, tile, reflectance, clear_count, quality or {})
        values = {
            REFLECTANCE.name: reflectance,
            CLEAR_COUNT.name: clear_count,
            **({} if uncertainty is None else {UNCERTAINTY.name: uncertainty}),
            **(quality or {}),
        }
        with self._storage_errors(f"tile {tile.key} to "):
            for name, data in values.items():
                variable = BY_NAME[name]
                self._write_window(tile, variable, variable.encode(data), level_one)
        self.mark_done(grid, tile, summary, level_one)

    def mark_done(
        self, grid: OutputGrid, tile: Tile, summary: dict[str, Any], level_one: bool = False
    ) -> None:
        """Write the tile's completion marker: alone, for a tile with no data at all, whose
        arrays keep their fill value; after its data, for any other."""
        marker = {
            "tile": tile.key,
            "bounds": list(grid.tile_bounds(tile)),
            "summary": summary,
            "written": datetime.now(UTC).isoformat(timespec="seconds"),
            **({LEVEL_ONE: True} if level_one else {}),
        }
        with self._storage_errors(f"tile {tile.key} to "):
            self.put_json(f"{MARKERS}/{tile.key}.json", marker)

    def finalize(self, attrs: dict[str, Any], groups: Iterable[str] = ()) -> None:
        """Merge ``attrs`` into the root attributes and consolidate metadata for fast opening:
        of ``groups`` (paths of subgroups that readers open on their own), then of the root."""
        with self._storage_errors():
            self._open_group().update_attributes(plain(attrs))
            with warnings.catch_warnings():
                # "tiles/ is not a Zarr node" and "consolidated metadata is not in the v3 spec".
                warnings.simplefilter("ignore", ZarrUserWarning)
                for path in groups:
                    zarr.consolidate_metadata(self.zarr_store(), path=path)
                zarr.consolidate_metadata(self.zarr_store())

    def markers(self, under: str = "") -> Iterator[dict[str, Any]]:
        """The completion markers in ``tiles/<under>``."""
        return self.documents(posixpath.join(MARKERS, under))

    def documents(self, relative: str) -> Iterator[dict[str, Any]]:
        """The JSON documents in the folder ``relative`` inside the product, read in batches
        so that hundreds of thousands of them stream through without being held at once."""
        fs, path = self._fs()
        folder = posixpath.join(path, relative)
        fs.invalidate_cache(folder)
        try:
            names = sorted(n for n in fs.ls(folder, detail=False) if n.endswith(".json"))
        except FileNotFoundError:
            return
        for start in range(0, len(names), _MARKER_BATCH):
            batch = fs.cat(names[start : start + _MARKER_BATCH])
            for name in names[start : start + _MARKER_BATCH]:
                yield json.loads(batch[name])

    def put_json(self, relative: str, doc: dict[str, Any], indent: int | None = None) -> None:
        """Write a JSON document (marker, STAC file) at ``relative`` inside the product."""
        fs, path = self._fs()
        target = f"{path}/{relative}"
        with self._storage_errors(f"{relative} to "):
            if isinstance(fs, LocalFileSystem):  # object stores have no folders to make
                fs.makedirs(posixpath.dirname(target), exist_ok=True)
            fs.pipe_file(target, json.dumps(plain(doc), indent=indent).encode())

    def remove(self, relative: str) -> None:
        """Remove the file at ``relative`` inside the product, and its folder once empty."""
        fs, path = self._fs()
        target = f"{path}/{relative}"
        fs.rm_file(target)
        if isinstance(fs, LocalFileSystem):  # object stores have no folders to leave behind
            with contextlib.suppress(OSError):
                os.rmdir(posixpath.dirname(target))

    def zarr_store(self) -> Store:
        """The product as a zarr store, for readers and writers of whole groups and arrays."""
        fs, path = self._fs()
        if isinstance(fs, LocalFileSystem):
            return LocalStore(path)
        return FsspecStore.from_url(self.url, storage_options=self.storage_options)

    # -- helpers ---------------------------------------------------------------------------

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        return fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))

    def _array(self, path: str) -> zarr.Array:
        if path not in self._arrays:
            self._arrays[path] = zarr.open_array(self.zarr_store(), path=path, mode="r+")
        return self._arrays[path]

    def _open_group(self) -> zarr.Group:
        return zarr.open_group(self.zarr_store(), mode="r+")

    @staticmethod
    def _marker(path: str, tile: Tile) -> str:
        return f"{path}/{MARKERS}/{tile.key}.json"

    @contextmanager
    def _storage_errors(self, what: str = "") -> Iterator[None]:
        """Report storage failures as one line naming the location and the reason."""
        try:
            yield
        except _STORAGE_ERRORS as err:
            raise OutputError(f"cannot write {what}{self.url}: {reason(err)}") from None

    def _require_bucket(self, create: bool) -> None:
        """OutputError for a bucket that does not exist, unless ``create``, which makes it."""
        fs, path = self._fs()
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        if not protocols & _BUCKETS:
            return
        bucket = path.split("/", 1)[0]
        if fs.exists(bucket):
            return
        if not create:
            scheme = self.url.split("://", 1)[0]
            raise OutputError(
                f"bucket {scheme}://{bucket} does not exist: create it, or pass --create-bucket"
            )
        fs.mkdir(bucket)

    def _existing_attrs(self) -> dict[str, Any] | None:
        """Root attributes of the product at the URL; None if nothing (or an empty folder) is."""
        fs, path = self._fs()
        fs.invalidate_cache(path)
        if not fs.exists(path):
            return None
        if not fs.isdir(path):
            raise OutputError(f"cannot write {self.url}: it exists and is a file")
        if not fs.ls(path, detail=False):
            return None
        try:
            meta = json.loads(fs.cat_file(f"{path}/zarr.json"))
        except (FileNotFoundError, json.JSONDecodeError):
            meta = {}
        if meta.get("node_type") != "group":
            # Refuse even with --overwrite: deleting a folder that is not a product is too costly.
            raise OutputError(f"{self.url} exists and is not a Zarr product; choose another --out")
        return meta.get("attributes", {})

    def _delete(self) -> None:
        """Remove the old product, its root metadata last so an interrupted delete is retried."""
        fs, path = self._fs()
        meta = f"{path}/zarr.json"
        others = [p for p in fs.ls(path, detail=False) if p.rstrip("/") != meta]
        if others:
            fs.rm(others, recursive=True)
        fs.rm(meta)

    def _write_window(
        self, tile: Tile, variable: Variable, values: np.ndarray, level_one: bool
    ) -> None:
        """Write one variable's encoded window of ``tile``, and its level 1 with ``level_one``."""
        array = self._array(variable.name)
        if array.shape[:-2] != values.shape[:-2]:
            raise ValueError(
                f"tile {tile.key}: {values.shape[0]} bands given, the product has {array.shape[0]}"
            )
        if not (values != array.fill_value).any():
            # Zarr stores no chunk that is all fill: the window reads as fill already
            # (a tile of the sea, or never clear), and so does its level 1.
            return
        array[(..., *_window(tile, 1))] = values
        if level_one:
            level = self._array(f"{level_path(1)}/{variable.name}")
            level[(..., *_window(tile, 2))] = reduce_2x2(
                values, array.fill_value, variable.resampling
            )

    def _delete_unless_held(self) -> None:
        """Delete the old product for ``--overwrite``, unless another run is writing it."""
        running = holders(self)
        if running:
            raise OutputError(
                f"another run is writing {self.url} ({describe(running[0])}); --overwrite "
                "would delete its tiles: wait for it to end"
            )
        self._delete()

    def _create_arrays(self, grid: OutputGrid, bands: tuple[str, ...], uncertainty: bool) -> None:
        """Write the metadata and coordinates; the data arrays get no chunk until a tile lands."""
        # "w" also clears what some S3 servers keep of a deleted product: empty prefixes.
        group = zarr.open_group(self.zarr_store(), mode="w", zarr_format=3)
        variables = stored(uncertainty)
        _create_coordinates(group, grid, bands, variables)
        n, inner = grid.tile_size, grid.tile_size // 4
        located = {  # CF's grid mapping, and the zarr-conventions' georeferencing
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
            **array_attrs(grid.crs, grid.transform, (grid.height, grid.width)),
        }
        for variable in variables:
            depth = variable.depth(bands)
            group.create_array(
                variable.name,
                shape=variable.shape(bands, grid.height, grid.width),
                dtype=variable.dtype,
                shards=(*depth, n, n),
                chunks=(*(1 for _ in depth), inner, inner),
                fill_value=variable.fill,
                dimension_names=variable.dimensions(),
                attributes={**variable.cf_attributes(), **located},
            )
        fs, path = self._fs()
        fs.makedirs(f"{path}/{MARKERS}", exist_ok=True)


def _create_coordinates(
    group: zarr.Group, grid: OutputGrid, bands: tuple[str, ...], variables: tuple[Variable, ...]
) -> None:
    """The x and y coordinates of the pixel centres, the labels of the variables' leading
    axes, and the grid mapping."""
    axes_cf = {a["axis"]: a for a in grid.crs.cs_to_cf()}
    xs, ys = pixel_centres(grid.geobox)
    coords = {
        "x": (xs, axes_cf.get("X", {})),
        "y": (ys, axes_cf.get("Y", {})),
        **{
            axis.name: (np.array(axis.labels_for(bands), dtype=str), {"long_name": axis.long_name})
            for axis in axes(variables)
        },
    }
    for name, (values, attributes) in coords.items():
        array = group.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype if values.dtype.kind != "U" else str,
            chunks=values.shape,
            dimension_names=[name],
            attributes=attributes,
        )
        array[:] = values
    crs_attrs = {
        **grid.crs.to_cf(),
        "spatial_ref": grid.crs.to_wkt(),
        "GeoTransform": grid.geotransform,
    }
    group.create_array("spatial_ref", shape=(), dtype="int64", fill_value=0, attributes=crs_attrs)


def _window(tile: Tile, factor: int) -> tuple[slice, slice]:
    """The tile's (y, x) window on the grid of pixels ``factor`` times larger (rounded up)."""
    return (
        slice(tile.y_off // factor, tile.y_off // factor + -(-tile.height // factor)),
        slice(tile.x_off // factor, tile.x_off // factor + -(-tile.width // factor)),
    )


def _check_tile(
    grid: OutputGrid,
    tile: Tile,
    reflectance: np.ndarray,
    clear_count: np.ndarray,
    quality: dict[str, np.ndarray],
) -> None:
    """ValueError for a tile off the shards, or arrays of the wrong type or shape."""
    if tile.y_off % grid.tile_size or tile.x_off % grid.tile_size:
        raise ValueError(f"tile {tile.key} does not start on a shard boundary")
    if reflectance.dtype != np.float32 or reflectance.shape[1:] != (tile.height, tile.width):
        raise ValueError(
            f"tile {tile.key}: reflectance must be float32 (bands, {tile.height}, "
            f"{tile.width}), got {reflectance.dtype} {reflectance.shape}"
        )
    if clear_count.dtype.kind not in "biu" or clear_count.shape != (tile.height, tile.width):
        raise ValueError(
            f"tile {tile.key}: clear_count must be integer ({tile.height}, {tile.width}), "
            f"got {clear_count.dtype} {clear_count.shape}"
        )
    names = [layer.name for layer in QUALITY_LAYERS]
    for name, values in quality.items():
        if name not in names or values.shape != (tile.height, tile.width):
            raise ValueError(
                f"tile {tile.key}: quality layer {name!r} must be one of "
                f"{', '.join(names)} of shape ({tile.height}, {tile.width}), "
                f"got {values.shape}"
            )


def _check_reusable(
    url: str, existing: dict[str, Any], grid: OutputGrid, bands: tuple[str, ...], attrs: dict
) -> None:
    """OutputError unless the product at ``url`` has the same grid, bands and recipe."""
    if not _same_grid(existing, grid, bands):
        raise OutputError(
            f"existing product at {url} has a different grid/bands; "
            "use --overwrite or another --out"
        )
    if existing.get(RECIPE) != plain(attrs).get(RECIPE):
        raise OutputError(
            f"existing product at {url} was made with other settings "
            "(catalog, dates, filters or models); use --overwrite or another --out"
        )


def _same_grid(attrs: dict[str, Any], grid: OutputGrid, bands: tuple[str, ...]) -> bool:
    """Whether stored grid attributes describe ``grid`` and ``bands`` (CRS compared as a CRS)."""
    expected = grid_attrs(grid, bands)
    try:
        same_crs = CRS.from_wkt(attrs["grid_crs_wkt"]) == grid.crs
    except (KeyError, TypeError, CRSError):
        return False
    return same_crs and all(attrs.get(k) == v for k, v in expected.items() if k != "grid_crs_wkt")
