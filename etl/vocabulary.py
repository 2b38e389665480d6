"""Vocabularies: external id (string) <-> contiguous row number.

A vocabulary travels with every artifact (datasets, model factors, bundles) so that rows are never
interpreted without it. Unknown ids map to -1 on request, or raise UnknownIdError; never IndexError.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

from etl.errors import UnknownIdError

FILE_SUFFIX = ".json"
"""Vocabularies are saved as JSON (a list of ids in row order); a folder written before holds
Parquet files (columns id, row) under the same name with ``.parquet``, which still load."""
_PARQUET_MAGIC = b"PAR1"


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    """Numeric-looking ids sort numerically (MovieLens), others lexicographically."""
    import pandas as pd  # building a vocabulary is training's work (ingest); serving only loads one

    unique = pd.unique(pd.Series(list(ids), dtype="object").astype(str))
    numeric = pd.to_numeric(pd.Series(unique), errors="coerce")
    if not numeric.isna().any():
        order = np.lexsort((unique, numeric.to_numpy()))
    else:
        order = np.argsort(unique, kind="stable")
    return [str(unique[i]) for i in order]


def vocabulary_file(folder: Path, name: str) -> Path:
    """``folder/<name>.json``, or the Parquet file a folder written before holds instead."""
    path = folder / f"{name}{FILE_SUFFIX}"
    legacy = folder / f"{name}.parquet"
    return legacy if not path.exists() and legacy.exists() else path


class Vocabulary:
    """An ordered set of external ids; row i holds ids[i]."""

    def __init__(self, ids: Iterable[str], kind: str = "item") -> None:
        self.kind = kind
        self._ids = np.array([str(i) for i in ids], dtype=object)
        self._lookup: dict[str, int] | None = None
        if len(self._dict) != len(self._ids):
            seen: set[str] = set()
            dup = [i for i in self._ids.tolist() if i in seen or seen.add(i)][:5]
            raise ValueError(f"{kind} vocabulary has duplicate ids: {dup}")

    @property
    def _dict(self) -> dict[str, int]:
        """id -> row (rebuilt after unpickling: it is not shipped to Dask workers)."""
        if self._lookup is None:
            self._lookup = {i: r for r, i in enumerate(self._ids.tolist())}
        return self._lookup

    @classmethod
    def from_ids(cls, ids: Iterable[str], kind: str = "item") -> Vocabulary:
        """Build a vocabulary from (possibly repeated) ids, in a deterministic order."""
        return cls(_sorted_ids(ids), kind=kind)

    def __len__(self) -> int:
        return len(self._ids)

    def __getstate__(self) -> dict[str, object]:
        # the lookup dict is rebuilt where it is needed, not shipped to Dask workers
        return {**self.__dict__, "_lookup": None}

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._dict

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and len(self) == len(other) and bool((self._ids == other._ids).all())

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
        keys = [str(i) for i in ids]
        lookup = self._dict
        rows = np.fromiter((lookup.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        if missing == "raise" and (rows < 0).any():
            raise UnknownIdError(self.kind, [k for k, r in zip(keys, rows.tolist(), strict=True) if r < 0])
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

    def save(self, path: str | Path | IO[bytes]) -> None:
        """Write as JSON: the ids in row order (a path, or a binary file open for writing)."""
        data = json.dumps(self._ids.tolist(), ensure_ascii=False).encode()
        if isinstance(path, str | Path):
            Path(path).write_bytes(data)
        else:
            path.write(data)

    @classmethod
    def load(cls, path: str | Path | IO[bytes], kind: str = "item") -> Vocabulary:
        """Read what ``save`` wrote, or a Parquet vocabulary written before (columns id, row)."""
        data = Path(path).read_bytes() if isinstance(path, str | Path) else path.read()
        if data[:4] != _PARQUET_MAGIC:
            ids = json.loads(data)
            if not isinstance(ids, list):
                raise ValueError(f"vocabulary {path} holds {type(ids).__name__}, not a list of ids")
            return cls(ids, kind=kind)
        import pandas as pd  # the format of vocabularies written before

        frame = pd.read_parquet(io.BytesIO(data))
        if not (frame["row"].to_numpy() == np.arange(len(frame))).all():
            raise ValueError(f"vocabulary {path} rows are not 0..{len(frame) - 1} in order")
        return cls(frame["id"].astype(str).tolist(), kind=kind)
