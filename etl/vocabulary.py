"""Vocabularies: external id (string) <-> contiguous row number.

A vocabulary travels with every artifact (datasets, model factors, bundles) so that rows are never
interpreted without it. Unknown ids map to -1 on request, or raise UnknownIdError; never IndexError.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from etl.errors import UnknownIdError


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    """Numeric-looking ids sort numerically (MovieLens), others lexicographically."""
    unique = pd.unique(pd.Series(list(ids), dtype="object").astype(str))
    numeric = pd.to_numeric(pd.Series(unique), errors="coerce")
    if not numeric.isna().any():
        order = np.lexsort((unique, numeric.to_numpy()))
    else:
        order = np.argsort(unique, kind="stable")
    return [str(unique[i]) for i in order]


#: Lookups of at most this many ids go through a dict; larger batches through pandas.
_DICT_BATCH = 256


class Vocabulary:
    """An ordered set of external ids; row i holds ids[i]."""

    def __init__(self, ids: Iterable[str], kind: str = "item") -> None:
        self.kind = kind
        self._index = pd.Index(pd.Series(list(ids), dtype="object").astype(str), dtype="object")
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][:5].tolist()
            raise ValueError(f"{kind} vocabulary has duplicate ids: {dup}")
        self._ids = self._index.to_numpy()
        self._lookup: dict[str, int] | None = None

    @property
    def _dict(self) -> dict[str, int]:
        """id -> row, built on first use: serving looks up one or a few ids per call, where a
        pandas Index per call costs far more than the lookup itself."""
        if self._lookup is None:
            self._lookup = {i: r for r, i in enumerate(self._ids.tolist())}
        return self._lookup

    @classmethod
    def from_ids(cls, ids: Iterable[str], kind: str = "item") -> Vocabulary:
        """Build a vocabulary from (possibly repeated) ids, in a deterministic order."""
        return cls(_sorted_ids(ids), kind=kind)

    def __len__(self) -> int:
        return len(self._index)

    def __getstate__(self) -> dict[str, object]:
        # the lookup dict is rebuilt where it is needed, not shipped to Dask workers
        return {**self.__dict__, "_lookup": None}

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._dict

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._index.equals(other._index)

    def __repr__(self) -> str:
        return f"Vocabulary(kind={self.kind!r}, size={len(self)})"

    @property
    def ids(self) -> np.ndarray:
        """External ids in row order (object array of str)."""
        return self._ids

    def rows(self, ids: Iterable[object], missing: str = "raise") -> np.ndarray:
        """Rows of external ids. missing='raise' raises UnknownIdError, 'ignore' gives -1."""
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing must be 'raise' or 'ignore', not {missing!r}")
        ids = ids if isinstance(ids, (list, tuple, np.ndarray, pd.Index, pd.Series)) else list(ids)
        if len(ids) <= _DICT_BATCH:
            keys = [str(i) for i in ids]
            lookup = self._dict
            rows = np.fromiter((lookup.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
            if missing == "raise" and (rows < 0).any():
                raise UnknownIdError(self.kind, [k for k, r in zip(keys, rows.tolist(), strict=True) if r < 0])
            return rows
        query = pd.Index(pd.Series(list(ids), dtype="object").astype(str), dtype="object")
        rows = self._index.get_indexer(query).astype(np.int64)
        if missing == "raise" and (rows < 0).any():
            raise UnknownIdError(self.kind, query[rows < 0].tolist())
        return rows

    def row(self, external_id: object) -> int:
        """Row of one external id; UnknownIdError when absent."""
        row = self._dict.get(str(external_id))
        if row is None:
            raise UnknownIdError(self.kind, [str(external_id)])
        return row

    def lookup(self, rows: Iterable[int] | np.ndarray) -> np.ndarray:
        """External ids of rows; ValueError (naming the row) for a row outside the vocabulary."""
        arr = np.asarray(rows, dtype=np.int64)
        bad = (arr < 0) | (arr >= len(self))
        if bad.any():
            raise ValueError(f"{self.kind} row(s) out of range 0..{len(self) - 1}: {arr[bad][:5].tolist()}")
        return self.ids[arr]

    def save(self, path: str | Path) -> None:
        """Write as Parquet with columns id (string) and row (int64)."""
        frame = pd.DataFrame({"id": pd.Series(self.ids, dtype="string"), "row": np.arange(len(self))})
        frame.to_parquet(path, index=False)

    @classmethod
    def load(cls, path: str | Path, kind: str = "item") -> Vocabulary:
        frame = pd.read_parquet(path)
        if not (frame["row"].to_numpy() == np.arange(len(frame))).all():
            raise ValueError(f"vocabulary {path} rows are not 0..{len(frame) - 1} in order")
        return cls(frame["id"].astype(str).tolist(), kind=kind)
