"""The contract every source hands to ingest (etl.ingest).

A source does not validate or clean: it reads. Ingest validates types and ranges, counts rejected
rows by reason, drops duplicates, builds vocabularies and splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dask.dataframe as dd
import pandas as pd

#: Columns of RawSource.interactions. Values may still be strings (CSV read as text) or typed
#: (synthetic, Parquet); ingest coerces and validates them.
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "value", "timestamp")

#: Columns of RawSource.items. genres and tags are lists of str; year is nullable Int64.
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "genres", "tags", "year")


@dataclass
class RawSource:
    """Raw interactions (partitioned) and item metadata, as read from one source."""

    name: str
    """Where it came from, e.g. 'movielens:ml-latest-small' or 'synthetic:seed=0,n=25000000'."""
    interactions: dd.DataFrame
    """Columns INTERACTION_COLUMNS, one row per source record, in source order."""
    items: pd.DataFrame | None = None
    """Columns ITEM_COLUMNS (one row per item), or None when the source has no metadata."""
    value_range: tuple[float, float] | None = None
    """Inclusive range of valid interaction values (MovieLens: 0.5..5.0); None: any finite value."""
    numeric_ids: bool = False
    """True when ids must be integers (MovieLens): a non-numeric id is then a rejected row."""
    header_lines: int = 0
    """Lines before the first record (1 for a CSV with a header), to report source line numbers."""
    extra: dict[str, object] = field(default_factory=dict)
    """Source facts for the manifest (file names, checksums, generator parameters)."""
