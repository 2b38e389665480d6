"""Plain JSON data from what the pipeline, bundles and benches record (one converter for all)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["is_missing", "jsonable"]


def is_missing(value: Any) -> bool:
    """Whether a table cell holds no value: None, NaN, or pandas' NA (told apart without importing
    pandas: a server reads tables without it)."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN is the one float unequal to itself
    except (TypeError, ValueError):  # pandas' NA compares as NA, whose truth is ambiguous; arrays too
        return False if hasattr(value, "__len__") else True


def jsonable(value: Any) -> Any:
    """``value`` as JSON data: dataclasses as dicts, mappings with string keys, tuples as lists,
    numpy scalars and arrays as numbers and lists, paths as strings, NaN and infinities as None.

    TypeError names any other type (rather than writing something that does not read back).
    """
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")
