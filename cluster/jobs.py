"""Jobs: functions that run the same on a LocalCluster and on a remote Dask cluster.

The CLI (cluster.cli) parses arguments and calls these; nothing here parses argv.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from etl.dataset import Dataset
from etl.errors import DataError, DownloadError
from etl.ingest import IngestReport, ingest
from etl.metrics import evaluate
from etl.sources.base import RawSource

DEMO_DATASET = "ml-latest-small"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_source(
    path: str | Path,
    *,
    fmt: str = "auto",
    columns: dict[str, str | None] | None = None,
    items: str | Path | None = None,
) -> RawSource:
    """A source from a path: a MovieLens folder/zip, or CSV/Parquet interactions with a mapping."""
    from etl.sources.movielens import read_movielens
    from etl.sources.tabular import read_interactions

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if fmt == "auto":
        fmt = "movielens" if (p.is_dir() and not any(p.glob("*.parquet"))) or p.suffix == ".zip" else "table"
    if fmt == "movielens":
        return read_movielens(p)
    if fmt == "table":
        return read_interactions(p, items=items, **(columns or {}))
    raise ValueError(f"unknown source format {fmt!r}; expected auto, movielens or table")


def demo_source(data_root: str | Path, client: Any = None) -> RawSource:
    """The demo's data: $HYBRIDREC_DATA if set, else a MovieLens download, else synthetic data."""
    from etl.sources.download import download_movielens
    from etl.sources.synthetic import SyntheticConfig, generate

    configured = os.environ.get("HYBRIDREC_DATA")
    if configured:
        log(f"data: using HYBRIDREC_DATA={configured}")
        return read_source(configured)
    try:
        folder = download_movielens(DEMO_DATASET, data_root)
        log(f"data: downloaded {DEMO_DATASET} from GroupLens into {folder}")
        return read_source(folder)
    except DownloadError as err:
        log(f"data: download failed ({err}); using the synthetic generator instead")
    config = SyntheticConfig(n_interactions=100_836, seed=0)
    log(f"data: synthetic MovieLens-like data, {config.n_interactions:,} interactions, seed {config.seed}")
    return generate(config, client=client)


def ingest_job(source: RawSource, out: str | Path, *, strict: bool = False, client: Any = None) -> IngestReport:
    report = ingest(source, out, strict=strict, client=client)
    log(report.summary())
    return report


def evaluate_job(dataset: str | Path, *, k: int = 10, split: str = "test") -> dict[str, dict[str, float]]:
    """The protocol's table on ``split`` for the baselines and models available."""
    from models.base import TrainData
    from models.popularity import Popularity

    ds = Dataset.open(dataset)
    fit_split = "train" if split == "test" else "fit"
    if split not in ("test", "validation"):
        raise DataError(f"evaluate: split must be test or validation, not {split!r}")
    data = TrainData(ds, split=fit_split)
    train, truth = data.matrix(), ds.matrix(split)
    rows: dict[str, dict[str, float]] = {}
    model = Popularity().fit(data)
    rows["popularity"] = evaluate(model.score, train, truth, k=k)
    return rows


def format_table(rows: dict[str, dict[str, float]], k: int = 10) -> str:
    keys = [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"map@{k}", f"hit_rate@{k}", f"coverage@{k}"]
    head = f"{'method':<22}" + "".join(f"{key:>14}" for key in keys)
    lines = [head, "-" * len(head)]
    for name, metrics in rows.items():
        lines.append(f"{name:<22}" + "".join(f"{metrics.get(key, float('nan')):>14.4f}" for key in keys))
    return "\n".join(lines)
