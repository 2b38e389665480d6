"""Expected failures are part of the schema or clear validation messages; unexpected ones are masked."""

from __future__ import annotations

import json
import logging

import pytest

from graphql_api.app import create_app
from hybrid.bundle import load
from hybrid.recommender import HybridRecommender
from tests.api_helpers import running

pytest_plugins = ["tests.api_helpers"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

RECS = 'query($u: ID!, $first: Int! = 5, $v: String, $w: BlendWeightsInput) ' \
       '{ recommendations(userId: $u, first: $first, variant: $v, weights: $w) { variant items { item { id } } } }'


def only_error(body: dict) -> dict:
    assert body["data"] is None, body
    assert len(body["errors"]) == 1, body
    return body["errors"][0]


# -- unknown ids --------------------------------------------------------------------------------------

async def test_unknown_item_is_a_typed_error_everywhere(make_settings) -> None:
    q = '''{
      item(id: "nope") { __typename ... on ItemNotFound { itemId message } }
      similarItems(itemId: "nope") { __typename ... on ItemNotFound { itemId message } }
      explain(userId: "3", itemId: "nope") { __typename ... on ItemNotFound { itemId } }
    }'''
    m = 'mutation { recordInteraction(userId: "3", itemId: "nope") { __typename ... on ItemNotFound { itemId message } } }'
    async with running(create_app(make_settings())) as gql:
        d = await gql.data(q)
        rec = (await gql.data(m))["recordInteraction"]
        batch = (await gql.data('mutation { recordInteractions(batch: [{userId: "3", itemId: "nope"}, '
                                '{userId: "3", itemId: "4"}]) { accepted rejected { index itemId reason } } }'))
    for key in ("item", "similarItems", "explain"):
        assert d[key]["__typename"] == "ItemNotFound" and d[key]["itemId"] == "nope"
    assert "unknown item id 'nope'" in d["item"]["message"]
    assert rec["__typename"] == "ItemNotFound"
    assert batch["recordInteractions"]["accepted"] == 1
    assert batch["recordInteractions"]["rejected"] == [
        {"index": 0, "itemId": "nope", "reason": "unknown item id 'nope' in bundle v1"}]


async def test_unknown_user_gets_a_cold_start_answer_that_says_so(make_settings, api_root) -> None:
    q = '{ recommendations(userId: "stranger", first: 5) { userKnown coldStart coldStartReason userSource ' \
        'variant items { item { id popularity } } } user(id: "stranger") { known trainedInteractions recentHistory { value } } }'
    async with running(create_app(make_settings())) as gql:
        d = await gql.data(q)
    recs = d["recommendations"]
    assert recs["userKnown"] is False and recs["coldStart"] is True and recs["userSource"] == "NO_HISTORY"
    assert "no interactions" in recs["coldStartReason"]
    expected = HybridRecommender(load(api_root)).recommend("stranger", 5)
    assert expected.cold_start and [i["item"]["id"] for i in recs["items"]] == expected.item_ids
    assert d["user"] == {"known": False, "trainedInteractions": 0, "recentHistory": []}


# -- validation messages -----------------------------------------------------------------------------------

@pytest.mark.parametrize("first", [0, -3, 101])
async def test_first_outside_1_to_100(make_settings, first: int) -> None:
    async with running(create_app(make_settings())) as gql:
        err = only_error(await gql(RECS, {"u": "3", "first": first}))
    assert err["message"] == f"first must be between 1 and 100, got {first}"
    assert err["extensions"] == {"code": "BAD_USER_INPUT", "field": "first"}


async def test_first_outside_range_on_other_fields(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        sim = only_error(await gql('{ similarItems(itemId: "3", first: 500) { __typename } }'))
        search = only_error(await gql('{ searchItems(title: "movie", first: 0) { id } }'))
    assert sim["extensions"]["field"] == "first" and "between 1 and 100" in sim["message"]
    assert search["extensions"]["field"] == "first"


async def test_unknown_variant(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        err = only_error(await gql(RECS, {"u": "3", "v": "shiny"}))
    assert err["message"].startswith("unknown variant 'shiny'; known variants: tuned")
    assert err["extensions"] == {"code": "BAD_USER_INPUT", "field": "variant"}


async def test_negative_weights(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        err = only_error(await gql(RECS, {"u": "3", "w": {"collaborative": -1.0, "popularity": 1.0}}))
    assert err["message"] == "weight for COLLABORATIVE must be finite and >= 0, got -1.0"
    assert err["extensions"] == {"code": "BAD_USER_INPUT", "field": "weights"}


async def test_all_zero_weights(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        err = only_error(await gql(RECS, {"u": "3", "w": {"collaborative": 0.0, "popularity": 0}}))
        empty = only_error(await gql(RECS, {"u": "3", "w": {}}))
    for e in (err, empty):
        assert e["message"] == "weights are all zero: at least one signal needs a positive weight"
        assert e["extensions"]["field"] == "weights"


async def test_weights_for_a_signal_the_bundle_lacks_and_variant_with_weights(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        graph = only_error(await gql(RECS, {"u": "3", "w": {"graph": 1.0}}))
        both = only_error(await gql(RECS, {"u": "3", "v": "tuned", "w": {"popularity": 1.0}}))
    assert "GRAPH" in graph["message"] and "lacks" in graph["message"]
    assert both["message"] == "give either a variant or weights, not both"


async def test_bad_interaction_values(make_settings) -> None:
    m = 'mutation($v: Float!) { recordInteraction(userId: "3", itemId: "4", value: $v) { __typename } }'
    async with running(create_app(make_settings())) as gql:
        for value in (0.0, -2.0, 1e9):
            err = only_error(await gql(m, {"v": value}))
            assert err["extensions"] == {"code": "BAD_USER_INPUT", "field": "value"}
            assert "value must be finite, > 0" in err["message"]


async def test_batch_too_large(make_settings) -> None:
    batch = [{"userId": "3", "itemId": "4"}] * 6
    m = 'mutation($b: [InteractionInput!]!) { recordInteractions(batch: $b) { accepted } }'
    async with running(create_app(make_settings(max_batch=5))) as gql:
        err = only_error(await gql(m, {"b": batch}))
    assert err["message"] == "batch holds 6 interactions; at most 5 per call"


async def test_graphql_validation_errors_are_not_masked(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        err = only_error(await gql('{ recommendations(userId: "3") { nonsense } }'))
        typed = only_error(await gql(RECS, {"u": "3", "first": "ten"}))
    assert "Cannot query field 'nonsense'" in err["message"]
    assert "ten" in typed["message"]


# -- unexpected errors -------------------------------------------------------------------------------------

async def test_unexpected_exceptions_are_masked_and_logged(make_settings, monkeypatch, caplog) -> None:
    from graphql_api.engine import Engine

    def boom(self, title, first):
        raise RuntimeError("secret internals: /etc/passwd")

    monkeypatch.setattr(Engine, "search_items", boom)
    caplog.set_level(logging.INFO, logger="hybridrec")
    async with running(create_app(make_settings())) as gql:
        response = await gql.post('{ searchItems(title: "x") { id } }')
        metrics = (await gql.http.get("/metrics")).text
    assert response.status_code == 200
    err = only_error(response.json())
    assert err["message"] == "Unexpected error." and "secret" not in response.text
    assert err["path"] == ["searchItems"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "hybridrec.graphql"]
    assert logged and "RuntimeError: secret internals" in logged[0].exc_text
    assert 'hybridrec_errors_total{kind="internal"} 1.0' in metrics


# -- limits ------------------------------------------------------------------------------------------------

async def test_query_depth_limit(make_settings) -> None:
    deep = '{ recommendations(userId: "3") { items { explanation { drivers { item { id } } } } } }'
    async with running(create_app(make_settings(limits=_limits(max_depth=4)))) as gql:
        err = only_error(await gql(deep))
        ok = await gql.data('{ recommendations(userId: "3") { items { item { id } } } }')
    assert err["message"] == "the query is 6 fields deep; the limit is 4 (max_depth)"
    assert err["extensions"] == {"code": "QUERY_TOO_DEEP", "limit": "max_depth", "max": 4, "value": 6}
    assert ok["recommendations"]["items"]


async def test_alias_limit(make_settings) -> None:
    many = "{ " + " ".join(f'a{i}: item(id: "{i + 1}") {{ __typename }}' for i in range(4)) + " }"
    async with running(create_app(make_settings(limits=_limits(max_aliases=3)))) as gql:
        err = only_error(await gql(many))
    assert err["message"] == "the query has 4 aliases; the limit is 3 (max_aliases)"
    assert err["extensions"]["code"] == "TOO_MANY_ALIASES"


async def test_token_limit(make_settings) -> None:
    big = "{ " + " ".join("model { version }" for _ in range(40)) + " }"
    async with running(create_app(make_settings(limits=_limits(max_tokens=100)))) as gql:
        err = only_error(await gql(big))
    assert "more than 100 tokens" in err["message"]


async def test_introspection_can_be_switched_off(make_settings) -> None:
    q = "{ __schema { queryType { name } } }"
    async with running(create_app(make_settings())) as gql:
        assert (await gql.data(q))["__schema"]["queryType"]["name"] == "Query"
    async with running(create_app(make_settings(limits=_limits(introspection=False)))) as gql:
        body = await gql(q)
    assert body["data"] is None
    assert body["errors"] and all("introspection has been disabled" in e["message"] for e in body["errors"])


def _limits(**kw):
    from graphql_api.settings import Limits

    return Limits(**kw)


# -- keys, rate limits, CORS ---------------------------------------------------------------------------

MUT = 'mutation { recordInteraction(userId: "3", itemId: "4") { __typename } }'
DEL = 'mutation { deleteUserData(userId: "3") { eventsRemoved } }'


async def test_mutations_need_a_key_when_keys_are_configured(make_settings) -> None:
    settings = make_settings(api_keys=frozenset({"k1"}), admin_keys=frozenset({"root"}))
    async with running(create_app(settings)) as gql:
        anon = only_error(await gql(MUT))
        wrong = only_error(await gql(MUT, headers={"x-api-key": "guess"}))
        ok = await gql.data(MUT, headers={"x-api-key": "k1"})
        bearer = await gql.data(MUT, headers={"authorization": "Bearer k1"})
        query = await gql.data('{ model { version } }')  # queries stay open
        not_admin = only_error(await gql(DEL, headers={"x-api-key": "k1"}))
        admin = await gql.data(DEL, headers={"x-api-key": "root"})
    for err in (anon, wrong, not_admin):
        assert err["extensions"]["code"] == "FORBIDDEN"
    assert "API key" in anon["message"] and "admin key" in not_admin["message"]
    assert ok["recordInteraction"]["__typename"] == bearer["recordInteraction"]["__typename"] == "InteractionRecorded"
    assert query["model"]["version"] == "v1"
    assert admin["deleteUserData"]["eventsRemoved"] == 2


async def test_keys_for_every_operation_when_configured(make_settings) -> None:
    settings = make_settings(api_keys=frozenset({"k1"}), require_key_for_queries=True)
    async with running(create_app(settings)) as gql:
        denied = await gql.post('{ model { version } }')
        allowed = await gql.post('{ model { version } }', headers={"x-api-key": "k1"})
        health = await gql.http.get("/health")
    assert denied.status_code == 401 and denied.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert allowed.status_code == 200 and allowed.json()["data"]["model"]["version"] == "v1"
    assert health.status_code == 200


async def test_development_mode_is_open_and_says_so(make_settings) -> None:
    async with running(create_app(make_settings(dev_mode=True))) as gql:
        assert (await gql.data(DEL))["deleteUserData"]["eventsRemoved"] == 0
        health = (await gql.http.get("/health")).json()
    assert health["dev_mode"] is True and "no API keys" in health["warning"]


async def test_scopes_and_user_binding(make_settings) -> None:
    """A read key cannot write; a key bound to user 3 writes and reads only user 3; history reads need
    a key with the read scope, anonymous recommendations stay open."""
    settings = make_settings(api_keys=frozenset({"reader:read", "bound@3", "writer"}))
    hist = 'query($u: ID!) { user(id: $u) { id recentHistory(first: 3) { value } } }'
    batch = 'mutation($u: ID!) { recordInteractions(batch: [{userId: "3", itemId: "4"}, {userId: $u, itemId: "5"}]) { accepted } }'
    async with running(create_app(settings)) as gql:
        read_only = only_error(await gql(MUT, headers={"x-api-key": "reader"}))
        own = await gql.data(MUT, headers={"x-api-key": "bound"})
        other = only_error(await gql('mutation { recordInteraction(userId: "4", itemId: "4") { __typename } }',
                                     headers={"x-api-key": "bound"}))
        mixed = only_error(await gql(batch, {"u": "4"}, headers={"x-api-key": "bound"}))
        anon_history = only_error(await gql(hist, {"u": "3"}))
        bound_history = await gql.data(hist, {"u": "3"}, headers={"x-api-key": "bound"})
        bound_other = only_error(await gql(hist, {"u": "4"}, headers={"x-api-key": "bound"}))
        reader_history = await gql.data(hist, {"u": "4"}, headers={"x-api-key": "reader"})
        anon_recs = await gql.data('{ recommendations(userId: "3", first: 2) { items { rank } } }')
        after = await gql.data(hist, {"u": "4"}, headers={"x-api-key": "writer"})
    assert read_only["extensions"]["code"] == "FORBIDDEN" and "write scope" in read_only["message"]
    assert own["recordInteraction"]["__typename"] == "InteractionRecorded"
    for err in (other, mixed, bound_other):
        assert err["extensions"]["code"] == "FORBIDDEN" and "not for user '4'" in err["message"], err
    assert anon_history["extensions"]["code"] == "FORBIDDEN" and "read scope" in anon_history["message"]
    assert len(bound_history["user"]["recentHistory"]) >= 1 and reader_history["user"]["id"] == "4"
    assert len(anon_recs["recommendations"]["items"]) == 2
    online = [h for h in after["user"]["recentHistory"]]  # the refused batch stored nothing for user 4
    assert len(online) == len(reader_history["user"]["recentHistory"])


async def test_rate_limit_per_key_in_process(make_settings) -> None:
    """Rate limits count cost points (graphql_api.cost): a bucket of three and a half times the
    price of `{ model { version } }` holds three. The client address's bucket is drained too (both
    must hold a request's price), so key b from the same address is refused as well
    (tests/test_hostile_query_cost.py tells the two apart over several loopback addresses)."""
    from graphql import parse

    from graphql_api.cost import DocumentCost
    from graphql_api.schema import schema

    q = '{ model { version } }'
    price = DocumentCost(parse(q), schema._schema).requested()
    settings = make_settings(rate_limit=1.0, rate_burst=price * 7 // 2, api_keys=frozenset({"a", "b"}))
    async with running(create_app(settings)) as gql:
        first = await gql.post(q, headers={"x-api-key": "a"})
        codes_a = [(await gql.post(q, headers={"x-api-key": "a"})).status_code for _ in range(4)]
        limited = await gql.post(q, headers={"x-api-key": "a"})
        codes_b = [(await gql.post(q, headers={"x-api-key": "b"})).status_code for _ in range(2)]
    assert first.json()["extensions"]["cost"]["requested"] == price
    assert [first.status_code, *codes_a] == [200, 200, 200, 429, 429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert codes_b == [429, 429]  # the address's bucket is empty


async def test_cors_from_settings(make_settings) -> None:
    settings = make_settings(cors_origins=("https://app.example",))
    async with running(create_app(settings)) as gql:
        pre = await gql.http.options("/graphql", headers={"origin": "https://app.example",
                                                          "access-control-request-method": "POST"})
        other = await gql.http.options("/graphql", headers={"origin": "https://evil.example",
                                                            "access-control-request-method": "POST"})
        simple = await gql.post('{ model { version } }', headers={"origin": "https://app.example"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
    assert other.status_code == 400
    assert simple.headers["access-control-allow-origin"] == "https://app.example"


async def test_no_bundle_published_yet(tmp_path) -> None:
    from graphql_api.settings import Settings

    settings = Settings(bundle_root=tmp_path / "empty", events_dir=tmp_path / "events", access_log=False, dev_mode=True)
    async with running(create_app(settings)) as gql:
        health = await gql.http.get("/health")
        response = await gql.post('{ model { version } }')
    assert health.status_code == 503 and health.json()["ready"] is False
    assert response.status_code == 503
    assert json.loads(response.text)["errors"][0]["extensions"]["code"] == "NOT_READY"
