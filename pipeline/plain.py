"""Values reduced to JSON's own types, wherever the pipeline writes JSON or compares what it
wrote with what it reads back (product attributes, checkpoints, benchmark results)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from pathlib import PurePath
from typing import Any

import numpy as np


def plain(tree: Any, *, strict: bool = False) -> Any:
    """``tree`` with every mapping as a dict with string keys, every tuple or list as a
    list, numpy values as Python's, dates in ISO 8601 and paths as strings, so that it equals
    its own JSON round trip. Other leaves stay as they are (a checkpoint's tensors among them).
    ``strict``: NaN and infinities become None, which every JSON reader accepts."""
    if isinstance(tree, Mapping):
        return {str(k): plain(v, strict=strict) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [plain(v, strict=strict) for v in tree]
    if isinstance(tree, np.generic | np.ndarray):
        return plain(tree.tolist(), strict=strict)
    if isinstance(tree, date):
        return tree.isoformat()
    if isinstance(tree, PurePath):
        return str(tree)
    if strict and isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree
