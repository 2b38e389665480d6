"""Erasure everywhere: after deleteUserData and the retrain it forces, no store holds the user.

Real parts: redis-server (append-only file and snapshots on, snapshot compression off so that a
byte search of its files can see what they hold), the API under uvicorn, the event log, and the
real ingest/tune/index jobs on a Dask LocalCluster. The stores searched: the events folder, the
data root (events.parquet, dataset, runs), every bundle version, Redis's keys and values, and
Redis's files on disk; an experiment runs, so exposures are among them. The source data is the operator's input and is not searched: deleted users'
rows in it are left out of every training run by their salted hash.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis
from distributed import Client

from bench.processes import RedisServer, start_uvicorn
from cluster.retrain import retrain_once
from hybrid.bundle import list_bundles, load
from hybrid.experiments import Experiment, create_experiment
from tests.test_cluster_topology import write_movielens_layout

pytestmark = pytest.mark.slow
USER = "987654321"
OTHER = "3"
FAST = {"signals": ["als", "content", "popularity"], "generations": 2, "settle": 0.0, "min_new_events": 1,
        "tolerance": 1.0}
KEYS = "reader:read,writer:read+write,boss:read+write+admin"
SNAPSHOTS = ("--appendonly", "yes", "--appendfsync", "always", "--save", "1 1", "--rdbcompression", "no")


def traces(needle: str, *roots: Path) -> list[str]:
    """Where ``needle`` occurs: the bytes of every file, and every string value and column name
    of every Parquet file (compressed pages hide bytes)."""
    found: list[str] = []
    raw = needle.encode()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if raw in path.read_bytes():
                found.append(f"{path} (bytes)")
            if path.suffix == ".parquet":
                table = pq.read_table(path)
                if needle in table.column_names:
                    found.append(f"{path} (column name)")
                frame = table.to_pandas()
                for column in frame.columns:
                    values = frame[column].dropna()
                    if values.map(lambda v: needle in str(v)).any():
                        found.append(f"{path} column {column}")
    return found


def redis_traces(url: str, needle: str) -> list[str]:
    """Keys and values of a live Redis that mention ``needle``."""
    r = redis.Redis.from_url(url)
    found = []
    raw = needle.encode()
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        if kind == "string":
            values = [r.get(key) or b""]
        elif kind == "list":
            values = r.lrange(key, 0, -1)
        elif kind == "hash":
            values = [b for kv in r.hgetall(key).items() for b in kv]
        elif kind == "set":
            values = list(r.smembers(key))
        elif kind == "stream":
            values = [b for _, fields in r.xrange(key) for kv in fields.items() for b in kv]
        else:
            values = []
        if raw in key or any(raw in v for v in values):
            found.append(f"redis key {key!r} ({kind})")
    r.close()
    return found


def _gql(api_url: str, key: str, query: str) -> dict:
    answer = httpx.post(f"{api_url}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {key}"},
                        timeout=60).json()
    assert "errors" not in answer, answer
    return answer["data"]


def _record(api_url: str, user: str, item: str) -> None:
    data = _gql(api_url, "writer", f'mutation {{ recordInteraction(userId: "{user}", itemId: "{item}", value: 4.5) '
                                   "{ __typename ... on InteractionRecorded { eventId } } }")
    assert data["recordInteraction"]["__typename"] == "InteractionRecorded", data


def test_nothing_of_a_deleted_user_is_left_anywhere(client: Client, tmp_path: Path) -> None:
    source = write_movielens_layout(tmp_path / "source")
    ratings = pd.read_csv(source / "ratings.csv")
    mine = pd.DataFrame({"userId": [int(USER)] * 6, "movieId": [1, 3, 5, 7, 9, 11], "rating": [4.0] * 6,
                         "timestamp": range(1_010_000, 1_010_006)})  # early: in the training split
    pd.concat([ratings, mine]).to_csv(source / "ratings.csv", index=False)
    work, bundles, events = tmp_path / "work", tmp_path / "bundles", tmp_path / "events"
    server = RedisServer(tmp_path / "redis", persistence=SNAPSHOTS).start()
    run = {"source": source, "client": client, "events_dir": events, "redis_url": server.url, "keep": 5, **FAST}
    api = None
    try:
        assert retrain_once(work, bundles, **run).published  # v1: the user's source rows
        assert USER in load(bundles).users
        api = start_uvicorn({"HYBRIDREC_BUNDLE_ROOT": str(bundles), "HYBRIDREC_EVENTS_DIR": str(events),
                             "HYBRIDREC_REDIS_URL": server.url, "HYBRIDREC_API_KEYS": KEYS}, tmp_path / "api.log")
        # an experiment runs, so the user's answers are logged as exposures too
        create_experiment(bundles, Experiment("erase-test", {"tuned": 0.5, "als": 0.5}))
        deadline = time.monotonic() + 60
        query = f'{{ recommendations(userId: "{USER}", first: 5) {{ exposureId items {{ item {{ id }} }} }} }}'
        while _gql(api.url, "reader", query)["recommendations"]["exposureId"] is None:  # picked up by the poll
            assert time.monotonic() < deadline, "the API did not pick up the experiment"
            time.sleep(0.5)
        for item in ("13", "15", "17"):
            _record(api.url, USER, item)
        _record(api.url, OTHER, "2")
        _gql(api.url, "reader", query)
        time.sleep(1.2)  # a snapshot (save 1 1) now holds the user's events too
        assert retrain_once(work, bundles, **run).published  # v2: and the user's API events
        assert len(list_bundles(bundles)) == 2

        deleted = _gql(api.url, "boss", f'mutation {{ deleteUserData(userId: "{USER}") {{ eventsRemoved '
                                        'exposuresRemoved } }')
        assert deleted["deleteUserData"]["eventsRemoved"] == 3
        assert deleted["deleteUserData"]["exposuresRemoved"] >= 1
        decision = retrain_once(work, bundles, **run)  # forced by the deletion
        assert decision.published and "deleted since the live bundle" in decision.reason

        stores = [events, work, bundles, server.folder]
        assert traces(USER, *stores) == []
        assert redis_traces(server.url, USER) == []
        assert [b.version for b in list_bundles(bundles)] == [decision.bundle.name]  # both rollback targets held the user
        assert OTHER in load(bundles).users  # and nobody else was lost

        # the same id later is a new user: trained on what it did after the deletion alone
        for item in ("21", "23", "25", "27", "29", "31"):
            _record(api.url, USER, item)
        _record(api.url, OTHER, "4")  # the newest: held out by the next run's comparison
        assert retrain_once(work, bundles, **run).published
        bundle = load(bundles)
        history = bundle.history[bundle.users.row(USER)].indices
        # the older part of the new history (the newest 20% is the user's test part)
        assert [bundle.items.ids[i] for i in history] == ["21", "23", "25", "27"]
    finally:
        if api is not None:
            api.stop()
        server.stop()
