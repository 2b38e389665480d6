"""Malformed GraphQL input, fuzzed with hypothesis, through the ASGI app with its lifespan running.

What may come back: HTTP 200 with data and/or errors, or a 4xx with a clear reason; never a 5xx,
never the masked "Unexpected error." (an exception nobody expected). Every error raised while
resolving a field carries a code (BAD_USER_INPUT, ...); errors without a path are GraphQL's own
(syntax, validation, variable coercion), whose messages name the offending part.

What is lost: nothing. Every interaction the API acknowledged during the fuzzing is in the durable
log afterwards (unless its user's data was deleted later), and every logged event is one the
next ingest accepts (a timestamp from 1970 on, a positive finite value).
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.tiny import publish_bundle
from etl.events_log import EventLog, read_accepted_events
from graphql_api.app import create_app
from graphql_api.schema import MASKED_MESSAGE
from graphql_api.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")]

CODES = {"BAD_USER_INPUT", "FORBIDDEN", "SERVICE_UNAVAILABLE", "NOT_READY"}
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

# Every root field, every argument a variable, so that fuzzed variables reach coercion and resolvers.
OPERATIONS: dict[str, tuple[str, dict[str, str]]] = {
    "recommendations": (
        "query Q($u: ID!, $first: Int!, $variant: String, $w: BlendWeightsInput, $f: ItemFilterInput, $seen: Boolean!)"
        " { recommendations(userId: $u, first: $first, variant: $variant, weights: $w, filter: $f, excludeSeen: $seen)"
        " { variant userKnown onlineInteractions items { rank score contributions { signal value } item { id } } } }",
        {"u": "id", "first": "int", "variant": "str?", "w": "weights?", "f": "filter?", "seen": "bool"},
    ),
    "explained": (
        "query Q($u: ID!, $first: Int!) { recommendations(userId: $u, first: $first) { items { item { id } "
        "explanation { score sentence mainSignal drivers { similarity } graphPath { kind id } } } } }",
        {"u": "id", "first": "int"},
    ),
    "similarItems": (
        "query Q($i: ID!, $first: Int!, $s: SimilaritySignal!, $f: ItemFilterInput)"
        " { similarItems(itemId: $i, first: $first, signal: $s, filter: $f) { __typename"
        " ... on SimilarItems { items { rank score item { id } } } ... on ItemNotFound { message } } }",
        {"i": "id", "first": "int", "s": "signal", "f": "filter?"},
    ),
    "explain": (
        "query Q($u: ID!, $i: ID!, $variant: String, $w: BlendWeightsInput)"
        " { explain(userId: $u, itemId: $i, variant: $variant, weights: $w) { __typename"
        " ... on Explanation { score sentence shares { signal value } } ... on ItemNotFound { message } } }",
        {"u": "id", "i": "id", "variant": "str?", "w": "weights?"},
    ),
    "items": (
        "query Q($i: ID!, $ids: [ID!]!, $t: String!, $first: Int!)"
        " { item(id: $i) { __typename } items(ids: $ids) { id } searchItems(title: $t, first: $first) { id } }",
        {"i": "id", "ids": "ids", "t": "str", "first": "int"},
    ),
    "user": (
        "query Q($u: ID!, $first: Int!) { user(id: $u) { known trainedInteractions onlineInteractions deletedAt"
        " recentHistory(first: $first) { value timestamp source item { id } } } variants { name } model { version } }",
        {"u": "id", "first": "int"},
    ),
    "recordInteraction": (
        "mutation M($u: ID!, $i: ID!, $v: Float!, $t: DateTime) { recordInteraction(userId: $u, itemId: $i, value: $v,"
        " timestamp: $t) { __typename ... on InteractionRecorded { eventId userId timestamp } } }",
        {"u": "id", "i": "id", "v": "float", "t": "datetime?"},
    ),
    "recordInteractions": (
        "mutation M($b: [InteractionInput!]!) { recordInteractions(batch: $b) { accepted eventIds"
        " rejected { index reason } } }",
        {"b": "batch"},
    ),
    "deleteUserData": (
        "mutation M($u: ID!) { deleteUserData(userId: $u) { userId eventsRemoved } }",
        {"u": "id"},
    ),
}

USERS = [str(u) for u in range(1, 61)]
ITEMS = [str(i) for i in range(1, 43)]


# -- strategies ------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)
ids = st.one_of(st.sampled_from(USERS + ITEMS), st.text(max_size=300), st.integers(-5, 10**12).map(str))
ints = st.one_of(st.integers(-3, 120), st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 100, 101]))
floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from([0.0, -0.0, 1e-320, 5e-324, 1e6, 1e6 + 1, 3.5e38, 1e308]))
weights = st.dictionaries(st.sampled_from(["collaborative", "content", "graph", "popularity", "spectral", "sequential"]),
                          st.one_of(st.none(), floats), max_size=5)
filters = st.fixed_dictionaries({}, optional={
    "genres": st.lists(st.one_of(st.sampled_from(["Action", "comedy", "DRAMA", ""]), st.text(max_size=10)), max_size=4),
    "yearMin": ints, "yearMax": ints, "minMeanRating": floats, "minPopularity": ints,
})
datetimes = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())).map(lambda d: d.isoformat()),
    st.sampled_from(["1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00",
                     "0001-01-01T00:00:00+14:00", "2024-02-30T00:00:00", "yesterday", "", "2024-01-01"]),
)
KINDS: dict[str, st.SearchStrategy[Any]] = {
    "id": ids,
    "ids": st.lists(ids, max_size=6),
    "int": ints,
    "float": floats,
    "bool": st.booleans(),
    "str": st.text(max_size=40),
    "signal": st.sampled_from(["FUSED", "COLLABORATIVE", "CONTENT", "GRAPH"]),
    "weights": weights,
    "filter": filters,
    "datetime": datetimes,
    "batch": st.lists(st.fixed_dictionaries(
        {"userId": ids, "itemId": ids}, optional={"value": floats, "timestamp": datetimes}), max_size=5),
}


def typed_variables(kinds: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """Variables of about the declared types (optional ones sometimes absent or null)."""
    required = {k: KINDS[v] for k, v in kinds.items() if not v.endswith("?")}
    optional = {k: st.one_of(st.none(), KINDS[v[:-1]]) for k, v in kinds.items() if v.endswith("?")}
    return st.fixed_dictionaries(required, optional=optional)


def mangled_variables(kinds: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    """Variables of any JSON type at all, some missing, some extra."""
    return st.dictionaries(st.sampled_from([*kinds, "extra"]), json_values, max_size=len(kinds) + 1)


# -- the app -----------------------------------------------------------------------------------------

class Recorder:
    """Acknowledged events and deletions, in the order the API answered them."""

    def __init__(self) -> None:
        self.acked: list[tuple[int, str, str]] = []  # (seq, user, event id)
        self.deleted: dict[str, int] = {}
        self.seq = 0

    def note(self, body: dict[str, Any], variables: dict[str, Any]) -> None:
        data = body.get("data") or {}
        self.seq += 1
        one = data.get("recordInteraction")
        if one and one.get("__typename") == "InteractionRecorded":
            self.acked.append((self.seq, str(one["userId"]), str(one["eventId"])))
        many = data.get("recordInteractions")
        if many:
            batch = variables["b"]
            rejected = {r["index"] for r in many["rejected"]}
            users = [str(e["userId"]) for k, e in enumerate(batch) if k not in rejected]
            assert many["accepted"] == len(many["eventIds"]) == len(users), (many, batch)
            self.acked += [(self.seq, u, e) for u, e in zip(users, many["eventIds"], strict=True)]
        gone = data.get("deleteUserData")
        if gone:
            self.deleted[str(gone["userId"])] = self.seq


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, tiny_dataset, tiny_models) -> Iterator[tuple[Any, Path, Recorder]]:
    from starlette.testclient import TestClient

    root = tmp_path_factory.mktemp("fuzz") / "bundles"
    publish_bundle(root, tiny_dataset, tiny_models, version="v1")
    events = root.parent / "events"
    app = create_app(Settings(bundle_root=root, events_dir=events, access_log=False, log_level="CRITICAL", dev_mode=True))
    with TestClient(app, raise_server_exceptions=True) as client:  # runs the lifespan
        yield client, events, Recorder()


def check_answer(response: Any, where: str) -> dict[str, Any] | None:
    """The contract on any answer; the parsed body when it is a GraphQL result."""
    assert response.status_code < 500, f"{where}: HTTP {response.status_code}: {response.text[:500]}"
    if response.status_code != 200:
        assert response.text.strip(), f"{where}: HTTP {response.status_code} without a reason"
        return None
    body = response.json()
    assert isinstance(body, dict) and ("data" in body or "errors" in body), f"{where}: {body}"
    for err in body.get("errors") or []:
        message = err.get("message")
        assert isinstance(message, str) and message.strip(), f"{where}: error without a message: {err}"
        assert message != MASKED_MESSAGE, f"{where}: an unexpected exception was masked: {body}"
        if err.get("path"):  # raised by a resolver: must be one of the API's typed errors
            code = (err.get("extensions") or {}).get("code")
            assert code in CODES, f"{where}: resolver error without a known code: {err}"
    return body


def post(client: Any, recorder: Recorder, op: str, variables: Any) -> None:
    query = OPERATIONS[op][0]
    response = client.post("/graphql", content=json.dumps({"query": query, "variables": variables}, allow_nan=True),
                           headers={"content-type": "application/json"})
    body = check_answer(response, f"{op} {variables!r}"[:600])
    if body is not None and isinstance(variables, dict):
        recorder.note(body, variables)


# -- the fuzz tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", list(OPERATIONS))
@EXAMPLES
@given(data=st.data())
def test_typed_variables_never_give_an_unexpected_error(api, op: str, data: st.DataObject) -> None:
    client, _, recorder = api
    post(client, recorder, op, data.draw(typed_variables(OPERATIONS[op][1]), label="variables"))


@pytest.mark.parametrize("op", list(OPERATIONS))
@settings(EXAMPLES, max_examples=30)
@given(data=st.data())
def test_variables_of_any_shape_are_refused_clearly(api, op: str, data: st.DataObject) -> None:
    client, _, recorder = api
    post(client, recorder, op, data.draw(mangled_variables(OPERATIONS[op][1]), label="variables"))


GRAPHQL_CHARS = string.ascii_letters + string.digits + '{}()[]:$!@"., =#\\\n.-_'


@EXAMPLES
@given(doc=st.one_of(
    st.text(alphabet=GRAPHQL_CHARS, max_size=200),
    st.tuples(st.sampled_from([q for q, _ in OPERATIONS.values()]), st.integers(0, 400), st.integers(0, 30),
              st.text(alphabet=GRAPHQL_CHARS, max_size=6))
    .map(lambda t: t[0][: t[1]] + t[3] + t[0][t[1] + t[2]:]),
))
def test_mangled_documents_are_refused_clearly(api, doc: str) -> None:
    client, _, recorder = api
    variables = {"u": "3", "i": "2", "first": 5}
    body = check_answer(client.post("/graphql", json={"query": doc, "variables": variables}), repr(doc))
    if body is not None:
        recorder.note(body, variables)


@EXAMPLES
@given(payload=st.one_of(
    st.text(max_size=100).map(str.encode),
    st.binary(max_size=100),
    st.one_of(st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=12), json_values, max_size=4))
    .map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"query": json_values, "variables": json_values, "operationName": json_values})
    .map(lambda v: json.dumps(v).encode()),
), content_type=st.sampled_from(["application/json", "text/plain", "application/graphql", "multipart/form-data", ""]))
def test_malformed_request_bodies_get_a_4xx_with_a_reason(api, payload: bytes, content_type: str) -> None:
    client, _, _ = api
    response = client.post("/graphql", content=payload, headers={"content-type": content_type})
    check_answer(response, f"{content_type} {payload[:200]!r}")


@pytest.mark.parametrize("payload", [b"\x80{}", b"null", b"5", b'"query"', b"true"])
def test_a_body_that_is_not_utf8_json_object_is_a_400(api, payload: bytes) -> None:
    client, _, _ = api
    response = client.post("/graphql", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.text.strip()


def test_nothing_acknowledged_was_lost_and_every_logged_event_is_ingestible(api) -> None:
    """Runs after the fuzz tests above (file order): what they got acknowledged is all in the log."""
    client, events, recorder = api
    if not recorder.acked:
        pytest.skip("run with the fuzz tests above (they record the interactions this checks)")
    expected = {e for seq, user, e in recorder.acked if recorder.deleted.get(user, -1) < seq}
    found = set(read_accepted_events(events)["event_id"])
    lost = expected - found
    users = sorted({user for _, user, e in recorder.acked if e in lost})
    assert not lost, f"{len(lost)} of {len(expected)} acknowledged events are not in the log (users {users!r})"
    for event in EventLog(events).read():
        assert event.timestamp >= 0 and math.isfinite(event.value) and event.value > 0, event
