"""The added-items store (graphql_api.items): validation, idempotence, durability in the events
folder and in a real Redis, ``hybridrec items add``, and the trainer's intake of added items."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import dask
import pandas as pd
import pytest

from bench.tiny import make_tiny_source
from cluster.event_intake import take_events
from cluster.jobs import training_source
from etl.dataset import Dataset
from etl.events_log import Event, EventLog, RedisKeys
from etl.ingest import ingest
from etl.items_log import ITEMS_FILE, CatalogueItem, ItemLog, ordered, read_added_items, read_table
from graphql_api.errors import InvalidItem
from graphql_api.items import MAX_BATCH, catalogue_token, read_items_file, upsert_items, validate_items
from tests.api_helpers import REPO

pytest_plugins = ["tests.api_helpers"]

GOOD = {"id": "new-1", "title": "A New Film", "genres": ["Drama"], "tags": ["slow"], "year": 2024}


# -- validation -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("bad", "field", "says"), [
    ({"title": "x"}, "id", "id is missing"),
    ({"id": "", "title": "x"}, "id", "must not be empty"),
    ({"id": " x", "title": "x"}, "id", "whitespace"),
    ({"id": "x" * 257, "title": "x"}, "id", "at most 256"),
    ({"id": 7, "title": "x"}, "id", "must be a string"),
    ({"id": "x", "title": "  "}, "title", "must not be empty"),
    ({"id": "x", "title": "t" * 257}, "title", "at most 256"),
    ({"id": "x", "title": "a\x00b"}, "title", "control character"),
    ({"id": "x", "title": "t", "genres": "Drama"}, "genres", "list of strings"),
    ({"id": "x", "title": "t", "genres": ["g"] * 21}, "genres", "at most 20"),
    ({"id": "x", "title": "t", "tags": ["t"] * 51}, "tags", "at most 50"),
    ({"id": "x", "title": "t", "tags": ["t" * 65]}, "tags[0]", "at most 64"),
    ({"id": "x", "title": "t", "tags": ["a|b"]}, "tags", "'|'"),
    ({"id": "x", "title": "t", "tags": [""]}, "tags[0]", "must not be empty"),
    ({"id": "x", "title": "t", "year": 1799}, "year", "between 1800 and 2100"),
    ({"id": "x", "title": "t", "year": 2101}, "year", "between 1800 and 2100"),
    ({"id": "x", "title": "t", "year": 1999.5}, "year", "integer"),
    ({"id": "x", "title": "t", "year": True}, "year", "integer"),
])
def test_a_bad_row_names_its_row_and_field(bad: dict, field: str, says: str) -> None:
    with pytest.raises(InvalidItem) as err:
        validate_items([GOOD, bad])
    assert err.value.field == field and err.value.row == 1 and says in str(err.value), str(err.value)
    assert str(err.value).startswith("row 1: ") and err.value.extensions["row"] == "1"


def test_batch_limits_and_canonical_form() -> None:
    with pytest.raises(InvalidItem, match="no items"):
        validate_items([])
    with pytest.raises(InvalidItem, match=f"at most {MAX_BATCH}"):
        validate_items([{**GOOD, "id": f"i{k}"} for k in range(MAX_BATCH + 1)])
    items = validate_items([{**GOOD, "title": " Padded ", "genres": ["Drama", " Drama", "War"]},
                            {"id": "b", "title": "B"}, {**GOOD, "title": "Last wins"}])
    assert [i.id for i in items] == ["b", "new-1"]  # a repeated id keeps its last row
    assert items[1] == CatalogueItem("new-1", "Last wins", ("Drama",), ("slow",), 2024)
    assert items[0] == CatalogueItem("b", "B", (), (), None)


# -- the events folder ---------------------------------------------------------------------------------------

def test_log_upserts_are_idempotent_durable_and_last_write_wins(tmp_path: Path) -> None:
    first = ItemLog(tmp_path).upsert(validate_items([GOOD, {"id": "b", "title": "B"}]), at=10.0)
    assert [(u.changed, u.known) for u in first] == [(True, False), (True, False)]
    size = (tmp_path / ITEMS_FILE).stat().st_size
    again = ItemLog(tmp_path).upsert(validate_items([GOOD]), at=11.0)
    assert [(u.changed, u.known) for u in again] == [(False, True)]
    assert (tmp_path / ITEMS_FILE).stat().st_size == size, "an unchanged item must not be written again"
    ItemLog(tmp_path).upsert(validate_items([{**GOOD, "title": "Renamed", "tags": []}]), at=12.0)
    table = ItemLog(tmp_path).table()  # a fresh reader: what a restarted process sees
    assert table["new-1"] == (12.0, CatalogueItem("new-1", "Renamed", ("Drama",), (), 2024))
    assert read_added_items(tmp_path)["id"].tolist() == ["b", "new-1"]


def test_a_torn_last_line_is_skipped_and_nothing_accepted_is_lost(tmp_path: Path) -> None:
    log = ItemLog(tmp_path)
    log.upsert(validate_items([GOOD]), at=1.0)
    with open(tmp_path / ITEMS_FILE, "ab") as fh:  # a crash in the middle of a write
        fh.write(b'{"at": 2.0, "item": {"id": "torn", "ti')
    assert set(ItemLog(tmp_path).table()) == {"new-1"}
    # the next write after the restart is whole: it is not glued to the torn line
    ItemLog(tmp_path).upsert([CatalogueItem("after", "After")], at=3.0)
    assert set(ItemLog(tmp_path).table()) == {"new-1", "after"}


def test_a_rejected_batch_writes_nothing(tmp_path: Path) -> None:
    log = ItemLog(tmp_path)
    log.upsert(validate_items([GOOD]))
    before = (tmp_path / ITEMS_FILE).read_bytes()
    with pytest.raises(InvalidItem):
        log.upsert(validate_items([{"id": "fine", "title": "Fine"}, {"id": "bad", "title": "x", "year": 1}]))
    assert (tmp_path / ITEMS_FILE).read_bytes() == before


def _write_many(folder: str, worker: int) -> None:
    log = ItemLog(folder)
    for k in range(20):
        log.upsert([CatalogueItem(f"w{worker}-{k}", f"T {k}")])


def test_processes_sharing_a_folder_lose_no_write(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(tmp_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    lines = (tmp_path / ITEMS_FILE).read_text().splitlines()
    assert len(lines) == 60 and all(json.loads(line)["item"]["id"] for line in lines)
    assert len(ItemLog(tmp_path).table()) == 60


def test_token_depends_on_content_not_order() -> None:
    a, b = CatalogueItem("a", "A"), CatalogueItem("b", "B")
    assert catalogue_token([a, b]) == catalogue_token([b, a]) != catalogue_token([a, CatalogueItem("b", "B2")])


# -- Redis -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_redis_upserts_are_idempotent_and_versioned(redis_url: str) -> None:
    import redis

    keys = RedisKeys()
    client = redis.Redis.from_url(redis_url)
    try:
        report = upsert_items(validate_items([GOOD, {"id": "b", "title": "B"}]), redis_url=redis_url)
        assert (report.added, report.updated, report.unchanged, report.version) == (2, 0, 0, "1")
        again = upsert_items(validate_items([GOOD]), redis_url=redis_url)
        assert (again.added, again.unchanged, again.version) == (0, 1, "1"), "the same item again is no new version"
        assert client.get(keys.items_version) == b"1"
        changed = upsert_items(validate_items([{**GOOD, "year": 2025}]), redis_url=redis_url)
        assert (changed.updated, changed.version) == (1, "2")
        assert json.loads(client.hget(keys.items, "new-1"))["year"] == 2025
    finally:
        client.close()
    assert read_table(redis_url=redis_url)["new-1"][1].year == 2025


@pytest.mark.slow
def test_both_places_agree_and_the_newest_write_wins(tmp_path: Path, redis_url: str) -> None:
    upsert_items(validate_items([GOOD]), tmp_path, redis_url=redis_url)
    # a newer write that reached Redis only (another host's replica)
    upsert_items(validate_items([{**GOOD, "title": "From another host"}]), redis_url=redis_url)
    assert read_table(tmp_path, redis_url=redis_url)["new-1"][1].title == "From another host"
    assert read_table(tmp_path)["new-1"][1].title == "A New Film"


@pytest.mark.slow
def test_redis_without_an_append_only_file_is_refused_alone(tmp_path: Path) -> None:
    from bench.processes import RedisServer

    server = RedisServer(tmp_path / "redis", persistence=()).start()
    try:
        with pytest.raises(ValueError, match="append-only"):
            upsert_items(validate_items([GOOD]), redis_url=server.url)
        upsert_items(validate_items([GOOD]), tmp_path / "events", redis_url=server.url)  # the log keeps it
    finally:
        server.stop()


# -- the command line ---------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_cli_adds_items_from_csv_and_parquet(tmp_path: Path) -> None:
    csv = tmp_path / "items.csv"
    csv.write_text("id,title,genres,tags,year\n007,Spy Film,Action|Thriller,gadgets|cars,1999\nb,No Extras,,,\n")
    events = tmp_path / "events"
    done = _cli("items", "add", str(csv), "--events-dir", str(events))
    assert done.returncode == 0, done.stderr
    assert "2 added, 0 updated, 0 unchanged" in done.stdout
    assert read_table(events)["007"][1] == CatalogueItem("007", "Spy Film", ("Action", "Thriller"),
                                                         ("gadgets", "cars"), 1999)
    again = _cli("items", "add", str(csv), "--events-dir", str(events))
    assert "0 added, 0 updated, 2 unchanged" in again.stdout
    parquet = tmp_path / "items.parquet"
    pd.DataFrame({"id": ["b"], "title": ["Now With Extras"], "genres": [["Drama"]], "tags": [[]],
                  "year": pd.array([2001], dtype="Int64")}).to_parquet(parquet)
    updated = _cli("items", "add", str(parquet), "--events-dir", str(events))
    assert updated.returncode == 0 and "0 added, 1 updated" in updated.stdout, updated.stderr
    assert read_table(events)["b"][1] == CatalogueItem("b", "Now With Extras", ("Drama",), (), 2001)
    numbered = tmp_path / "numbered.parquet"
    pd.DataFrame({"id": [9001], "title": ["Integer Id"]}).to_parquet(numbered)
    assert _cli("items", "add", str(numbered), "--events-dir", str(events)).returncode == 0
    assert read_table(events)["9001"][1].title == "Integer Id"


@pytest.mark.parametrize(("text", "says"), [
    ("id,title,year\nok,Fine,2000\nbad,Bad,3000\n", "items.csv line 3: year must be between 1800 and 2100, got 3000"),
    ("id,title,year\nok,Fine,soon\n", "line 2: year must be an integer"),
    ("id,name\nx,y\n", "missing column(s) ['title']"),
    ("id,title,colour\nx,y,red\n", "unknown column(s) ['colour']"),
    ("id,title\n", "no items"),
])
def test_cli_refuses_bad_files_with_one_line(tmp_path: Path, text: str, says: str) -> None:
    csv = tmp_path / "items.csv"
    csv.write_text(text)
    events = tmp_path / "events"
    done = _cli("items", "add", str(csv), "--events-dir", str(events))
    assert done.returncode != 0 and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not read_table(events), "a bad file must add nothing"


def test_cli_needs_a_store(tmp_path: Path) -> None:
    csv = tmp_path / "items.csv"
    csv.write_text("id,title\nx,y\n")
    done = _cli("items", "add", str(csv))
    assert done.returncode != 0 and "--events-dir or --redis-url" in done.stderr


def test_read_items_file_refuses_other_formats(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="expected a .csv or .parquet"):
        read_items_file(path)


# -- the next training run -----------------------------------------------------------------------------------------

def test_training_folds_added_items_and_their_events_into_the_dataset(tmp_path: Path) -> None:
    events = tmp_path / "events"
    upsert_items(validate_items([
        {"id": "fresh-1", "title": "Fresh", "genres": ["Drama"], "tags": ["new"], "year": 2026},
        {"id": "3", "title": "Movie 3, renamed", "genres": ["Comedy"], "year": 1992},  # a source item
    ]), events)
    EventLog(events).append([Event("1", "fresh-1", 4.0, 2_000_000, accepted_at=100.0),
                             Event("2", "fresh-1", 5.0, 2_000_001, accepted_at=101.0)])
    intake = take_events(tmp_path / "data", events, None, settle=0.0)
    assert intake.items is not None and sorted(intake.items["id"]) == ["3", "fresh-1"]
    source = training_source(make_tiny_source(), intake)
    assert source.numeric_ids is False, "a non-numeric added id makes the dataset take ids as text"
    with dask.config.set(scheduler="sync"):
        ingest(source, tmp_path / "dataset")
    ds = Dataset.open(tmp_path / "dataset")
    table = ds.items_table.set_index("item_id")
    assert table.loc["fresh-1", "title"] == "Fresh" and list(table.loc["fresh-1", "genres"]) == ["Drama"]
    assert table.loc["fresh-1", "count"] == 2, "the added item's events are learned with it"
    assert table.loc["3", "title"] == "Movie 3, renamed" and int(table.loc["3", "year"]) == 1992
    assert len(ds.items) == 43  # the tiny catalogue's 42 and the new one
    assert ds.manifest["extra"]["added_items"] == 2


def test_numeric_added_ids_keep_a_numeric_source_numeric(tmp_path: Path) -> None:
    events = tmp_path / "events"
    upsert_items(validate_items([{"id": "500", "title": "Five Hundred"}]), events)
    intake = take_events(tmp_path / "data", events, None, settle=0.0)
    source = training_source(make_tiny_source(), intake)
    assert source.numeric_ids is True and "500" in set(source.items["item_id"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_next_retrain_knows_added_items_natively(tmp_path: Path, client) -> None:
    """Add an item and interactions with it, retrain: the published bundle holds the item as a
    trained row with its metadata and events, and overlaying the additions on it adds no row."""
    from cluster.retrain import retrain_once
    from graphql_api.engine import Engine
    from tests.test_cluster_topology import write_movielens_layout

    source = write_movielens_layout(tmp_path / "raw")
    events = tmp_path / "events"
    upsert_items(validate_items([{"id": "9001", "title": "Brand New (2026)", "genres": ["Comedy"],
                                  "tags": ["funny"], "year": 2026}]), events)
    EventLog(events).append([Event(str(u), "9001", 4.5, 3_000_000 + u, accepted_at=1000.0 + u) for u in (2, 4, 6, 8)])
    decision = retrain_once(tmp_path / "work", tmp_path / "bundles", min_new_events=1, tolerance=0.0,
                            events_dir=events, source=source, client=client,
                            signals=["als", "content", "popularity"], generations=2, settle=0.0)
    assert decision.published, decision.reason
    engine = Engine.load(tmp_path / "bundles")
    row = int(engine.item_rows(["9001"])[0])
    assert row >= 0 and engine.record(row).title == "Brand New (2026)" and engine.record(row).popularity == 4
    overlaid = engine.with_items(ordered(read_table(events)))
    assert len(overlaid.bundle.items) == len(engine.bundle.items), "an id the bundle knows is not added again"
    assert overlaid.record(row).title == "Brand New (2026)"
