"""The item metadata a bundle serves (titles, labels, year, popularity), one entry per item row.

Written by publish as ``items.json`` (columns of plain JSON values, unknown numbers as null) and
read by serving with the standard library and numpy: a server imports neither pandas nor pyarrow.
A bundle written before holds ``items.parquet`` instead, which still loads (through pandas, only
then). Items added while serving (hybrid/catalogue.py) extend a table in memory (``extended``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from etl.jsonable import is_missing

__all__ = ["ItemTable", "as_list"]

FILE = "items.json"
LEGACY_FILE = "items.parquet"
"""What a bundle written before holds instead of FILE."""
_COLUMNS = ("item_id", "title", "genres", "tags", "year", "count", "mean_rating")


@dataclass(frozen=True, eq=False)
class ItemTable:
    """Item metadata by item row (arrays and lists of one length)."""

    item_id: np.ndarray
    """External ids (object array of str)."""
    title: np.ndarray
    """Titles (object array of str; '' where unknown)."""
    genres: list[tuple[str, ...]]
    tags: list[tuple[str, ...]]
    year: np.ndarray
    """Release years (float64; NaN where unknown)."""
    count: np.ndarray
    """Interactions with the item in the training dataset (int64; 0 where unknown)."""
    mean_rating: np.ndarray
    """Mean rating (float64; NaN where unknown)."""
    added: np.ndarray
    """True for an item added while serving (bool)."""

    def __len__(self) -> int:
        return len(self.item_id)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any], n: int) -> ItemTable:
        """A table from named columns of ``n`` cells each (a mapping of lists, or a pandas frame of
        the dataset's items table); a missing column or cell counts as unknown."""

        def column(name: str) -> list[Any]:
            return list(columns[name]) if name in columns else [None] * n

        return cls(
            item_id=np.array([str(i) for i in column("item_id")], dtype=object),
            title=np.array([t if isinstance(t, str) else "" for t in column("title")], dtype=object),
            genres=[tuple(as_list(g)) for g in column("genres")],
            tags=[tuple(as_list(t)) for t in column("tags")],
            year=np.array([_number(y) for y in column("year")], dtype=np.float64),
            count=np.array([0 if math.isnan(c := _number(v)) else c for v in column("count")], dtype=np.int64),
            mean_rating=np.array([_number(r) for r in column("mean_rating")], dtype=np.float64),
            added=np.array([False if is_missing(v) else bool(v) for v in column("added")], dtype=bool),
        )

    def save(self, folder: Path) -> None:
        """Write ``folder/items.json``."""
        columns = {
            "item_id": self.item_id.tolist(), "title": self.title.tolist(),
            "genres": [list(g) for g in self.genres], "tags": [list(t) for t in self.tags],
            "year": [None if math.isnan(y) else int(y) for y in self.year.tolist()],
            "count": self.count.tolist(),
            "mean_rating": [None if math.isnan(r) else r for r in self.mean_rating.tolist()],
        }
        (folder / FILE).write_text(json.dumps(columns, ensure_ascii=False, allow_nan=False))

    @classmethod
    def load(cls, folder: Path) -> ItemTable:
        """Read ``folder/items.json``, or the ``items.parquet`` of a bundle written before."""
        path = folder / FILE
        if not path.exists() and (folder / LEGACY_FILE).exists():
            import pandas as pd  # the format of bundles written before

            frame = pd.read_parquet(folder / LEGACY_FILE)
            return cls.from_columns(frame, len(frame))
        columns = json.loads(path.read_bytes())
        if not isinstance(columns, dict) or not isinstance(columns.get("item_id"), list):
            raise ValueError(f"{path} holds no item_id column")
        n = len(columns["item_id"])
        lengths = {k: len(v) for k, v in columns.items() if k in _COLUMNS and isinstance(v, list)}
        if set(lengths.values()) != {n}:
            raise ValueError(f"{path}: columns of different lengths {lengths}")
        return cls.from_columns(columns, n)

    def extended(self, rows: np.ndarray, items: Sequence[Any]) -> ItemTable:
        """This table with item metadata written over: ``items`` (each with title, genres, tags,
        year) at ``rows``, where a row of -1 appends a new item (count 0, mean rating unknown,
        marked added) after the others in the order given; this table is unchanged."""
        rows = np.asarray(rows, dtype=np.int64)
        known, new = np.flatnonzero(rows >= 0), np.flatnonzero(rows < 0)
        title, year = self.title.copy(), self.year.copy()
        genres, tags = list(self.genres), list(self.tags)
        for j in known.tolist():
            r, item = int(rows[j]), items[j]
            title[r], year[r] = item.title, _number(item.year)
            genres[r], tags[r] = tuple(item.genres), tuple(item.tags)
        added = [items[j] for j in new.tolist()]
        m = len(added)
        return ItemTable(
            item_id=np.concatenate([self.item_id, np.array([i.id for i in added], dtype=object)]),
            title=np.concatenate([title, np.array([i.title for i in added], dtype=object)]),
            genres=genres + [tuple(i.genres) for i in added],
            tags=tags + [tuple(i.tags) for i in added],
            year=np.concatenate([year, np.array([_number(i.year) for i in added], dtype=np.float64)]),
            count=np.concatenate([self.count, np.zeros(m, np.int64)]),
            mean_rating=np.concatenate([self.mean_rating, np.full(m, np.nan)]),
            added=np.concatenate([self.added, np.ones(m, bool)]),
        )


def _number(value: Any) -> float:
    """A cell as a float; NaN where it is missing or not a number (as pandas' to_numeric coerces)."""
    if is_missing(value):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def as_list(value: Any) -> list[str]:
    """A genres/tags cell (list, array, None or a '|'-joined string) as a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split("|") if v]
    if isinstance(value, float) and math.isnan(value):
        return []
    return [str(v) for v in value]
