"""Fault scenarios under load, shared by tests/test_faults.py (a few seconds each) and bench/faults.py
(longer): real redis-server and uvicorn processes on loopback, load from client threads.

Each scenario returns a ``FaultResult``: requests sent, failed (an error from a server that was up:
HTTP != 200, a GraphQL error, a broken connection while nothing was being restarted), unavailable
(connection refused or cut while the API itself was being restarted: never acknowledged, so
nothing to lose), refused (a mutation answered SERVICE_UNAVAILABLE: not acknowledged either), and
interactions acknowledged / found afterwards (in the durable stores and through the API).
What is lost = acknowledged - found; it must be empty.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.processes import RedisServer, Uvicorn, start_uvicorn
from bench.tiny import publish_bundle
from etl.dataset import Dataset
from etl.events_log import read_accepted_events

RECS = ("query($u: ID!) { recommendations(userId: $u, first: 10) { modelVersion onlineInteractions "
        "items { score item { id } } } }")
RECORD = ("mutation($u: ID!, $i: ID!) { recordInteraction(userId: $u, itemId: $i, value: 4) "
          "{ __typename ... on InteractionRecorded { eventId } } }")
ONLINE = "query($u: ID!) { user(id: $u) { onlineInteractions } }"
KNOWN_USERS = [str(u) for u in range(1, 61)]
ITEMS = [str(i) for i in range(1, 41)]


@dataclass
class FaultResult:
    scenario: str
    seconds: float = 0.0
    requests: int = 0
    failed: int = 0
    unavailable: int = 0
    refused: int = 0
    acknowledged: int = 0
    found_after: int = 0
    lost: int = 0
    visible_through_api: bool = False
    """Every user's online interaction count, asked of the API afterwards, covers what was acknowledged."""
    failures: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failures"] = out["failures"][:10]
        return out

    def line(self) -> str:
        return (f"{self.scenario:<28} {self.seconds:6.1f}s  requests {self.requests:6d}  failed {self.failed:3d}  "
                f"unavailable {self.unavailable:4d}  refused {self.refused:4d}  acknowledged {self.acknowledged:5d}  "
                f"found after {self.found_after:5d}  lost {self.lost}")


# -- the load ------------------------------------------------------------------------------------------

class Load:
    """Client threads sending recommendations and recordInteraction mutations, counting outcomes.

    Every thread writes for its own users (``f{thread}u{k}``, unknown to the bundle), so that the
    online count the API reports per user must equal what that user got acknowledged.
    """

    def __init__(self, url: str, threads: int = 4, write_share: float = 0.4, seed: int = 0) -> None:
        self.url = url
        self.threads = threads
        self.write_share = write_share
        self.seed = seed
        self.restarting = threading.Event()  # set while the API itself is down on purpose
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.acked: dict[str, str] = {}  # event id -> user
        self.failures: list[str] = []
        self.versions: list[str] = []
        self._workers: list[threading.Thread] = []

    def users(self) -> list[str]:
        return [f"f{t}u{k}" for t in range(self.threads) for k in range(4)]

    def _fail(self, what: str) -> None:
        with self.lock:
            self.counts["failed"] += 1
            if len(self.failures) < 50:
                self.failures.append(what[:300])

    def _one(self, http: httpx.Client, rng: random.Random, thread: int) -> None:
        write = rng.random() < self.write_share
        user = f"f{thread}u{rng.randrange(4)}"
        if write:
            body = {"query": RECORD, "variables": {"u": user, "i": rng.choice(ITEMS)}}
        else:
            body = {"query": RECS, "variables": {"u": rng.choice([user, rng.choice(KNOWN_USERS)])}}
        restarting = self.restarting.is_set()
        with self.lock:
            self.counts["requests"] += 1
        try:
            response = http.post(f"{self.url}/graphql", json=body)
        except httpx.TransportError as err:
            if restarting or self.restarting.is_set():
                with self.lock:
                    self.counts["unavailable"] += 1
                time.sleep(0.02)
            else:
                self._fail(f"{type(err).__name__}: {err}")
            return
        if response.status_code != 200:
            self._fail(f"HTTP {response.status_code}: {response.text}")
            return
        answer = response.json()
        errors = answer.get("errors")
        if errors:
            codes = {(e.get("extensions") or {}).get("code") for e in errors}
            if write and codes == {"SERVICE_UNAVAILABLE"}:
                with self.lock:
                    self.counts["refused"] += 1
            else:
                self._fail(f"GraphQL errors: {errors}")
            return
        data = answer["data"]
        if write:
            event = data["recordInteraction"]
            if event["__typename"] != "InteractionRecorded":
                self._fail(f"not recorded: {event}")
                return
            with self.lock:
                self.acked[event["eventId"]] = user
        else:
            with self.lock:
                self.versions.append(data["recommendations"]["modelVersion"])

    def _run(self, thread: int) -> None:
        rng = random.Random(self.seed * 1000 + thread)
        with httpx.Client(timeout=10.0) as http:
            while not self.stop.is_set():
                self._one(http, rng, thread)

    def __enter__(self) -> Load:
        self._workers = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(self.threads)]
        for w in self._workers:
            w.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for w in self._workers:
            w.join(timeout=30)

    @contextlib.contextmanager
    def api_restart(self) -> Iterator[None]:
        """Connection errors inside this block count as unavailable, not failed."""
        self.restarting.set()
        try:
            yield
        finally:
            time.sleep(0.2)  # requests sent just before the new server answered
            self.restarting.clear()

    def result(self, scenario: str, seconds: float) -> FaultResult:
        return FaultResult(scenario, round(seconds, 2), self.counts["requests"], self.counts["failed"],
                           self.counts["unavailable"], self.counts["refused"], len(self.acked),
                           failures=list(self.failures))


# -- checks afterwards -------------------------------------------------------------------------------------

def account(result: FaultResult, load: Load, found_ids: set[str], url: str) -> FaultResult:
    """Fill in found / lost and ask the API for every load user's online count."""
    result.found_after = len(set(load.acked) & found_ids)
    result.lost = len(set(load.acked) - found_ids)
    expected = Counter(load.acked.values())
    short = {}
    with httpx.Client(timeout=10.0) as http:
        for user in load.users():
            for _ in range(3):  # more than one worker answers: ask a few times
                body = http.post(f"{url}/graphql", json={"query": ONLINE, "variables": {"u": user}}).json()
                online = body["data"]["user"]["onlineInteractions"]
                if online < expected[user]:
                    short[user] = (online, expected[user])
    result.visible_through_api = not short
    if short:
        result.notes["api_short"] = dict(itertools.islice(short.items(), 10))
    return result


def redis_event_ids(redis_url: str) -> set[str]:
    return set(read_accepted_events(redis_url=redis_url)["event_id"])


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _env(root: Path, events: Path | None, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_RELOAD_INTERVAL": "0.2", "HYBRIDREC_ACCESS_LOG": "false",
           "HYBRIDREC_LOG_LEVEL": "WARNING", **extra}
    if events is not None:
        env["HYBRIDREC_EVENTS_DIR"] = str(events)
    if redis_url is not None:
        env["HYBRIDREC_REDIS_URL"] = redis_url
    return env


def _redis(folder: Path) -> RedisServer:
    folder.mkdir(parents=True, exist_ok=True)
    return RedisServer(folder).start()


def _kill_redis(server: RedisServer) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    server.proc = None


# -- scenarios -----------------------------------------------------------------------------------------------

def redis_killed_under_load(work: Path, root: Path, *, seconds: float = 3.0, down: float = 1.0,
                            local_log: bool = True, workers: int = 2, threads: int = 4) -> FaultResult:
    """Redis SIGKILLed mid-load, restarted (same port, its append-only file) after ``down`` seconds.

    With the local log, every request must succeed (events go to the log while Redis is down and are
    replayed into it after); without it, mutations are refused while Redis is down, queries still
    succeed. Afterwards every acknowledged event must be in Redis itself (what other replicas and
    the trainer read), and the API must count it.
    """
    tag = "redis+log" if local_log else "redis-only"
    name = f"redis_killed[{tag}]"
    work.mkdir(parents=True, exist_ok=True)
    redis = _redis(work / f"redis-{tag}")
    events = work / f"events-{tag}" if local_log else None
    server = start_uvicorn(_env(root, events, redis.url), work / f"{name}.log", workers=workers)
    started = time.monotonic()
    try:
        with Load(server.url, threads=threads) as load:
            time.sleep(seconds / 3)
            _kill_redis(redis)
            killed_at = load.counts["requests"]
            time.sleep(down)
            during = load.counts["requests"] - killed_at
            redis.start()
            time.sleep(seconds * 2 / 3)
        elapsed = time.monotonic() - started
        result = load.result(name, elapsed)
        result.notes["requests_while_redis_down"] = during
        acked = set(load.acked)
        replayed = wait_until(lambda: acked <= redis_event_ids(redis.url), timeout=15.0)
        result.notes["replayed_into_redis"] = replayed
        found = redis_event_ids(redis.url)
        if events is not None:
            result.notes["in_local_log"] = len(acked & set(read_accepted_events(events)["event_id"]))
        return account(result, load, found, server.url)
    finally:
        server.stop()
        redis.stop()
        shutil.rmtree(redis.folder, ignore_errors=True)


def api_restarted_under_load(work: Path, root: Path, *, seconds: float = 3.0, store: str = "log",
                             kill: signal.Signals = signal.SIGKILL, restarts: int = 1,
                             threads: int = 4) -> FaultResult:
    """The API process killed (SIGKILL: a crash; SIGTERM: a graceful stop) while interactions are being
    recorded, then started again on the same events folder / Redis. Every acknowledged event must be
    in the store afterwards and counted by the restarted API."""
    name = f"api_restarted[{store},{kill.name}]"
    work.mkdir(parents=True, exist_ok=True)
    redis = _redis(work / f"redis-api-{store}-{kill.name}") if store == "redis" else None
    events = work / f"events-api-{store}-{kill.name}" if store == "log" else None
    env = _env(root, events, redis.url if redis else None)
    server = start_uvicorn(env, work / f"{name}-0.log", workers=1)
    started = time.monotonic()
    try:
        with Load(server.url, threads=threads) as load:
            for k in range(restarts):
                time.sleep(seconds / (restarts + 1))
                with load.api_restart():
                    server.proc.send_signal(kill)
                    server.proc.wait(timeout=30)
                    server = start_uvicorn(env, work / f"{name}-{k + 1}.log", workers=1)
                    load.url = server.url
            time.sleep(seconds / (restarts + 1))
        result = load.result(name, time.monotonic() - started)
        result.notes["restarts"] = restarts
        found = set(read_accepted_events(events, redis_url=redis.url if redis else None)["event_id"])
        return account(result, load, found, server.url)
    finally:
        server.stop()
        if redis is not None:
            redis.stop()
            shutil.rmtree(redis.folder, ignore_errors=True)


def bundle_published_under_load(work: Path, root: Path, dataset: Dataset, models: Mapping[str, Any], *,
                                seconds: float = 3.0, publishes: int = 2, workers: int = 2,
                                threads: int = 4) -> FaultResult:
    """New bundles published while queries and mutations run: no failed request, every worker ends
    on the newest bundle, and the online events recorded before and during the switch still count."""
    name = "bundle_published"
    work.mkdir(parents=True, exist_ok=True)
    events = work / "events-publish"
    server = start_uvicorn(_env(root, events, None), work / f"{name}.log", workers=workers)
    started = time.monotonic()
    versions = []
    try:
        with Load(server.url, threads=threads) as load:
            for k in range(publishes):
                time.sleep(seconds / (publishes + 1))
                version = f"p{k + 1}-{os.getpid()}-{int(time.time() * 1000)}"
                weights = {"popularity": 1.0, "als": 0.2 * (k + 1), "content": 0.5}
                publish_bundle(root, dataset, models, version=version, weights=weights)
                versions.append(version)
            time.sleep(seconds / (publishes + 1))
            switched = wait_until(lambda: load.versions[-20:] == [versions[-1]] * 20, timeout=20.0)
        result = load.result(name, time.monotonic() - started)
        result.notes.update(published=versions, all_workers_switched=switched,
                            versions_served=dict(Counter(load.versions)))
        found = set(read_accepted_events(events)["event_id"])
        return account(result, load, found, server.url)
    finally:
        server.stop()


def describe(results: list[FaultResult]) -> str:
    return "\n".join(r.line() for r in results)


if __name__ == "__main__":  # pragma: no cover - use bench/faults.py
    sys.exit("run bench/faults.py")
