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
from pipeline.product.pyramid import AVERAGE, RESAMPLING, level_path, reduce_2x2
from pipeline.quality.layers import (
    INCONSISTENT,
    RISK_FILL,
    SPECTRAL_DISTORTION,
    UNCERTAIN,
    risk_rule,
)

#: Reflectance is stored as round(reflectance / SCALE_FACTOR) in uint16, 0 meaning no data.
SCALE_FACTOR = 1e-4

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
#: The per-pixel spread of the RGB model's samples, written when it draws more than one.
UNCERTAINTY = "rgb_uncertainty"
UNCERTAINTY_BANDS = ("B04", "B03", "B02")
UNCERTAINTY_FILL = 65535


@dataclass(frozen=True)
class Layer:
    """How a per-pixel (y, x) layer is stored: integer type, fill value, scale (None: as is)."""

    dtype: str
    fill: int
    scale: float | None
    attributes: dict[str, Any]

    def encode(self, values: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return values.astype(self.dtype)
        return encode_scaled(values, self.scale, self.fill)


#: The quality layers of pipeline.quality.layers, in every product (docs/output-format.md).
QUALITY_LAYERS: dict[str, Layer] = {
    "consistency": Layer(
        "uint16",
        65535,
        SCALE_FACTOR,
        {
            "long_name": "mean absolute difference between the input and the result averaged "
            "back over each band's native pixel (reflectance)",
            "units": "1",
        },
    ),
    "spectral_angle": Layer(
        "uint16",
        65535,
        0.01,
        {
            "long_name": "spectral angle between the input and the result averaged back over "
            "each band's native pixel",
            "units": "degree",
        },
    ),
    "hallucination_risk": Layer(
        "uint8",
        RISK_FILL,
        None,
        {
            "long_name": "hallucination risk flags (0: no reason for concern)",
            "flag_masks": [INCONSISTENT, SPECTRAL_DISTORTION, UNCERTAIN],
            "flag_meanings": "inconsistent_reflectance spectral_distortion uncertain_rgb",
            **{f"rule_{k}": v for k, v in risk_rule().items()},
        },
    ),
}


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
        does
        not exist is refused, or made with ``create_bucket``: a typo in a bucket's name
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
            **_grid_attrs(grid, bands),
        }
        with store._storage_errors():
            existing = store._existing_attrs()
            if existing is None:
                store._require_bucket(create_bucket)
            if existing is not None and not overwrite:
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
                # Rewriting the attributes records this run and proves the location writable.
                store._open_group().update_attributes(plain(root_attrs))
                return store
            if existing is not None:
                running = holders(store)
                if running:
                    raise OutputError(
                        f"another run is writing {url} ({describe(running[0])}); --overwrite "
                        "would delete its tiles: wait for it to end"
                    )
                store._delete()
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

        ``quality`` maps names of ``QUALITY_LAYERS`` to (tile.height, tile.width) arrays: float
        with NaN for no data, or the flag's integers; layers left out keep their fill value.
        With ``level_one``, each array's 2 × 2 reduction goes to the tile's shard of overview
        level 1 too (see :func:`pipeline.product.overviews.level_one_with_tiles`), and the marker
        says so.
        """
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
        for name, values in (quality or {}).items():
            if name not in QUALITY_LAYERS or values.shape != (tile.height, tile.width):
                raise ValueError(
                    f"tile {tile.key}: quality layer {name!r} must be one of "
                    f"{', '.join(QUALITY_LAYERS)} of shape ({tile.height}, {tile.width}), "
                    f"got {values.shape}"
                )
        window = (
            slice(tile.y_off, tile.y_off + tile.height),
            slice(tile.x_off, tile.x_off + tile.width),
        )
        encoded = {
            "reflectance": encode_reflectance(reflectance),
            "clear_count": np.clip(clear_count, 0, 255).astype(np.uint8),
            **(
                {}
                if uncertainty is None
                else {UNCERTAINTY: encode_reflectance(uncertainty, UNCERTAINTY_FILL)}
            ),
            **{name: QUALITY_LAYERS[name].encode(v) for name, v in (quality or {}).items()},
        }
        half = (
            slice(tile.y_off // 2, tile.y_off // 2 + -(-tile.height // 2)),
            slice(tile.x_off // 2, tile.x_off // 2 + -(-tile.width // 2)),
        )
        with self._storage_errors(f"tile {tile.key} to "):
            for name, values in encoded.items():
                array = self._array(name)
                if array.shape[:-2] != values.shape[:-2]:
                    raise ValueError(
                        f"tile {tile.key}: {values.shape[0]} bands given, "
                        f"the product has {array.shape[0]}"
                    )
                if not (values != array.fill_value).any():
                    # Zarr stores no chunk that is all fill: the window reads as fill already
                    # (a tile of the sea, or never clear), and so does its level 1.
                    continue
                array[(..., *window)] = values
                if level_one:
                    level = self._array(f"{level_path(1)}/{name}")
                    method = RESAMPLING.get(name, AVERAGE)
                    level[(..., *half)] = reduce_2x2(values, array.fill_value, method)
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

    def _create_arrays(self, grid: OutputGrid, bands: tuple[str, ...], uncertainty: bool) -> None:
        """Write the metadata and coordinates; the data arrays get no chunk until a tile lands."""
        # "w" also clears what some S3 servers keep of a deleted product: empty prefixes.
        group = zarr.open_group(self.zarr_store(), mode="w", zarr_format=3)
        axes = {a["axis"]: a for a in grid.crs.cs_to_cf()}
        xs, ys = pixel_centres(grid.geobox)
        coords = {
            "x": (xs, axes.get("X", {})),
            "y": (ys, axes.get("Y", {})),
            "band": (np.array(bands, dtype=str), {"long_name": "Sentinel-2 band"}),
        }
        if uncertainty:
            coords["rgb_band"] = (
                np.array(UNCERTAINTY_BANDS, dtype=str),
                {"long_name": "band of the RGB model"},
            )
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
        group.create_array(
            "spatial_ref", shape=(), dtype="int64", fill_value=0, attributes=crs_attrs
        )

        n, inner = grid.tile_size, grid.tile_size // 4
        located = {  # CF's grid mapping, and the zarr-conventions' georeferencing
            "grid_mapping": "spatial_ref",
            "coordinates": "spatial_ref",
            **array_attrs(grid.crs, grid.transform, (grid.height, grid.width)),
        }
        group.create_array(
            "reflectance",
            shape=(len(bands), grid.height, grid.width),
            dtype="uint16",
            shards=(len(bands), n, n),
            chunks=(1, inner, inner),
            fill_value=0,
            dimension_names=["band", "y", "x"],
            attributes={
                "long_name": "surface reflectance (Sentinel-2 L2A super-resolved to 2.5 m)",
                "standard_name": "surface_bidirectional_reflectance",
                "units": "1",
                "scale_factor": SCALE_FACTOR,
                "add_offset": 0.0,
                "_FillValue": 0,
                **located,
            },
        )
        group.create_array(
            "clear_count",
            shape=(grid.height, grid.width),
            dtype="uint8",
            shards=(n, n),
            chunks=(inner, inner),
            fill_value=0,  # storage default only: 0 means never clear, not missing
            dimension_names=["y", "x"],
            attributes={"long_name": "number of clear observations in the composite", **located},
        )
        if uncertainty:
            group.create_array(
                UNCERTAINTY,
                shape=(len(UNCERTAINTY_BANDS), grid.height, grid.width),
                dtype="uint16",
                shards=(len(UNCERTAINTY_BANDS), n, n),
                chunks=(1, inner, inner),
                fill_value=UNCERTAINTY_FILL,
                dimension_names=["rgb_band", "y", "x"],
                attributes={
                    "long_name": "standard deviation of the RGB model's samples (reflectance)",
                    "units": "1",
                    "scale_factor": SCALE_FACTOR,
                    "add_offset": 0.0,
                    "_FillValue": UNCERTAINTY_FILL,
                    **located,
                },
            )
        for name, layer in QUALITY_LAYERS.items():
            group.create_array(
                name,
                shape=(grid.height, grid.width),
                dtype=layer.dtype,
                shards=(n, n),
                chunks=(inner, inner),
                fill_value=layer.fill,
                dimension_names=["y", "x"],
                attributes={**layer.attributes, **_scaling(layer), **located},
            )
        fs, path = self._fs()
        fs.makedirs(f"{path}/{MARKERS}", exist_ok=True)


def encode_reflectance(values: np.ndarray, fill: int = 0) -> np.ndarray:
    """Float reflectance → uint16 in units of 1e-4; NaN → ``fill``, which no value takes.

    Reflectance uses fill 0 (values clip to [1, 65535]); a standard deviation, for which 0 is
    a real value, uses fill 65535 (values clip to [0, 65534]).
    """
    return encode_scaled(values, SCALE_FACTOR, fill)


def encode_scaled(values: np.ndarray, scale: float, fill: int) -> np.ndarray:
    """Float values → uint16 in units of ``scale``; NaN → ``fill`` (0 or 65535), which no
    value takes."""
    scaled = np.rint(values * np.float32(1 / scale))
    low, high = (1, 65535) if fill == 0 else (0, 65534)
    np.clip(scaled, low, high, out=scaled)
    scaled[np.isnan(values)] = fill
    return scaled.astype(np.uint16)


def _scaling(layer: Layer) -> dict[str, Any]:
    """The CF attributes by which readers decode the stored integers."""
    if layer.scale is None:
        return {"_FillValue": layer.fill}
    return {"scale_factor": layer.scale, "add_offset": 0.0, "_FillValue": layer.fill}


def _grid_attrs(grid: OutputGrid, bands: tuple[str, ...]) -> dict[str, Any]:
    """The root attributes that must match for a run to resume into an existing product."""
    return {
        "grid_crs_wkt": grid.crs.to_wkt(),
        "grid_transform": list(grid.transform),
        "grid_shape": [grid.height, grid.width],
        "grid_tile_size": grid.tile_size,
        "bands": list(bands),
    }


def _same_grid(attrs: dict[str, Any], grid: OutputGrid, bands: tuple[str, ...]) -> bool:
    """Whether stored grid attributes describe ``grid`` and ``bands`` (CRS compared as a CRS)."""
    expected = _grid_attrs(grid, bands)
    try:
        same_crs = CRS.from_wkt(attrs["grid_crs_wkt"]) == grid.crs
    except (KeyError, TypeError, CRSError):
        return False
    return same_crs and all(attrs.get(k) == v for k, v in expected.items() if k != "grid_crs_wkt")
