"""The production loop's training side: events folded in once, the retrain gate, retention.

Real parts: the API's event log (etl.events_log.EventLog, the same appends the API makes), a
Dask LocalCluster, the real ingest/tune/index jobs on a small MovieLens-layout source.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from cluster.event_intake import learned
from cluster.retrain import retrain_once, split_holdout
from etl.events_log import Deletion, Event, EventLog, user_key
from graphql_api.engine import Engine
from graphql_api.store import LocalState
from hybrid.bundle import latest_version, list_bundles, load
from tests.test_cluster_topology import write_movielens_layout

SIGNALS = ["als", "content", "popularity"]
FAST = {"signals": SIGNALS, "generations": 3, "settle": 0.0}
"""Small and quick; nothing appends while a test's trainer reads, so the cutoff need not trail."""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens_layout(tmp_path_factory.mktemp("src") / "raw")


def _events(users: list[str], items: list[str], at: float, ts: int = 2_000_000) -> list[Event]:
    """One event per (user, item), accepted a microsecond apart from ``at`` on (in order; all of
    them before the fsync'd append returns, so before any later read)."""
    return [Event(u, i, 4.5, ts + k, accepted_at=at + k * 1e-6) for k, (u, i) in enumerate(zip(users, items, strict=True))]


def _taste_events(n: int, at: float, seed: int) -> list[Event]:
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 81, n)
    # the source's tastes: user u likes items of parity u % 2 (items numbered from 1)
    items = [str(2 * int(rng.integers(0, 30)) + 1 + (int(u) + 1) % 2) for u in users]
    return _events([str(u) for u in users], items, at)


def test_events_are_folded_in_once(client: Client, source: Path, tmp_path: Path) -> None:
    """Record, retrain, publish: the answer equals that of a bundle trained on the same events given
    as plain data, and the events the bundle learned are not folded in again."""
    log = EventLog(tmp_path / "events")
    learned_events = _events(["3"] * 6 + ["900"] * 4, ["2", "4", "6", "8", "10", "12", "1", "3", "5", "7"], time.time())
    log.append(learned_events)
    decision = retrain_once(tmp_path / "work", tmp_path / "bundles", min_new_events=1, tolerance=0.0,
                            events_dir=tmp_path / "events", source=source, client=client, **FAST)
    assert decision.published, decision.reason
    fresh = _events(["3"], ["14"], time.time())  # after the cutoff: served as an online event
    log.append(fresh)
    local = LocalState(log)
    local.sync()
    engine = Engine.load(tmp_path / "bundles")
    assert engine.bundle.events_cutoff < fresh[0].accepted_at
    assert engine.bundle.manifest.dataset.events.count == len(learned_events)

    # the same interactions as plain data: the source's ratings plus the learned events
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("movies.csv", "tags.csv"):
        (plain / name).write_bytes((source / name).read_bytes())
    ratings = pd.read_csv(source / "ratings.csv")
    extra = pd.DataFrame({"userId": [int(e.user_id) for e in learned_events],
                          "movieId": [int(e.item_id) for e in learned_events],
                          "rating": [e.value for e in learned_events],
                          "timestamp": [e.timestamp for e in learned_events]})
    pd.concat([ratings, extra]).to_csv(plain / "ratings.csv", index=False)
    retrain_once(tmp_path / "work-plain", tmp_path / "bundles-plain", min_new_events=1, tolerance=0.0,
                 source=plain, client=client, **FAST)
    reference = Engine.load(tmp_path / "bundles-plain")

    for user in ("3", "900"):
        mine = (*[e for e in learned_events if e.user_id == user], *[e for e in fresh if e.user_id == user])
        online = engine.online_history(local.state(user))  # what the API reads from the trimmed log
        trained = engine.trained_history(user)
        folded = [engine.bundle.items.ids[r] for r, _, _ in online.online]
        # each event counts once: trained (in the user's train part) or folded in (the fresh one, and
        # those in the user's test part, which the served models are not refit on), never both
        assert sorted(folded) == sorted(e.item_id for e in mine if e.item_id not in set(engine.bundle.items.ids[trained.items]))
        assert "14" in folded or user != "3"
        assert sorted(engine.bundle.items.ids[trained.items]) == sorted(
            reference.bundle.items.ids[reference.trained_history(user).items])
        # the answer is the reference bundle's, given the same interactions it has not learned
        ref_rows = reference.item_rows(folded)
        ref_history = reference.trained_history(user).extend(ref_rows, np.full(len(folded), 4.5, np.float32))
        got = engine.recommender.recommend(user, 10, history_override=online.override)
        want = reference.recommender.recommend(user, 10, history_override=ref_history if folded else None)
        assert got.item_ids == want.item_ids and len(got.item_ids) == 10
        np.testing.assert_allclose([i.score for i in got.items], [i.score for i in want.items], rtol=1e-5, atol=1e-6)

    # the trainer keeps what it learned; the online log no longer holds what every retained version
    # learned, only the events still to fold in
    kept, cutoff = learned(tmp_path / "work")
    assert set(kept["event_id"]) == {e.event_id for e in learned_events} and cutoff == engine.bundle.events_cutoff
    # (a learned event in a user's test part stays: the served models are not refit on it)
    still = {e.event_id for e in log.read()}
    assert fresh[0].event_id in still and len(still) < len(learned_events) + 1


@pytest.fixture(scope="module")
def live(client: Client, source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gate")
    paths = {"work": tmp / "work", "bundles": tmp / "bundles", "events": tmp / "events"}
    EventLog(paths["events"]).append(_taste_events(40, time.time(), seed=1))
    decision = retrain_once(paths["work"], paths["bundles"], min_new_events=1, tolerance=0.0,
                            events_dir=paths["events"], source=source, client=client, **FAST)
    assert decision.published, decision.reason
    return paths


def _retrain(paths: dict[str, Path], source: Path, client: Client, **kwargs: object):  # noqa: ANN202
    args = {"min_new_events": 20, "tolerance": 0.0, "keep": 10, **FAST, **kwargs}
    return retrain_once(paths["work"], paths["bundles"], events_dir=paths["events"], source=source, client=client,
                        **args)  # type: ignore[arg-type]


def test_gate_waits_for_enough_new_events(live: dict[str, Path], source: Path, client: Client) -> None:
    before = [b.version for b in list_bundles(live["bundles"])]
    EventLog(live["events"]).append(_taste_events(5, time.time(), seed=2))
    decision = _retrain(live, source, client)
    assert not decision.published
    assert decision.reason == "5 new interactions since the live bundle, fewer than 20"
    assert [b.version for b in list_bundles(live["bundles"])] == before


def test_gate_scores_both_bundles_on_the_same_newest_events(live: dict[str, Path], source: Path, client: Client) -> None:
    EventLog(live["events"]).append(_taste_events(45, time.time(), seed=3))
    old = load(live["bundles"])
    decision = _retrain(live, source, client, tolerance=1.0)  # any candidate passes
    assert decision.published, decision.reason
    assert decision.figures["held_out_events"] == 10  # the newest 20% of the 50 new events
    assert decision.figures["users"] >= 1
    assert 0 <= decision.figures["live"] <= 1 and 0 <= decision.figures["candidate"] <= 1
    new = load(live["bundles"])
    assert new.version != old.version == list_bundles(live["bundles"])[-2].version
    # neither bundle trained on the held-out events: the candidate's cutoff stops before them
    kept, _ = learned(live["work"])
    newest = kept.sort_values("accepted_at")["accepted_at"].to_numpy()[-10:]
    assert old.events_cutoff < new.events_cutoff < newest.min()
    assert "held-out NDCG@10 on 10 newest events" in decision.reason


def test_gate_refuses_a_worse_candidate_and_removes_it(live: dict[str, Path], source: Path, client: Client) -> None:
    EventLog(live["events"]).append(_taste_events(30, time.time(), seed=4))
    before = [b.version for b in list_bundles(live["bundles"])]
    latest = latest_version(live["bundles"])
    # a negative tolerance asks the candidate to beat the live bundle by more than NDCG can move
    decision = _retrain(live, source, client, tolerance=-1.0)
    assert not decision.published and decision.reason.startswith("candidate worse than live")
    assert decision.figures["users"] >= 1
    assert latest_version(live["bundles"]) == latest
    assert [b.version for b in list_bundles(live["bundles"])] == before


def test_a_deletion_retrains_and_publishes_regardless(live: dict[str, Path], source: Path, client: Client) -> None:
    log = EventLog(live["events"])
    log.purge_user("7")
    log.record_deletion(Deletion(user_key(log.salt, "7"), time.time()))
    decision = _retrain(live, source, client, min_new_events=10_000, tolerance=-1.0)
    assert decision.published, decision.reason
    assert decision.reason.startswith("published because 1 user(s) deleted since the live bundle was trained")
    assert "7" not in load(live["bundles"]).users


def test_retention_keeps_the_newest_versions(live: dict[str, Path], source: Path, client: Client) -> None:
    EventLog(live["events"]).append(_taste_events(30, time.time(), seed=5))
    decision = _retrain(live, source, client, tolerance=1.0, keep=2)
    assert decision.published
    versions = list_bundles(live["bundles"])
    assert len(versions) == 2 and versions[-1].is_latest


def test_holdout_split_is_by_time() -> None:
    from cluster.event_intake import Intake

    events = pd.DataFrame({"user_id": ["1"] * 5, "item_id": list("abcde"), "value": [1.0] * 5,
                           "timestamp": [0] * 5, "accepted_at": [1.0, 2.0, 3.0, 3.0, 4.0], "event_id": list("vwxyz")})
    intake = Intake(events, cutoff=10.0, read_at=70.0, new=5, deletions={})
    start, held = split_holdout(intake, after=0.0, share=0.2)
    assert start == 3.0 and held["item_id"].tolist() == ["e"]
    start, held = split_holdout(intake, after=0.0, share=0.5)  # 3 held out, but 3.0 is shared: by time
    assert start == 2.0 and held["item_id"].tolist() == ["c", "d", "e"]
    start, held = split_holdout(intake, after=3.0, share=0.5)
    assert start == 3.0 and held["item_id"].tolist() == ["e"]
