"""Jobs: functions that run the same on a LocalCluster and on a remote Dask cluster.

The CLI (cluster.cli) parses arguments and calls these; nothing here parses argv. Every job that
writes publishes atomically (a temp folder renamed into place), so a job re-run after a worker
died leaves no half-written result.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import pandas as pd

from cluster.client import get_client
from cluster.event_intake import Intake, take_events
from cluster.placement import training_options
from etl.dataset import Dataset
from etl.errors import DataError, DownloadError
from etl.ingest import IngestReport, ingest
from etl.metrics import evaluate
from etl.sources.base import ITEM_COLUMNS, RawSource
from models.base import FactorModel, TrainData

DEMO_DATASET = "ml-latest-small"
#: Interactions of the synthetic data used when the download fails (as many as ml-latest-small).
DEMO_SYNTHETIC_INTERACTIONS = 100_836
#: Written into the raw folder once the demo's data is there: what it is and where.
PREPARED_FILE = "prepared.json"
RUN_FILE = "run.json"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------
def read_source(
    path: str | Path,
    *,
    fmt: str = "auto",
    columns: dict[str, str | None] | None = None,
    items: str | Path | None = None,
) -> RawSource:
    """A source from a path: a MovieLens folder/zip, a folder written by `hybridrec data synth`, or
    CSV/Parquet interactions with a mapping."""
    from etl.sources.movielens import read_movielens
    from etl.sources.synthetic import CONFIG_FILE, read_parquet
    from etl.sources.tabular import read_interactions

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if fmt == "auto":
        if p.is_dir() and (p / CONFIG_FILE).is_file():
            fmt = "synthetic"
        else:
            fmt = "movielens" if (p.is_dir() and not any(p.glob("*.parquet"))) or p.suffix == ".zip" else "table"
    if fmt == "movielens":
        return read_movielens(p)
    if fmt == "synthetic":
        return read_parquet(p)
    if fmt == "table":
        return read_interactions(p, items=items, **(columns or {}))
    raise ValueError(f"unknown source format {fmt!r}; expected auto, movielens, synthetic or table")


def prepare_data(
    raw_dir: str | Path, *, client: Any = None, synthetic_interactions: int = DEMO_SYNTHETIC_INTERACTIONS
) -> Path:
    """The folder of the demo's raw data, decided once per ``raw_dir`` and kept there.

    $HYBRIDREC_DATA when set (an operator's data: checked, never copied); else what an earlier call
    prepared in ``raw_dir`` (a restart reuses it, without the network); else MovieLens downloaded
    and checksum-verified into ``raw_dir``; else synthetic data written there. Each case is logged.
    """
    from etl.sources.download import download_movielens
    from etl.sources.synthetic import SyntheticConfig, write_parquet

    configured = os.environ.get("HYBRIDREC_DATA")
    if configured:
        read_source(configured)  # an unreadable folder stops here, named
        log(f"data: using HYBRIDREC_DATA={configured}")
        return Path(configured)
    raw = Path(raw_dir)
    marker = raw / PREPARED_FILE
    if marker.is_file():
        prepared = json.loads(marker.read_text())
        folder = raw / prepared["folder"]
        if folder.exists():
            log(f"data: reusing {prepared['what']} in {folder}, prepared {prepared['prepared_at']} "
                f"(remove {marker} to prepare the data again)")
            return folder
        log(f"data: {folder}, named by {marker}, is gone; preparing the data again")
    try:
        folder = download_movielens(DEMO_DATASET, raw)
        what = f"{DEMO_DATASET} downloaded from GroupLens (checksum verified)"
        log(f"data: {what} into {folder}")
    except DownloadError as err:
        log(f"data: download failed ({err}); using the synthetic generator instead")
        config = SyntheticConfig(n_interactions=synthetic_interactions, seed=0)
        folder = raw / "synthetic"
        _replace_dir(folder, lambda tmp: write_parquet(config, tmp, client=client))
        what = f"synthetic MovieLens-like data ({config.n_interactions:,} interactions, seed {config.seed})"
        log(f"data: {what} written to {folder}")
    written = marker.with_name(f".{marker.name}.tmp-{uuid.uuid4().hex[:8]}")
    written.write_text(json.dumps({"what": what, "folder": folder.name,
                                   "prepared_at": datetime.now(UTC).isoformat(timespec="seconds")}))
    written.replace(marker)
    return folder


def demo_source(data_root: str | Path, client: Any = None) -> RawSource:
    """The demo's data (see ``prepare_data``; ``data_root`` is its raw folder) as a source."""
    return read_source(prepare_data(data_root, client=client))


def training_source(source: RawSource, intake: Intake, *, upto: float | None = None) -> RawSource:
    """The source without deleted users' rows, plus the learned events accepted up to ``upto``
    (default: the intake's cutoff). The cutoff and the deletions' read time travel in
    ``extra['events']`` into the dataset's and then the bundle's manifest, where serving reads
    which events the bundle has learned."""
    cutoff = intake.cutoff if upto is None else min(upto, intake.cutoff)
    events = intake.events[intake.events["accepted_at"] <= cutoff]
    interactions = source.interactions
    if intake.deletions:
        users = interactions["user_id"].astype(str).unique().compute()
        deleted = sorted(intake.deleted_ids(users))
        if deleted:
            interactions = interactions[~interactions["user_id"].astype(str).isin(deleted)]
            log(f"data: leaving out the source rows of {len(deleted):,} users whose data was deleted on request")
    if len(events):
        frame = events[["user_id", "item_id", "value", "timestamp"]].astype("string")
        interactions = dd.concat([interactions, dd.from_pandas(frame, npartitions=1)])
        log(f"data: adding {len(events):,} interactions accepted by the API (up to {_when(cutoff)})")
    facts = {"cutoff": cutoff, "read_at": intake.read_at, "count": int(len(events))}
    name = f"{source.name}+api-events" if len(events) else source.name
    items, numeric_ids = source.items, source.numeric_ids
    extra = {**source.extra, "events": facts}
    if intake.items is not None and len(intake.items):
        items, numeric_ids = with_added_items(source, intake.items)
        extra["added_items"] = int(len(intake.items))
    return RawSource(**{**source.__dict__, "interactions": interactions, "name": name, "items": items,
                        "numeric_ids": numeric_ids, "extra": extra})


def with_added_items(source: RawSource, added: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """The source's items table with the items added while serving (graphql_api.items) merged in:
    an added id's metadata replaces the source's, a new id becomes a row (so it is in the item
    vocabulary even before anyone interacts with it). Also whether ids stay numeric: a source of
    numeric ids (MovieLens) with an added id that is not a number takes ids as text, else the
    added item and its events would be rejected as non-numeric."""
    table = pd.DataFrame({
        "item_id": added["id"].astype(str).to_numpy(dtype=object),
        "title": added["title"].astype("string").to_numpy(),
        "genres": [list(v) for v in added["genres"]],
        "tags": [list(v) for v in added["tags"]],
        "year": pd.to_numeric(added["year"], errors="coerce").astype("Int64").to_numpy(),
    }, columns=list(ITEM_COLUMNS))
    numeric = source.numeric_ids
    if numeric and not table["item_id"].str.fullmatch(r"\d+").all():
        log("data: some added item ids are not numbers; this dataset takes ids as text")
        numeric = False
    base = source.items
    if base is None or not len(base):
        merged = table
    else:
        held = base["item_id"].astype("string").str.strip()
        replaced = held.isin(set(table["item_id"]))
        merged = pd.concat([table, base.loc[~replaced.to_numpy(), list(ITEM_COLUMNS)]], ignore_index=True)
        log(f"data: {len(table) - int(replaced.sum()):,} items added while serving, "
            f"{int(replaced.sum()):,} given new metadata")
    return merged.reset_index(drop=True), numeric


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def ingest_job(
    source: RawSource, out: str | Path, *, strict: bool = False, client: Any = None, exclude_users: Sequence[str] = ()
) -> IngestReport:
    report = ingest(source, out, strict=strict, client=client, exclude_users=exclude_users)
    log(report.summary())
    return report


# -- training ------------------------------------------------------------------------------------
def _cluster(client: Any) -> Any:
    """``client``, or when None this process's (cluster.client.get_client): jobs open the cluster that
    models and the tuner are handed."""
    return client if client is not None else get_client(quiet=True)


def train_job(
    dataset: str | Path, out: str | Path, signals: Sequence[str], *, split: str = "train", client: Any = None,
    seed: int = 0, progress: bool = True,
) -> dict[str, Path]:
    """Fit each signal with its default (tuned) config, side by side on the cluster
    (training.pipeline.fit_signals, a line per fit when ``progress``); save each as its fit ends,
    so a failing signal loses no other's finished fit."""
    from training.pipeline import default_config, fit_signals

    ds = Dataset.open(dataset)
    options = training_options(_cluster(client), seed=seed)
    data = TrainData(ds, split=split, validation="validation" if split == "fit" else None)
    saved: dict[str, Path] = {}

    def save(kind: str, model: FactorModel, seconds: float) -> None:
        _replace_dir(Path(out) / kind, model.save)
        saved[kind] = Path(out) / kind

    fit_signals(data, {kind: default_config(kind) for kind in signals}, options, verbose=progress, on_fit=save)
    return {kind: saved[kind] for kind in signals}


def tune_job(
    dataset: str | Path, run_dir: str | Path, *, signals: Sequence[str] | None = None, client: Any = None,
    seed: int = 0, generations: int | None = None, refit: str = "auto",
) -> dict[str, Any]:
    """Tune the blend on validation, refit on train, evaluate on test; save the run folder.

    ``refit``: how the final models are made on 'train' (``PipelineConfig.refit``: 'auto', 'fit'
    or 'fold_in').

    The run folder holds the final signals (signals/<kind>/), run.json (weights, scales, metrics,
    parameters, the GA's history) and the GA's convergence plot (convergence.png).
    """
    from training.pipeline import DEFAULT_SIGNALS, PipelineConfig, run_pipeline
    from training.tuner import GAConfig

    ga = GAConfig(seed=seed) if generations is None else GAConfig(seed=seed, generations=generations)
    config = PipelineConfig(signals=tuple(signals or DEFAULT_SIGNALS), ga=ga, seed=seed, refit=refit)
    options = training_options(_cluster(client), seed=seed)
    run = Path(run_dir)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        result = run_pipeline(dataset, config, options, plot=tmp / "convergence.png")
        for kind, model in result.fusion.models.items():
            model.save(tmp / "signals" / kind)
        summary = result.summary() | {"dataset": str(dataset), "dataset_hash": Dataset.open(dataset).manifest["content_hash"]}
        (tmp / RUN_FILE).write_text(json.dumps(summary, indent=2))

    _replace_dir(run, write)
    return json.loads((run / RUN_FILE).read_text())


def load_run(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The Fusion of a tuned run and its run.json."""
    from hybrid.fusion import Fusion

    run = Path(run_dir)
    if not (run / RUN_FILE).exists():
        raise DataError(f"{run} is not a tuned run: {RUN_FILE} is missing (run `hybridrec tune`)")
    summary = json.loads((run / RUN_FILE).read_text())
    models = {s: FactorModel.load(run / "signals" / s) for s in summary["signals"]}
    return Fusion(models, {s: float(summary["scales"][s]) for s in summary["signals"]}), summary


def index_job(run_dir: str | Path, bundle_root: str | Path, dataset: str | Path | None = None, *,
              make_latest: bool = True) -> str | Path:
    """Build the usearch index over the run's fused item vectors and publish a bundle version
    (``make_latest=False``: a candidate, not served until ``hybrid.bundle.set_latest``)."""
    from training.pipeline import publish_bundle

    fusion, summary = load_run(run_dir)
    ds = Dataset.open(dataset or summary["dataset"])
    if ds.manifest["content_hash"] != summary.get("dataset_hash"):
        raise DataError(f"{ds.path} is not the dataset the run was tuned on (content hash differs)")
    metrics = {"test": summary["test"], "validation": summary["validation"]}
    params = {**summary["params"], "tuning": summary["tuning"], "pool": summary["pool"],
              **({"refit": summary["refit"]} if "refit" in summary else {})}  # runs before refit was recorded lack it
    log(f"index: building the usearch index over {ds.n_items:,} fused item vectors and publishing")
    path = publish_bundle(bundle_root, fusion, ds, summary["weights"], metrics, params, make_latest=make_latest)
    log(f"index: published {path}" + ("" if make_latest else " (candidate, not latest)"))
    return path


def load_signals(signals_dir: str | Path, data: TrainData) -> dict[str, FactorModel]:
    """The signals `hybridrec train` saved under ``signals_dir`` (one folder each), checked to be fit
    on ``data``'s split of its dataset: the same vocabularies and the same interactions."""
    root = Path(signals_dir)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    folders = sorted(p.parent for p in root.glob("*/model.json"))
    if not folders:
        raise DataError(f"{root} holds no saved signal (a folder with model.json; run `hybridrec train`)")
    models: dict[str, FactorModel] = {}
    seen = data.matrix()
    for folder in folders:
        try:
            model = FactorModel.load(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a torn or foreign folder, named
            raise DataError(f"{folder} is not a signal `hybridrec train` saved: {exc}") from exc
        if model.split_ != data.split:
            raise DataError(f"{folder} was fit on the {model.split_!r} split; the test rows need models fit on "
                            f"{data.split!r} (`hybridrec train --split {data.split}`)")
        if (model.users_ != data.dataset.users or model.items_ != data.dataset.items
                or model.seen_.shape != seen.shape or (model.seen_ != seen).nnz):
            raise DataError(f"{folder} was not fit on {data.dataset.path}: its users, items or interactions differ")
        models[folder.name] = model
    return models


def evaluate_job(dataset: str | Path, *, run_dir: str | Path | None = None, signals_dir: str | Path | None = None,
                 k: int = 10) -> dict[str, dict[str, float]]:
    """The protocol's table on the test split: popularity, each signal `hybridrec train` saved under
    ``signals_dir``, and each signal and the blend of a tuned run."""
    from training.pipeline import fused_scorer
    from models.popularity import Popularity

    ds = Dataset.open(dataset)
    data = TrainData(ds, split="train")
    train, truth = data.matrix(), ds.matrix("test")
    rows: dict[str, dict[str, float]] = {"popularity": evaluate(Popularity().fit(data).score, train, truth, k=k)}
    if signals_dir is not None:
        for name, model in load_signals(signals_dir, data).items():
            rows[f"{name} (trained)"] = evaluate(model.score, train, truth, k=k)
    if run_dir is not None:
        fusion, summary = load_run(run_dir)
        for s in fusion.signals:
            rows[s] = evaluate(fusion.models[s].score, train, truth, k=k)
        rows["hybrid (tuned)"] = evaluate(fused_scorer(fusion, summary["weights"]), train, truth, k=k)
    return rows


def pipeline_job(
    data_root: str | Path, bundle_root: str | Path, *, source: str | Path | None = None, client: Any = None,
    events_dir: str | Path | None = None, redis_url: str | None = None, seed: int = 0,
    signals: Sequence[str] | None = None, generations: int | None = None, refit: str = "auto",
) -> str | Path:
    """Everything: data (with the API's accepted events) -> ingest -> tune -> index -> publish.

    ``signals``, ``generations`` and ``refit`` are the tuner's (default: every signal, the GA's
    generations, ``PipelineConfig.refit``'s 'auto').
    """
    root = Path(data_root)
    raw = read_source(source) if source else demo_source(root / "raw", client=client)
    intake = take_events(root, events_dir, redis_url)
    dataset = root / "dataset"
    ingest_job(training_source(raw, intake), dataset, client=client)
    run = root / "runs" / "latest"
    tune_job(dataset, run, signals=signals, client=client, seed=seed, generations=generations, refit=refit)
    return index_job(run, bundle_root, dataset)


def format_table(rows: dict[str, dict[str, float]], k: int = 10) -> str:
    keys = [f"ndcg@{k}", f"recall@{k}", f"precision@{k}", f"map@{k}", f"hit_rate@{k}", f"coverage@{k}",
            f"cold_recall@{k}", f"cold_share@{k}"]
    head = f"{'method':<22}" + "".join(f"{key:>14}" for key in keys)
    lines = [head, "-" * len(head)]
    for name, metrics in rows.items():
        lines.append(f"{name:<22}" + "".join(f"{metrics.get(key, float('nan')):>14.4f}" for key in keys))
    return "\n".join(lines)


def _replace_dir(target: str | Path, write: Any) -> None:
    """Call write(tmp) on a fresh temp folder beside target, then swap it into place."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
