"""Sentinel-2 L2A super-resolution to 2.5 m, from STAC catalogs to Zarr mosaics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("s2sr")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
