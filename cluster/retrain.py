"""Retraining on its own: when enough new interactions (or any deletion) arrived, train, compare, publish.

One decision (``retrain_once``):

1. Read the events accepted since the last run into the data root (cluster.event_intake).
2. Retrain when at least ``min_new_events`` events arrived after the live bundle's cutoff, or any
   user was deleted after the live bundle read the deletions (an erased user must leave the served
   bundle), or when nothing is live yet.
3. Hold out the newest ``holdout_share`` of those new events (never trained on by the live bundle,
   left out of the candidate's training), train the candidate on the rest, publish it as a
   candidate version (not ``latest``).
4. Score the live bundle and the candidate on the same held-out events, each as it would serve
   them (its trained history plus the older online events it has not learned folded in), by
   NDCG@10 of the held-out items. Publish when the candidate is not worse than the live bundle by
   more than ``tolerance``; a run forced by a deletion publishes regardless (erasure wins over
   quality, and the reason says so). A refused candidate is removed.

Every decision is logged with its reason and figures.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cluster.event_intake import SETTLE_SECONDS, Intake, take_events
from cluster.jobs import demo_source, index_job, ingest_job, log, read_source, training_source, tune_job
from etl.events_log import compact_redis, learned_events, trim_learned, user_key
from etl.metrics import ranking_metrics

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HOLDOUT_SHARE = 0.2
"""Share of the new events (the newest) the comparison holds out."""
K = 10
ERASURE_PENDING = "erasure-pending"
"""In the data root while a deletion's publish has not finished erasing (retried by every run)."""
KEEP_VERSIONS = 3
"""Bundle versions kept after a publish (the live one and the newest rollback targets)."""


def parse_duration(text: str) -> float:
    """Seconds in '90s', '15m', '1h', '1d' (or a bare number of seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"bad duration {text!r}: expected a number with s, m, h or d (e.g. 15m)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@dataclass
class Decision:
    published: bool
    reason: str
    bundle: str | Path | None = None
    figures: dict[str, float] = field(default_factory=dict)
    """live / candidate NDCG@10 on the held-out events, their user and event counts."""


def _live(bundle_root: str | Path) -> Any:
    """The live bundle (hybrid.bundle.Bundle), or None before the first publish."""
    from hybrid.bundle import latest_version, load

    return None if latest_version(bundle_root) is None else load(bundle_root, mmap=True)


def holdout_ndcg(bundle: Any, prior: pd.DataFrame, holdout: pd.DataFrame, users: list[str], k: int = K) -> np.ndarray:
    """Per-user NDCG@k of ``bundle`` on each user's held-out items, served as the API would.

    A user's history is the bundle's trained one plus the user's ``prior`` events (before the
    holdout) it has not learned folded in (etl.events_log.learned_events, as serving does); seen items are excluded from the ranking
    and from the truth. Users in ``users`` order; NaN where nothing held out is left to find.
    """
    from hybrid.recommender import HybridRecommender

    recommender = HybridRecommender(bundle)
    prior_by_user = {u: g for u, g in prior.groupby("user_id", sort=False)}
    truth_by_user = {u: g for u, g in holdout.groupby("user_id", sort=False)}
    out = np.full(len(users), np.nan)
    for i, user in enumerate(users):
        history = recommender.history(user)
        override = None
        mine = prior_by_user.get(user)
        if mine is not None:
            rows = bundle.items.rows(mine["item_id"].astype(str).tolist(), missing="ignore")
            keep = (rows >= 0) & ~learned_events(history.items, rows, mine["accepted_at"].to_numpy(),
                                                 bundle.events_cutoff)
            if keep.any():
                override = history = history.extend(rows[keep], mine["value"].to_numpy(np.float32)[keep])
        truth = bundle.items.rows(truth_by_user[user]["item_id"].astype(str).tolist(), missing="ignore")
        truth = np.setdiff1d(truth[truth >= 0], history.items)
        if truth.size == 0:
            continue
        ranked = np.array([r.item_row for r in recommender.recommend(user, k, history_override=override).items], np.int64)
        topk = np.full((1, k), -1, np.int64)
        topk[0, : ranked.size] = ranked
        test = sp.csr_matrix((np.ones(truth.size, np.float32), (np.zeros(truth.size, np.int64), truth)),
                             shape=(1, len(bundle.items.ids)))
        out[i] = ranking_metrics(topk, np.array([0]), test, k=k)[f"ndcg@{k}"]
    return out


def split_holdout(intake: Intake, after: float, share: float) -> tuple[float, pd.DataFrame]:
    """(holdout start, held-out events): the newest ``share`` of the events accepted after ``after``.

    Events stamped with the same time as the boundary stay on the training side, so the two sides
    are split by time alone.
    """
    new = intake.events[intake.events["accepted_at"] > after]
    if new.empty:
        return intake.cutoff, new
    times = np.sort(new["accepted_at"].to_numpy())
    n_train = len(times) - max(1, math.ceil(share * len(times)))
    start = after if n_train <= 0 else float(times[n_train - 1])
    return start, new[new["accepted_at"] > start]


def retrain_once(
    data_root: str | Path, bundle_root: str | Path, *, min_new_events: int, tolerance: float,
    events_dir: str | Path | None = None, redis_url: str | None = None, source: str | Path | None = None,
    client: Any = None, seed: int = 0, holdout_share: float = HOLDOUT_SHARE,
    signals: list[str] | None = None, generations: int | None = None, keep: int = KEEP_VERSIONS,
    settle: float = SETTLE_SECONDS,
) -> Decision:
    """One check, and a training run when it is due (see the module docstring). After a publish,
    only the newest ``keep`` versions are retained and the online copies of events every one of
    them has learned are dropped (``retire``)."""
    from hybrid.bundle import remove_version, set_latest

    if not 0 < holdout_share < 1:
        raise ValueError(f"holdout_share must be between 0 and 1 (exclusive), got {holdout_share}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the live version), got {keep}")
    root = Path(data_root)
    live = _live(bundle_root)
    intake = take_events(root, events_dir, redis_url, settle=settle)
    if (root / ERASURE_PENDING).exists():
        _finish_erasure(bundle_root, root, intake, redis_url)
    upto: float | None = None
    holdout = intake.events.iloc[:0]
    forced = ""
    if live is not None:
        new = int((intake.events["accepted_at"] > live.events_cutoff).sum())
        deleted = sum(1 for t in intake.deletions.values() if t > live.deletions_read_at)
        if deleted:
            forced = f"{deleted} user(s) deleted since the live bundle was trained"
        elif new < min_new_events:
            return Decision(False, f"{new} new interactions since the live bundle, fewer than {min_new_events}")
        upto, holdout = split_holdout(intake, live.events_cutoff, holdout_share)
    raw = read_source(source) if source else demo_source(root / "raw", client=client)
    ingest_job(training_source(raw, intake, upto=upto), root / "dataset", client=client)
    summary = tune_job(root / "dataset", root / "runs" / "candidate", client=client, seed=seed,
                       signals=signals, generations=generations)
    path = index_job(root / "runs" / "candidate", bundle_root, root / "dataset", make_latest=False)
    version = Path(str(path)).name
    if live is None:
        set_latest(bundle_root, version)
        retire(bundle_root, keep, events_dir, redis_url, root)
        return Decision(True, f"no live bundle; validation NDCG@10 {float(summary['validation']['hybrid']):.4f}", path)

    figures = compare(live, path, intake, holdout, upto if upto is not None else intake.cutoff)
    verdict = (f"held-out NDCG@{K} on {figures['held_out_events']:.0f} newest events of "
               f"{figures['users']:.0f} users: candidate {figures['candidate']:.4f}, live {figures['live']:.4f} "
               f"(tolerance {tolerance})")
    if forced or not figures["users"] or figures["candidate"] >= figures["live"] - tolerance:
        if forced:  # until erase completes, every run retries it (a crash must not leave traces)
            (root / ERASURE_PENDING).write_text(version)
        set_latest(bundle_root, version)
        why = f"published because {forced}; " if forced else ""
        if not figures["users"]:
            why += "no held-out event to compare on; "
        if forced:
            _finish_erasure(bundle_root, root, intake, redis_url)
        retire(bundle_root, keep, events_dir, redis_url, root)
        return Decision(True, why + verdict, path, figures)
    remove_version(bundle_root, version)
    return Decision(False, "candidate worse than live: " + verdict, None, figures)


def compare(live: Any, candidate_path: str | Path, intake: Intake, holdout: pd.DataFrame, upto: float) -> dict[str, float]:
    """Both bundles' mean NDCG@10 on the same held-out events and users."""
    from hybrid.bundle import load

    candidate = load(candidate_path, mmap=True)
    prior = intake.events[intake.events["accepted_at"] <= upto]
    users = sorted(holdout["user_id"].astype(str).unique())
    live_scores = holdout_ndcg(live, prior, holdout, users)
    cand_scores = holdout_ndcg(candidate, prior, holdout, users)
    both = ~np.isnan(live_scores) & ~np.isnan(cand_scores)
    return {
        "live": float(live_scores[both].mean()) if both.any() else float("nan"),
        "candidate": float(cand_scores[both].mean()) if both.any() else float("nan"),
        "users": float(both.sum()),
        "held_out_events": float(len(holdout)),
    }


def _finish_erasure(bundle_root: str | Path, root: Path, intake: Intake, redis_url: str | None) -> None:
    for line in erase(bundle_root, root, intake, redis_url):
        log(f"retrain: erasure: {line}")
    (root / ERASURE_PENDING).unlink(missing_ok=True)


def erase(bundle_root: str | Path, data_root: Path, intake: Intake, redis_url: str | None) -> list[str]:
    """After a publish that left the deleted users out: remove every other trace of them that
    training keeps. Bundle versions that read the deletions before one of their users was deleted
    (rollback targets: a rollback must not bring the user back), runs of other datasets under
    ``data_root/runs`` (their signals hold user factors), and Redis's purged bytes on disk
    (etl.events_log.compact_redis). The events file and the dataset were rewritten by this run."""
    from etl.dataset import Dataset
    from hybrid.bundle import list_bundles, load, remove_version

    done: list[str] = []
    for info in list_bundles(bundle_root):
        if info.is_latest:
            continue
        bundle = load(info.path, mmap=True)
        holds = [u for u in intake.deleted_ids(bundle.users.ids)
                 if intake.deletions[user_key(intake.salt, u)] > bundle.deletions_read_at]
        del bundle
        if holds:
            remove_version(bundle_root, info.version)
            done.append(f"removed bundle version {info.version} (it holds {len(holds)} deleted user(s))")
    current = Dataset.open(data_root / "dataset").manifest["content_hash"]
    for run in sorted((data_root / "runs").glob("*/run.json")):
        if json.loads(run.read_text()).get("dataset_hash") != current:
            shutil.rmtree(run.parent)
            done.append(f"removed run {run.parent.name} (trained on an earlier dataset)")
    if redis_url is not None:
        done += compact_redis(redis_url)
    return done


def retire(bundle_root: str | Path, keep: int, events_dir: str | Path | None, redis_url: str | None,
           data_root: Path) -> int:
    """Remove all but the newest ``keep`` versions (never ``latest``), then drop the online copies
    of the events every remaining version has learned (by serving's rule: accepted by its cutoff
    and in the user's trained history; an event in a user's test part stays online to be folded
    in); returns the copies dropped."""
    from cluster.event_intake import learned
    from hybrid.bundle import list_bundles, load, remove_version

    versions = list_bundles(bundle_root)
    for old in versions[: max(0, len(versions) - keep)]:
        if not old.is_latest:
            remove_version(bundle_root, old.version)
            log(f"retrain: removed bundle version {old.version} (keeping the newest {keep})")
    kept = list_bundles(bundle_root)
    upto = min((b.events_cutoff for b in kept), default=-math.inf)
    if not math.isfinite(upto) or (events_dir is None and redis_url is None):
        return 0
    events, _ = learned(data_root)
    events = events[events["accepted_at"] <= upto]
    done = np.ones(len(events), bool)
    for info in kept:
        bundle = load(info.path, mmap=True)
        item_rows = bundle.items.rows(events["item_id"].astype(str).tolist(), missing="ignore")
        for user, idx in events.groupby("user_id", sort=False).indices.items():
            row = bundle.users.rows([str(user)], missing="ignore")[0]
            trained = bundle.history.indices[bundle.history.indptr[row]:bundle.history.indptr[row + 1]] \
                if row >= 0 else np.zeros(0, np.int64)
            done[idx] &= learned_events(trained, item_rows[idx], events["accepted_at"].to_numpy()[idx],
                                        bundle.events_cutoff)
    ids = set(events["event_id"].astype(str)[done])
    dropped = trim_learned(events_dir, redis_url=redis_url, event_ids=ids) if ids else 0
    if dropped:
        log(f"retrain: dropped {dropped:,} online copies of events every retained bundle has learned")
    return dropped


def retrain_loop(every: float, *, once: bool = False, **kwargs: Any) -> Decision:
    """Check every ``every`` seconds (forever unless ``once``); log each decision."""
    while True:
        try:
            decision = retrain_once(**kwargs)
        except Exception as err:  # noqa: BLE001 - a failed run is logged; the next one retries
            if once:
                raise
            log(f"retrain: failed ({type(err).__name__}: {err}); trying again in {every:.0f} s")
        else:
            log(f"retrain: {'published ' + str(decision.bundle) if decision.published else 'not published'}: "
                f"{decision.reason}")
            if once:
                return decision
        time.sleep(every)
