"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""

from pipeline.redact import redact


def reason(err: BaseException) -> str:
    """The first line of an error's own words, without errno numbers, file names or the
    secrets of URLs (see :func:`pipeline.redact.redact`)."""
    text = (isinstance(err, OSError) and err.strerror) or str(err) or type(err).__name__
    return redact(text.strip().splitlines()[0])[:200]


class UserError(Exception):
    """Base class for problems with the user's input or environment, not bugs in the pipeline."""


class AOIError(UserError):
    """The area of interest cannot be read or is not a polygon."""


class GridError(UserError):
    """The output grid cannot hold the AOI in the CRS asked for (or chosen)."""


class CatalogError(UserError):
    """The STAC catalog cannot be reached or answers with something unusable."""


class ItemError(CatalogError):
    """A catalog item's property holds a value that cannot be read: the item is skipped."""

    def __init__(self, item_id: str, key: str, value: object, expected: str) -> None:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        super().__init__(f"item {item_id}: {key} {shown} is not {expected}")
        self.item_id = item_id


class NoScenesError(UserError):
    """The search found no scene for the area and dates."""


class OutputError(UserError):
    """The output location cannot be written."""


class ClusterError(UserError):
    """The Dask scheduler cannot be reached."""


class WeightsError(UserError):
    """Weights cannot be found, fetched, verified or read."""


class ModelError(UserError):
    """A model cannot be built from the given name, options or weights."""
