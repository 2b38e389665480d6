"""Hostile documents: priced before validation and execution (graphql_api/cost.py) and refused with
a typed error, against a real ``hybridrec serve`` (uvicorn) on loopback; rate limits in cost points
per API key and per client address; the deadline; hidden field suggestions. Then the arithmetic
of graphql_api.cost on its own.

Before the cost analysis, a chain of 20 fragments that each spread the next twice held a worker for
3 s and one of 30 for hours; these tests assert the typed refusals (a generous timeout catches a
regression) and leave the figures to bench/hostile.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import parse

from bench.processes import Uvicorn, start_uvicorn
from bench.tiny import publish_bundle
from graphql_api.cost import CAP, EXPANDED_NODE, FIELD_NODE, OBJECT, OPERATION, WEIGHTS, DocumentCost
from graphql_api.schema import schema
from graphql_api.settings import Limits
from tests.api_helpers import running

pytest_plugins = ["tests.api_helpers"]

KEY = "cost-key-0000000000001"
OTHER = "cost-key-0000000000002"
EXPLAINED = ("{ items { score item { id title genres } explanation { sentence mainSignal "
             "contributions { signal value } drivers { similarity item { id title } } } } }")
RECS = 'query($u: ID!) { recommendations(userId: $u, first: 5) { variant items { score item { id title } } } }'


def chain(n: int, spreads: int = 2) -> str:
    """``query{...F0}`` where each fragment spreads the next ``spreads`` times: 2^n fields written out."""
    body = " ".join(f"fragment F{i} on Query{{{' '.join([f'...F{i + 1}'] * spreads)}}}" for i in range(n))
    return f"query{{...F0}} {body} fragment F{n} on Query{{__typename}}"


def repeated(n: int) -> str:
    return "{" + " ".join("model { version }" for _ in range(n)) + "}"


def aliased_recommendations(n: int, first: int = 100) -> str:
    return "{" + " ".join(f'a{i}: recommendations(userId: "3", first: {first}) {EXPLAINED}' for i in range(n)) + "}"


def graphql_schema() -> Any:
    return schema._schema


# -- a real server ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, tiny_dataset, tiny_models) -> Path:
    path = tmp_path_factory.mktemp("cost") / "bundles"
    publish_bundle(path, tiny_dataset, tiny_models, version="v1")
    return path


def _env(root: Path, work: Path, **extra: str) -> dict[str, str]:
    return {"HYBRIDREC_BUNDLE_ROOT": str(root), "HYBRIDREC_EVENTS_DIR": str(work / "events"),
            "HYBRIDREC_API_KEYS": f"{KEY},{OTHER}", **extra}


@pytest.fixture(scope="module")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uvicorn]:
    """Default limits, keys configured (not development mode), rate limits off."""
    work = tmp_path_factory.mktemp("cost-server")
    server = start_uvicorn(_env(root, work), work / "uvicorn.log")
    yield server
    server.stop()


def post(server: Uvicorn, query: str, variables: dict[str, Any] | None = None, *, key: str = KEY,
         client: httpx.Client | None = None) -> httpx.Response:
    body = {"query": query, "variables": variables or {}}
    if client is not None:
        return client.post("/graphql", json=body, headers={"x-api-key": key})
    return httpx.post(f"{server.url}/graphql", json=body, headers={"x-api-key": key}, timeout=60)


def refusal(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] is None and len(body["errors"]) == 1, body
    return body["errors"][0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fragment_chain_is_refused_while_health_answers(server: Uvicorn) -> None:
    """n=30 stands for 2^30 fields: refused as too complex (the analysis writes each fragment out
    once), and /health answers all along from the same worker."""
    refusals: list[dict[str, Any]] = []
    failures: list[str] = []

    def attack() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for _ in range(10):
                try:
                    refusals.append(refusal(post(server, chain(30), client=http)))
                except (AssertionError, httpx.HTTPError) as err:
                    failures.append(repr(err)[:300])

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for t in threads:
        t.start()
    health = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while any(t.is_alive() for t in threads):
            health.append(http.get("/health").status_code)
    for t in threads:
        t.join()
    assert failures == []
    assert len(refusals) == 40 and health and set(health) == {200}
    err = refusals[0]
    assert err["extensions"]["code"] == "QUERY_TOO_COMPLEX" and err["extensions"]["limit"] == "max_cost"
    assert err["extensions"]["max"] == 5000 and err["extensions"]["value"] > 2**30
    assert "the limit is 5000 (max_cost)" in err["message"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_repeated_fields_are_refused(server: Uvicorn) -> None:
    """`model { version }` 490 times (10 KB) is over the token limit before anything else; 200
    times (within it) is refused by its price: every repeat counted, and every pair of repeats
    that validation would compare."""
    too_long = refusal(post(server, repeated(490)))
    too_dear = refusal(post(server, repeated(200)))
    assert too_long["extensions"] == {"code": "QUERY_TOO_LARGE", "limit": "max_tokens", "max": 1000}
    assert too_dear["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert too_dear["extensions"]["value"] == DocumentCost(parse(repeated(200)), graphql_schema()).requested()
    assert post(server, repeated(2)).json()["data"] == {"model": {"version": "v1"}}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_aliased_lists_with_explanations_are_refused_a_normal_query_passes(server: Uvicorn) -> None:
    """15 aliases of recommendations(first: 100) with explanations (the largest document the old
    limits allowed: 2.7 MB of answer) are refused; one list with explanations and a plain one pass."""
    err = refusal(post(server, aliased_recommendations(15)))
    assert err["extensions"]["code"] == "QUERY_TOO_COMPLEX" and err["extensions"]["value"] > 5000
    one = post(server, 'query($u: ID!) { recommendations(userId: $u, first: 10) ' + EXPLAINED + " }", {"u": "3"})
    plain = post(server, RECS, {"u": "4"})
    for answer in (one, plain):
        assert answer.status_code == 200 and "errors" not in answer.json(), answer.text
    assert len(one.json()["data"]["recommendations"]["items"]) == 10
    assert one.json()["data"]["recommendations"]["items"][0]["explanation"]["sentence"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_extensions_cost_requested_and_actual(server: Uvicorn) -> None:
    """Every answer reports its price: requested from the document (first: 100), actual from the
    answer (the tiny catalogue holds fewer than 100 unseen items); a cached answer carries the
    original run's; a refusal reports its requested price and an actual of 0."""
    q = 'query($u: ID!, $n: Int! = 100) { recommendations(userId: $u, first: $n) { items { item { id } } } }'
    answer = post(server, q, {"u": "5"})
    again = post(server, q, {"u": "5"})
    smaller = post(server, q, {"u": "5", "n": 2})
    missing = post(server, '{ similarItems(itemId: "nope", first: 50) { ... on SimilarItems { items { score } } '
                           '... on ItemNotFound { itemId } } }')
    refused = post(server, chain(30))
    cost = answer.json()["extensions"]["cost"]
    n = len(answer.json()["data"]["recommendations"]["items"])
    priced = DocumentCost(parse(q), graphql_schema())
    per_item = OBJECT + OBJECT + OBJECT  # a recommendation, its entry in items, its item
    assert 0 < n < 100
    assert cost["requested"] == priced.requested({"u": "5"}) and cost["limit"] == 5000 and cost["rateLimit"] is None
    assert cost["requested"] - cost["actual"] == (100 - n) * per_item
    assert again.headers["x-cache"] == "hit" and again.json()["extensions"]["cost"] == cost
    assert smaller.json()["extensions"]["cost"]["requested"] == priced.requested({"n": 2})
    assert smaller.json()["extensions"]["cost"]["actual"] == smaller.json()["extensions"]["cost"]["requested"]
    lost = missing.json()["extensions"]["cost"]
    assert missing.json()["data"]["similarItems"] == {"itemId": "nope"}
    assert lost["requested"] - lost["actual"] == 50 * (OBJECT + OBJECT)  # no list: no items, no similar item
    assert refused.json()["extensions"]["cost"]["actual"] == 0
    assert refused.json()["extensions"]["cost"]["requested"] > 5000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_other_shapes_are_refused_with_typed_errors(server: Uvicorn) -> None:
    # the deepest path of this schema is 6 fields (recommendations.items.explanation.drivers.item.id):
    # deeper is refused before validation would name the unknown fields
    deep = "{ model { dataset { source { a { b { c { d } } } } } } }"
    wide = "{ " + " ".join(f'a{i}: item(id: "{i + 1}") {{ __typename }}' for i in range(16)) + " }"
    cycle = "query { ...A } fragment A on Query { model { version } ...B } fragment B on Query { ...A }"
    directives = "{ model { " + " ".join(f"v{i}: version @include(if: true)" for i in range(12)) + " } }"
    codes = {name: refusal(post(server, q))["extensions"] for name, q in
             (("deep", deep), ("wide", wide), ("cycle", cycle))}
    assert codes["deep"]["code"] == "QUERY_TOO_DEEP" and codes["deep"]["max"] == 6
    assert codes["wide"] == {"code": "TOO_MANY_ALIASES", "limit": "max_aliases", "max": 15, "value": 16}
    assert codes["cycle"]["code"] == "FRAGMENT_CYCLE"
    assert "errors" not in post(server, directives).json()  # 12 directives: within 50


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_field_suggestions_are_hidden(server: Uvicorn) -> None:
    typo = refusal(post(server, "{ model { versio } }"))
    mutation = refusal(post(server, 'mutation { deleteUserDat(userId: "3") { eventsRemoved } }'))
    assert typo["message"] == "Cannot query field 'versio' on type 'Model'."
    assert mutation["message"] == "Cannot query field 'deleteUserDat' on type 'Mutation'."


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cost_rate_limit_per_key_and_per_address(root: Path, tmp_path: Path) -> None:
    """RATE_LIMIT and RATE_BURST count cost points: a bucket of three and a half requests' price,
    restored at 1 point/s. A request takes its price from its key's bucket and its address's
    (loopback has many), a cached answer too; refused: 429, Retry-After, RATE_LIMITED, and
    X-RateLimit-* on every answer."""
    q = 'query($u: ID!) { recommendations(userId: $u, first: 30) { items { item { id } } } }'
    price = DocumentCost(parse(q), graphql_schema()).requested()
    burst, fits = price * 7 // 2, 3
    server = start_uvicorn(_env(root, tmp_path, HYBRIDREC_RATE_LIMIT="1", HYBRIDREC_RATE_BURST=str(burst)),
                           tmp_path / "uvicorn.log")

    def client(address: str) -> httpx.Client:
        return httpx.Client(base_url=server.url, timeout=60, transport=httpx.HTTPTransport(local_address=address))

    try:
        with client("127.0.0.2") as a2, client("127.0.0.3") as a3, client("127.0.0.4") as a4, \
                client("127.0.0.5") as a5:
            broken = post(server, "{ model { version ", key=OTHER, client=a5)  # did not parse: OPERATION points
            first = post(server, q, {"u": "3"}, client=a2)
            cached = post(server, q, {"u": "3"}, client=a2)  # the same answer, from the cache: charged all the same
            rest = [post(server, q, {"u": str(10 + k)}, client=a2) for k in range(fits - 2)]
            refused = post(server, q, {"u": "9"}, client=a2)
            same_key_elsewhere = post(server, q, {"u": "9"}, client=a3)
            same_address_other_key = post(server, q, {"u": "9"}, key=OTHER, client=a2)
            both_fresh = post(server, q, {"u": "9"}, key=OTHER, client=a4)
    finally:
        server.stop()
    assert [first.status_code, cached.status_code, *(r.status_code for r in rest)] == [200] * fits
    assert cached.headers["x-cache"] == "hit"
    assert first.headers["x-ratelimit-limit"] == str(burst)
    assert burst - price - 2 <= int(first.headers["x-ratelimit-remaining"]) <= burst - price
    assert int(cached.headers["x-ratelimit-remaining"]) <= int(first.headers["x-ratelimit-remaining"]) - price + 2
    # a cached answer: the original run's price, this request's rate-limit state
    assert cached.json()["extensions"]["cost"]["requested"] == price
    assert cached.json()["extensions"]["cost"]["rateLimit"]["remaining"] == int(cached.headers["x-ratelimit-remaining"])
    assert int(first.headers["x-ratelimit-reset"]) > 1_700_000_000  # a Unix time
    assert first.json()["extensions"]["cost"]["rateLimit"]["limit"] == burst
    for response in (refused, same_key_elsewhere, same_address_other_key):
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) >= 1 and int(response.headers["x-ratelimit-remaining"]) < price
        err = response.json()["errors"][0]
        assert err["extensions"]["code"] == "RATE_LIMITED" and f"costs {price} points" in err["message"]
    assert both_fresh.status_code == 200 and "errors" not in both_fresh.json()
    assert broken.status_code == 200 and broken.json()["errors"][0]["message"].startswith("Syntax Error")
    assert burst - OPERATION - 2 <= int(broken.headers["x-ratelimit-remaining"]) <= burst - OPERATION
    assert broken.json()["extensions"]["cost"]["requested"] == OPERATION


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deadline(root: Path, tmp_path: Path) -> None:
    """Past HYBRIDREC_DEADLINE the answer is a TIMEOUT error (here 1 ms: validating a new document
    of 120 fields takes longer), and the server keeps serving."""
    server = start_uvicorn(_env(root, tmp_path, HYBRIDREC_DEADLINE="0.001"), tmp_path / "uvicorn.log")
    fields = "id title genres year tags popularity meanRating"
    q = "{ " + " ".join(f'i{i}: item(id: "{i + 1}") {{ ... on Item {{ {fields} }} }}' for i in range(15)) + " }"
    try:
        late = refusal(post(server, q))
        health = httpx.get(f"{server.url}/health", timeout=30)
    finally:
        server.stop()
    assert late["extensions"] == {"code": "TIMEOUT", "limit": "deadline", "max": 0.001}
    assert late["message"] == "the request ran past its deadline of 0.001 s"
    assert health.status_code == 200


# -- in process: the suggestion flag ----------------------------------------------------------------------------

@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_suggestions_only_when_allowed_and_introspection_is_on(make_settings) -> None:
    typo = "{ model { versio } }"
    async with running(create_app_with(make_settings, Limits(field_suggestions=True))) as gql:
        shown = (await gql(typo))["errors"][0]["message"]
    async with running(create_app_with(make_settings, Limits(field_suggestions=True, introspection=False))) as gql:
        hidden = (await gql(typo))["errors"][0]["message"]
    assert shown == "Cannot query field 'versio' on type 'Model'. Did you mean 'version'?"
    assert hidden == "Cannot query field 'versio' on type 'Model'."


def create_app_with(make_settings: Any, limits: Limits) -> Any:
    from graphql_api.app import create_app

    return create_app(make_settings(limits=limits, api_keys=frozenset({KEY})))


# -- the arithmetic -----------------------------------------------------------------------------------------------

def priced(query: str, variables: dict[str, Any] | None = None, operation: str | None = None) -> DocumentCost:
    return DocumentCost(parse(query, max_tokens=None), graphql_schema(), operation)


def test_a_plain_query_costs_its_nodes_and_objects() -> None:
    c = priced("{ model { version } }")
    assert (c.depth, c.aliases, c.directives, c.field_nodes, c.pairs) == (2, 0, 0, 2, 0)
    assert c.requested() == OPERATION + 2 * (FIELD_NODE + EXPANDED_NODE) + WEIGHTS["Query.model"].call + OBJECT


def test_first_multiplies_the_list_variables_and_defaults_resolved() -> None:
    q = 'query($n: Int!) { recommendations(userId: "1", first: $n) { items { score } } }'
    c = priced(q)
    base = OPERATION + 3 * (FIELD_NODE + EXPANDED_NODE) + WEIGHTS["Query.recommendations"].call
    per_item = OBJECT + OBJECT  # the recommendation and its entry in items
    assert c.requested({"n": 7}) == base + 7 * per_item
    assert c.requested({"n": 10_000}) == base + 100 * per_item  # the resolver refuses more than 100
    assert c.requested({}) == base + 10 * per_item  # no value: the schema's default (first: Int! = 10)
    schema_default = priced('{ recommendations(userId: "1") { items { score } } }')
    assert schema_default.requested() == base + 10 * per_item  # first: Int! = 10 in the schema
    declared = priced('query($n: Int = 3) { recommendations(userId: "1", first: $n) { items { score } } }')
    assert declared.requested() == base + 3 * per_item
    ids = priced('query($ids: [ID!]!) { items(ids: $ids) { id } }')
    assert ids.requested({"ids": ["1", "2", "3"]}) - ids.requested({"ids": ["1"]}) == 2 * WEIGHTS["Query.items"].element


def test_fragments_count_once_per_spread_and_are_analysed_once() -> None:
    inline = priced('{ a: model { version } b: model { version } }')
    spread = priced('{ a: model { ...M } b: model { ...M } } fragment M on Model { version }')
    assert spread.field_nodes == inline.field_nodes == 4  # executed: as if written out
    assert (spread.written_nodes, inline.written_nodes) == (3, 4)  # parsed and validated: as written
    assert spread.requested() == inline.requested() - FIELD_NODE
    assert priced(chain(3)).field_nodes == 8 and priced(chain(3, spreads=3)).field_nodes == 27
    assert priced(chain(30)).requested() == OPERATION + FIELD_NODE * 1 + EXPANDED_NODE * 2**30  # one written field


@pytest.mark.timeout(60)
def test_a_chain_of_200_fragments_is_analysed_in_linear_time() -> None:
    """2^200 fields written out; the analysis takes 200 steps (the timeout catches an exponential
    walk: the old limiters took 3 s at n=20 and doubled with each step)."""
    c = priced(chain(200))
    assert c.field_nodes == CAP and c.requested() == CAP and c.depth == 1
    wide = priced(chain(2000, spreads=5))
    assert wide.requested() == CAP


def test_repeats_and_their_pairs() -> None:
    c = priced(repeated(490))
    assert c.field_nodes == 980 and c.pairs == 490 * 489 // 2 * (1 + 1)
    assert c.requested() > 200_000


def test_cycles_are_found() -> None:
    assert priced("query { ...A } fragment A on Query { ...B } fragment B on Query { model { version } ...A }").cycle
    assert priced("query { ...A } fragment A on Query { ...A }").cycle == "A"
    assert priced("query { ...A ...B } fragment A on Query { ...B } fragment B on Query { __typename }").cycle is None


def test_depth_aliases_directives_through_fragments() -> None:
    q = ('query @q { ...F ...F } fragment F on Query { m: model @a { v: version @b } '
         'recommendations(userId: "1") { items { explanation { drivers { item { id } } } } } }')
    c = priced(q)
    assert (c.depth, c.aliases, c.directives) == (6, 4, 5)
    assert priced("{ __schema { types { fields { type { ofType { ofType { name } } } } } } }").depth == 0


def test_unused_definitions_and_other_operations_count_for_validation() -> None:
    used = priced("query A { model { version } }", operation="A")
    with_unused = priced("query A { model { version } } query B { " + repeated(50)[1:-1] + " }", operation="A")
    assert with_unused.requested() > used.requested() + 50 * 49 // 2


def test_actual_counts_what_the_answer_holds() -> None:
    q = '{ recommendations(userId: "1", first: 20) { items { score } } searchItems(title: "a", first: 30) { id } }'
    c = priced(q)
    full = {"recommendations": {"items": [{"score": 1.0}] * 20}, "searchItems": [{"id": "1"}] * 30}
    short = {"recommendations": {"items": [{"score": 1.0}] * 4}, "searchItems": [{"id": "1"}] * 5}
    assert c.actual(full) == c.requested()
    found = WEIGHTS["Query.searchItems"].element
    assert c.requested() - c.actual(short) == 16 * (OBJECT + OBJECT) + 25 * found
    # null answers: only their calls
    assert c.actual({"recommendations": None, "searchItems": None}) == c.requested() - 20 * 2 * OBJECT - 30 * found
    assert c.actual(None) == 0


def test_introspection_is_priced_by_what_it_returns() -> None:
    from graphql import get_introspection_query

    c = priced(get_introspection_query(descriptions=True))
    assert OPERATION < c.requested() < 5000 and c.depth == 0
    assert json.dumps(c.requested())  # a plain int
