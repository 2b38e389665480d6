"""Ingest: raw source -> validated, de-duplicated, split dataset folder (etl.dataset layout).

Runs on Dask partitions in two passes over the source:
1. validate every row (types, ranges), count rejections by reason with sample line numbers, and
   collect the distinct user and item ids (small) for the vocabularies;
2. map ids to rows, shuffle by user so each user's history sits in one partition, drop exact
   duplicates, keep the latest of repeated (user, item) pairs, split per user by time
   (../shared/DESIGN.md) and write one Parquet file per partition and split.
Nothing is dropped silently: every removed row is counted in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import fsspec
import numpy as np
import pandas as pd

from etl.dataset import INTERACTION_DTYPES, STORED_SPLITS
from etl.errors import DataError
from etl.sources.base import INTERACTION_COLUMNS, ITEM_COLUMNS, RawSource
from etl.vocabulary import Vocabulary

#: Share of a user's interactions held out (test from all, validation from train), per DESIGN.md.
HOLDOUT_SHARE = 0.2
#: Users with fewer interactions than this stay wholly in the earlier split.
MIN_INTERACTIONS_TO_SPLIT = 5
SAMPLE_LINES = 5
ROWS_PER_PARTITION = 2_000_000

_VALIDATED_META = pd.DataFrame(
    {
        "user_id": pd.Series([], dtype="string"),
        "item_id": pd.Series([], dtype="string"),
        "value": pd.Series([], dtype="float64"),
        "timestamp": pd.Series([], dtype="int64"),
        "reason": pd.Series([], dtype="string"),
        "part": pd.Series([], dtype="int64"),
        "pos": pd.Series([], dtype="int64"),
    }
)


@dataclass
class IngestReport:
    """What ingest did: counts of every kept and removed row, and where the dataset went."""

    path: str
    source: str
    raw_rows: int
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_lines: dict[str, list[int]] = field(default_factory=dict)
    duplicates_dropped: int = 0
    repeats_collapsed: int = 0
    deleted_user_rows: int = 0
    interactions: int = 0
    users: int = 0
    items: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"ingested {self.source} -> {self.path}",
            f"  rows read {self.raw_rows:,}; kept {self.interactions:,} interactions of {self.users:,} users "
            f"and {self.items:,} items",
            "  splits: " + ", ".join(f"{k} {v:,}" for k, v in self.splits.items()),
            f"  exact duplicates dropped {self.duplicates_dropped:,}; repeated (user, item) pairs collapsed "
            f"to the latest {self.repeats_collapsed:,}",
        ]
        if self.deleted_user_rows:
            lines.append(f"  rows of users whose data was deleted on request, left out: {self.deleted_user_rows:,}")
        if self.rejected:
            lines.append(f"  rejected {sum(self.rejected.values()):,} rows:")
            for reason, count in sorted(self.rejected.items(), key=lambda kv: -kv[1]):
                sample = ", ".join(str(n) for n in self.rejected_lines.get(reason, []))
                lines.append(f"    {reason}: {count:,} (lines {sample})")
        else:
            lines.append("  rejected 0 rows")
        return "\n".join(lines)


def _where(source: RawSource) -> str:
    """The source's name and, when it came from files, their path (what an error must name)."""
    path = source.extra.get("path")
    return f"{source.name} ({path})" if path else source.name


# -- pass 1: validation ------------------------------------------------------------------------
def _canonical_ids(values: pd.Series, numeric: bool) -> tuple[pd.Series, pd.Series]:
    """Stripped string ids and a reason per row (missing / non-numeric) or NA."""
    text = values.astype("string").str.strip()
    reason = pd.Series(pd.NA, index=values.index, dtype="string")
    missing = text.isna() | (text == "")
    if numeric:
        num = pd.to_numeric(text, errors="coerce")
        bad = ~missing & (num.isna() | (num != np.floor(num.fillna(0))))
        reason[bad] = "non-numeric"
        ok = ~missing & ~bad
        text = text.copy()
        text[ok] = num[ok].astype("int64").astype("string")
    reason[missing] = "missing"
    return text, reason


def _validate_partition(
    raw: pd.DataFrame,
    value_range: tuple[float, float] | None,
    numeric_ids: bool,
    partition_info: dict | None = None,
) -> pd.DataFrame:
    """Coerce one raw partition and give each row a rejection reason (or NA)."""
    raw = raw.reset_index(drop=True)
    out = pd.DataFrame(index=raw.index)
    reason = pd.Series(pd.NA, index=raw.index, dtype="string")

    def note(mask: pd.Series, text: str) -> None:
        reason[mask & reason.isna()] = text

    for col in ("user_id", "item_id"):
        ids, why = _canonical_ids(raw[col], numeric_ids)
        out[col] = ids
        note(why == "missing", f"missing {col}")
        note(why == "non-numeric", f"non-numeric {col}")
    value = pd.to_numeric(raw["value"], errors="coerce").astype("float64")
    note(raw["value"].isna() | (raw["value"].astype("string").str.strip() == ""), "missing value")
    note(value.isna() | ~np.isfinite(value.fillna(np.nan)), "non-numeric or NaN value")
    if value_range is not None:
        lo, hi = value_range
        note((value < lo) | (value > hi), f"value outside [{lo:g}, {hi:g}]")
    ts = pd.to_numeric(raw["timestamp"], errors="coerce")
    note(ts.isna() | (ts < 0) | (ts != np.floor(ts.fillna(0))), "missing, negative or non-integer timestamp")
    out["value"] = value.fillna(0.0)
    out["timestamp"] = ts.where(reason.isna(), 0).fillna(0).astype("int64")
    out["reason"] = reason
    out["part"] = np.int64(partition_info["number"] if partition_info else 0)
    out["pos"] = np.arange(len(raw), dtype=np.int64)
    return out


def _sample_rejects(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.groupby("reason", sort=False).head(SAMPLE_LINES)[["reason", "part", "pos"]]


# -- pass 2: vocabulary rows, dedupe, split, write -----------------------------------------------
def _to_rows(frame: pd.DataFrame, users: pd.Index, items: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": users.get_indexer(frame["user_id"].astype(object)).astype("int32"),
            "item": items.get_indexer(frame["item_id"].astype(object)).astype("int32"),
            "value": frame["value"].astype("float32").to_numpy(),
            "timestamp": frame["timestamp"].astype("int64").to_numpy(),
        }
    )


def _holdout_counts(sizes: np.ndarray) -> np.ndarray:
    """ceil(20%) of each history, for histories of at least 5; else 0."""
    held = -(-sizes * int(HOLDOUT_SHARE * 100) // 100)
    return np.where(sizes >= MIN_INTERACTIONS_TO_SPLIT, held, 0)


def assign_splits(frame: pd.DataFrame) -> pd.Series:
    """Per-user temporal split of a frame holding whole user histories.

    Sorts by (user, timestamp, item); the last ceil(20%) of a history of >= 5 goes to test, and
    the same cut of the remaining train part goes to validation. Returns the split per row in the
    sorted order of ``frame`` (which must already be sorted that way).
    """
    users = frame["user"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(users)])
    pos = np.arange(len(users)) - np.repeat(starts, sizes)
    n_test = _holdout_counts(sizes)
    n_train = sizes - n_test
    n_val = _holdout_counts(n_train)
    size_r, test_r, train_r, val_r = (np.repeat(a, sizes) for a in (sizes, n_test, n_train, n_val))
    split = np.full(len(users), "fit", dtype=object)
    split[pos >= train_r - val_r] = "validation"
    split[pos >= size_r - test_r] = "test"
    return pd.Series(split, index=frame.index, dtype="string")


def _finish_partition(frame: pd.DataFrame, index: int, out: str, n_items: int) -> dict[str, Any]:
    """Dedupe, split and write one user-partition; return its counts and item statistics."""
    frame = frame.sort_values(["user", "timestamp", "item", "value"], kind="stable").reset_index(drop=True)
    exact = frame.duplicated(["user", "item", "value", "timestamp"])
    frame = frame[~exact]
    repeat = frame.duplicated(["user", "item"], keep="last")
    frame = frame[~repeat].reset_index(drop=True)
    frame["split"] = assign_splits(frame)
    fs, root = fsspec.core.url_to_fs(out)
    counts, hashes = {}, {}
    for split in STORED_SPLITS:
        part = frame.loc[frame["split"] == split, list(INTERACTION_DTYPES)].astype(INTERACTION_DTYPES)
        fs.makedirs(f"{root}/interactions/{split}", exist_ok=True)
        with fs.open(f"{root}/interactions/{split}/part-{index:05d}.parquet", "wb") as fh:
            part.to_parquet(fh, index=False)
        counts[split] = len(part)
        hashes[split] = int(pd.util.hash_pandas_object(part, index=False).to_numpy().sum(dtype=np.uint64))
    items = frame["item"].to_numpy()
    return {
        "counts": counts,
        "hashes": hashes,
        "duplicates": int(exact.sum()),
        "repeats": int(repeat.sum()),
        "item_count": np.bincount(items, minlength=n_items),
        "item_sum": np.bincount(items, weights=frame["value"].to_numpy(np.float64), minlength=n_items),
    }


# -- items table ---------------------------------------------------------------------------------
def _items_table(source: RawSource, items: Vocabulary, count: np.ndarray, total: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame({"item_id": pd.Series(items.ids, dtype="string")})
    if source.items is not None and len(source.items):
        meta = source.items.copy()
        missing = [c for c in ITEM_COLUMNS if c not in meta.columns]
        if missing:
            raise DataError(f"{_where(source)}: items table lacks column(s) {missing}")
        ids, _ = _canonical_ids(meta["item_id"], source.numeric_ids)
        meta["item_id"] = ids
        meta = meta.dropna(subset=["item_id"]).drop_duplicates("item_id", keep="first")
        table = table.merge(meta[list(ITEM_COLUMNS)], on="item_id", how="left")
    else:
        for col in ITEM_COLUMNS[1:]:
            table[col] = None
    table["title"] = table["title"].astype("string")
    for col in ("genres", "tags"):
        table[col] = [list(v) if isinstance(v, list | np.ndarray) else [] for v in table[col]]
    table["year"] = pd.to_numeric(table["year"], errors="coerce").astype("Int64")
    table["count"] = count.astype("int64")
    with np.errstate(invalid="ignore", divide="ignore"):
        table["mean_rating"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    table.insert(0, "row", np.arange(len(table), dtype=np.int64))
    return table


# -- the job ------------------------------------------------------------------------------------
def ingest(source: RawSource, out_dir: str | Path, **kwargs: Any) -> IngestReport:
    """Validate, de-duplicate, build vocabularies, split and write a dataset folder.

    See ``_ingest`` for the parameters. Shuffles are task-based, so ingest runs the same on the
    synchronous, threaded and distributed schedulers (p2p needs a distributed one); partitions
    are few (one per ~2M rows), so the task graph stays small.
    """
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        return _ingest(source, out_dir, **kwargs)


def _ingest(
    source: RawSource,
    out_dir: str | Path,
    *,
    strict: bool = False,
    client: Any = None,
    rows_per_partition: int = ROWS_PER_PARTITION,
    exclude_users: Iterable[str] = (),
) -> IngestReport:
    """Validate, de-duplicate, build vocabularies, split and write a dataset folder.

    ``strict`` makes any rejected row fatal (DataError listing reasons and sample lines) before
    anything is written. The folder is written under a temporary name and renamed at the end, so a
    failed ingest leaves no half-written dataset. ``exclude_users`` (external ids whose data was
    deleted on request) are left out and counted.
    """
    missing = [c for c in INTERACTION_COLUMNS if c not in source.interactions.columns]
    if missing:
        raise DataError(f"{_where(source)}: interactions lack column(s) {missing}; found {list(source.interactions.columns)}")
    out = str(out_dir).rstrip("/")
    clock: dict[str, float] = {}
    started = time.perf_counter()
    get = client.get if client is not None else None

    validated = source.interactions[list(INTERACTION_COLUMNS)].map_partitions(
        _validate_partition, source.value_range, source.numeric_ids, meta=_VALIDATED_META
    )
    rejected = validated[~validated["reason"].isna()]
    valid = validated[validated["reason"].isna()]
    excluded = sorted({str(u) for u in exclude_users})
    deleted = valid["user_id"].isin(excluded)
    n_deleted = deleted.sum()
    valid = valid[~deleted]
    try:
        first_pass = dask.compute(
            source.interactions.map_partitions(len, meta=("n", "int64")),
            rejected["reason"].value_counts(),
            rejected.map_partitions(_sample_rejects, meta=_VALIDATED_META[["reason", "part", "pos"]]),
            valid["user_id"].unique(),
            valid["item_id"].unique(),
            valid.shape[0],
            n_deleted,
            scheduler=get,
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as err:  # a malformed line deep inside a CSV
        raise DataError(f"{_where(source)}: unreadable line: {str(err).strip()}") from err
    lengths, reason_counts, samples, user_ids, item_ids, n_valid, n_deleted = first_pass
    clock["validate"] = time.perf_counter() - started
    offsets = np.r_[0, np.cumsum(np.asarray(lengths, dtype=np.int64))]
    raw_rows = int(offsets[-1])
    if raw_rows == 0:
        raise DataError(f"{_where(source)}: no interaction rows to read (empty input)")
    rejected_lines: dict[str, list[int]] = {}
    for reason, group in samples.groupby("reason", sort=False):
        lines = offsets[group["part"].to_numpy()] + group["pos"].to_numpy() + source.header_lines + 1
        rejected_lines[str(reason)] = sorted(int(x) for x in lines)[:SAMPLE_LINES]
    report = IngestReport(
        path=out,
        source=source.name,
        raw_rows=raw_rows,
        rejected={str(k): int(v) for k, v in reason_counts.items()},
        rejected_lines=rejected_lines,
        deleted_user_rows=int(n_deleted),
    )
    if strict and report.rejected:
        reasons = "; ".join(
            f"{reason}: {count} (lines {', '.join(map(str, report.rejected_lines.get(reason, [])))})"
            for reason, count in report.rejected.items()
        )
        raise DataError(f"{_where(source)}: {sum(report.rejected.values())} invalid rows (--strict): {reasons}")
    if int(n_valid) == 0:
        raise DataError(f"{_where(source)}: all {raw_rows} rows were rejected\n{report.summary()}")

    users = Vocabulary.from_ids(user_ids.astype(str), kind="user")
    catalogue = []
    if source.items is not None and len(source.items):
        catalogue = _canonical_ids(source.items["item_id"], source.numeric_ids)[0].dropna().astype(str).tolist()
    items = Vocabulary.from_ids([*item_ids.astype(str).tolist(), *catalogue], kind="item")

    fs, root = fsspec.core.url_to_fs(out)
    tmp_root = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
    tmp = fs.unstrip_protocol(tmp_root)
    fs.makedirs(tmp, exist_ok=True)
    n_parts = max(1, -(-int(n_valid) // rows_per_partition))
    user_index = pd.Index(users.ids, dtype=object)
    item_index = pd.Index(items.ids, dtype=object)
    rows = valid.map_partitions(
        _to_rows, user_index, item_index, meta=pd.DataFrame({c: pd.Series([], dtype=t) for c, t in INTERACTION_DTYPES.items()})
    )
    by_user = rows.shuffle("user", npartitions=n_parts)
    tasks = [
        dask.delayed(_finish_partition)(part, i, tmp, len(items), dask_key_name=f"write-split-partition-{i}")
        for i, part in enumerate(by_user.to_delayed())
    ]
    results = dask.compute(*tasks, scheduler=get)
    clock["split_write"] = time.perf_counter() - started - clock["validate"]

    splits = {s: sum(r["counts"][s] for r in results) for s in STORED_SPLITS}
    item_count = np.sum([r["item_count"] for r in results], axis=0)
    item_sum = np.sum([r["item_sum"] for r in results], axis=0)
    report.duplicates_dropped = sum(r["duplicates"] for r in results)
    report.repeats_collapsed = sum(r["repeats"] for r in results)
    report.interactions = sum(splits.values())
    report.users, report.items, report.splits = len(users), len(items), splits

    digest = hashlib.sha256()
    for split in STORED_SPLITS:
        total = sum(r["hashes"][split] for r in results) % 2**64  # order-free: partitioning does not matter
        digest.update(f"{split}:{splits[split]}:{total};".encode())
    digest.update("\n".join(users.ids).encode())
    digest.update("\n".join(items.ids).encode())

    fs.makedirs(f"{tmp}/vocab", exist_ok=True)
    with fs.open(f"{tmp}/vocab/users.json", "wb") as fh:
        users.save(fh)
    with fs.open(f"{tmp}/vocab/items.json", "wb") as fh:
        items.save(fh)
    with fs.open(f"{tmp}/items.parquet", "wb") as fh:
        _items_table(source, items, item_count, item_sum).to_parquet(fh, index=False)
    report.seconds = {k: round(v, 3) for k, v in clock.items()}
    manifest = {
        "format": "hybridrec-dataset/1",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "content_hash": digest.hexdigest(),
        "value_range": list(source.value_range) if source.value_range else None,
        "items_with_interactions": int((item_count > 0).sum()),
        **{k: v for k, v in asdict(report).items() if k != "path"},
        "extra": source.extra,
    }
    with fs.open(f"{tmp}/manifest.json", "w") as fh:
        json.dump(manifest, fh, indent=2, default=str)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.mv(tmp_root, root, recursive=True)
    return report
