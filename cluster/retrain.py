"""Retraining on its own: when enough new interactions have arrived, train, compare, publish.

A new bundle is published only if its validation NDCG@10 is not worse than the live bundle's by
more than a tolerance; every decision is logged with its reason.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cluster.jobs import demo_source, index_job, ingest_job, log, read_source, tune_job, with_accepted_events

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


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


def _live(bundle_root: str | Path) -> tuple[float | None, float | None]:
    """The live bundle's creation time (epoch seconds) and validation NDCG@10 of its blend."""
    from hybrid.bundle import latest_version, load

    if latest_version(bundle_root) is None:
        return None, None
    manifest = load(bundle_root, mmap=True).manifest
    created = datetime.fromisoformat(manifest["created_at"]).timestamp()
    return created, manifest.get("metrics", {}).get("validation", {}).get("hybrid")


def retrain_once(
    data_root: str | Path, bundle_root: str | Path, *, min_new_events: int, tolerance: float,
    events_dir: str | Path | None = None, redis_url: str | None = None, source: str | Path | None = None,
    client: Any = None, seed: int = 0,
) -> Decision:
    from graphql_api.events import read_accepted_events

    root = Path(data_root)
    created, live_ndcg = _live(bundle_root)
    if created is not None and (events_dir or redis_url):
        new = len(read_accepted_events(events_dir, redis_url=redis_url, since=created))
        if new < min_new_events:
            return Decision(False, f"{new} new interactions since the live bundle, fewer than {min_new_events}")
    raw = read_source(source) if source else demo_source(root / "raw", client=client)
    raw, deleted = with_accepted_events(raw, events_dir, redis_url)
    ingest_job(raw, root / "dataset", client=client, exclude_users=sorted(deleted))
    summary = tune_job(root / "dataset", root / "runs" / "candidate", client=client, seed=seed)
    new_ndcg = float(summary["validation"]["hybrid"])
    if live_ndcg is not None and new_ndcg < live_ndcg - tolerance:
        return Decision(False, f"validation NDCG@10 {new_ndcg:.4f} is worse than the live {live_ndcg:.4f} by more than {tolerance}")
    path = index_job(root / "runs" / "candidate", bundle_root, root / "dataset")
    base = "no live bundle" if live_ndcg is None else f"live {live_ndcg:.4f}"
    return Decision(True, f"validation NDCG@10 {new_ndcg:.4f} ({base}, tolerance {tolerance})", path)


def retrain_loop(every: float, *, once: bool = False, **kwargs: Any) -> Decision:
    """Check every ``every`` seconds (forever unless ``once``); log each decision."""
    while True:
        decision = retrain_once(**kwargs)
        log(f"retrain: {'published ' + str(decision.bundle) if decision.published else 'not published'}: {decision.reason}")
        if once:
            return decision
        time.sleep(every)
