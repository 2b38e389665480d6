"""Queries through the ASGI app with its lifespan running (bundle loaded from the root's latest)."""

from __future__ import annotations

import math

import pytest

from graphql_api.app import create_app
from hybrid.bundle import load
from hybrid.recommender import HybridRecommender
from tests.api_helpers import RECS, running

pytest_plugins = ["tests.api_helpers"]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

CANONICAL = 'query($u: ID!) { recommendations(userId: $u, first: 10) { variant items { score item { id title genres } } } }'


async def test_recommendations_match_the_recommender(make_settings, api_root) -> None:
    expected = HybridRecommender(load(api_root)).recommend("3", 5)
    async with running(create_app(make_settings())) as gql:
        recs = (await gql.data(RECS, {"user": "3"}))["recommendations"]
    assert recs["variant"] == expected.variant == "tuned"
    assert recs["modelVersion"] == "v1"
    assert recs["userKnown"] is True and recs["coldStart"] is False and recs["userSource"] == "TRAINED"
    assert [i["item"]["id"] for i in recs["items"]] == expected.item_ids
    assert [i["rank"] for i in recs["items"]] == [1, 2, 3, 4, 5]
    for item in recs["items"]:
        parts = {c["signal"]: c["value"] for c in item["contributions"]}
        assert {"COLLABORATIVE", "POPULARITY"} <= set(parts)
        assert math.isclose(sum(parts.values()), item["score"], rel_tol=1e-4, abs_tol=1e-5)
        assert item["item"]["title"].startswith("Movie ") and item["item"]["genres"]
        assert item["item"]["popularity"] > 0


async def test_canonical_query_over_every_user(make_settings, api_root) -> None:
    bundle = load(api_root)
    async with running(create_app(make_settings())) as gql:
        for user in bundle.users.ids[:20]:
            recs = (await gql.data(CANONICAL, {"u": str(user)}))["recommendations"]
            assert recs["variant"] == "tuned" and len(recs["items"]) == 10
            scores = [i["score"] for i in recs["items"]]
            assert scores == sorted(scores, reverse=True)


async def test_variant_is_echoed_and_weights_give_custom(make_settings) -> None:
    q = 'query($v: String, $w: BlendWeightsInput) { recommendations(userId: "3", first: 5, variant: $v, weights: $w) ' \
        '{ variant weights { signal weight } items { item { id } contributions { signal value } } } }'
    async with running(create_app(make_settings())) as gql:
        pop = (await gql.data(q, {"v": "popularity"}))["recommendations"]
        als = (await gql.data(q, {"v": "als"}))["recommendations"]
        custom = (await gql.data(q, {"w": {"popularity": 2.0}}))["recommendations"]
    assert pop["variant"] == "popularity" and als["variant"] == "als" and custom["variant"] == "custom"
    used = {w["signal"]: w["weight"] for w in custom["weights"]}
    assert used.pop("POPULARITY") == 2.0 and set(used.values()) == {0.0}
    for item in pop["items"]:
        assert {c["signal"]: c["value"] for c in item["contributions"]}["COLLABORATIVE"] == 0.0
    assert [i["item"]["id"] for i in pop["items"]] == [i["item"]["id"] for i in custom["items"]]
    assert [i["item"]["id"] for i in pop["items"]] != [i["item"]["id"] for i in als["items"]]


async def test_filter_and_exclude_seen(make_settings, api_root) -> None:
    q = 'query($f: ItemFilterInput, $x: Boolean!) { recommendations(userId: "3", first: 20, filter: $f, excludeSeen: $x) ' \
        '{ items { item { id genres year } } } }'
    seen = {str(i) for i in load(api_root).items.ids[HybridRecommender(load(api_root)).history("3").items]}
    async with running(create_app(make_settings())) as gql:
        drama = (await gql.data(q, {"f": {"genres": ["drama"], "yearMin": 1995}, "x": True}))["recommendations"]
        everything = (await gql.data(q, {"f": None, "x": False}))["recommendations"]
    assert drama["items"]
    for it in drama["items"]:
        assert "Drama" in it["item"]["genres"] and it["item"]["year"] >= 1995
        assert it["item"]["id"] not in seen
    assert seen & {i["item"]["id"] for i in everything["items"]}


async def test_explanation_is_computed_only_when_selected(make_settings, monkeypatch) -> None:
    import graphql_api.service as service

    # Kept as a spy (on a public function): how many explanation batches a request costs shows
    # nowhere else; no metric counts them.
    calls = []
    real = service.explain_items

    def counting(*args, **kwargs):
        calls.append(list(kwargs["item_rows"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "explain_items", counting)
    plain = 'query { recommendations(userId: "3", first: 4) { items { score } } }'
    explained = 'query { recommendations(userId: "3", first: 4) { items { score explanation { score sentence ' \
                'contributions { signal value } shares { signal value } mainSignal drivers { similarity item { id } } ' \
                'graphPath { kind id label } } } } }'
    async with running(create_app(make_settings(cache_ttl=0))) as gql:
        await gql.data(plain)
        assert calls == []
        items = (await gql.data(explained))["recommendations"]["items"]
    assert len(calls) == 1 and len(calls[0]) == 4, "the list's items are explained in one batch"
    for it in items:
        e = it["explanation"]
        assert math.isclose(e["score"], it["score"], rel_tol=1e-4, abs_tol=1e-5)
        assert math.isclose(sum(c["value"] for c in e["contributions"]), e["score"], rel_tol=1e-4, abs_tol=1e-5)
        assert e["sentence"].startswith("Recommended")


async def test_contributions_are_computed_only_when_selected(make_settings, monkeypatch) -> None:
    from hybrid.fusion import Fusion

    # Kept as a spy (on a public method): the number of contribution products is visible nowhere else.
    calls = []
    real = Fusion.contributions

    def counting(self, query, items):
        calls.append(len(items))
        return real(self, query, items)

    monkeypatch.setattr(Fusion, "contributions", counting)
    plain = 'query { recommendations(userId: "3", first: 4) { items { score item { id } } } }'
    parts = 'query { recommendations(userId: "3", first: 4) { items { score contributions { signal value } } } }'
    async with running(create_app(make_settings(cache_ttl=0))) as gql:
        calls.clear()  # the engine's warm-up explained one item
        await gql.data(plain)
        assert calls == []
        items = (await gql.data(parts))["recommendations"]["items"]
    assert calls == [4], "the list's contributions are computed in one product"
    for it in items:
        assert math.isclose(sum(c["value"] for c in it["contributions"]), it["score"], rel_tol=1e-4, abs_tol=1e-5)


async def test_item_lookups_are_batched_per_request(make_settings, monkeypatch) -> None:
    from graphql_api.engine import Engine

    # Kept as a spy (on a public method): the id lookups a request makes are visible nowhere else;
    # the batching is what the dataloader is for.
    batches = []
    real = Engine.items_by_id

    def spy(self, ids):
        batches.append(list(ids))
        return real(self, ids)

    monkeypatch.setattr(Engine, "items_by_id", spy)
    by_id = '{ a: item(id: "1") { ... on Item { id } } b: item(id: "2") { ... on Item { id } } ' \
            'c: items(ids: ["3", "4", "1"]) { id } }'
    async with running(create_app(make_settings(cache_ttl=0))) as gql:
        await gql.data(by_id)
        await gql.data(by_id)
        assert len(batches) == 2 and all(sorted(b) == ["1", "2", "3", "4"] for b in batches)  # one per request
        batches.clear()
        data = await gql.data(CANONICAL, {"u": "3"})
    # recommended items come with their rows in the bundle: resolved at once, no id lookup at all
    assert batches == [] and len(data["recommendations"]["items"]) == 10
    assert all(i["item"]["id"] and i["item"]["title"] for i in data["recommendations"]["items"])


async def test_similar_items_per_signal(make_settings, api_root) -> None:
    q = 'query($s: SimilaritySignal!) { similarItems(itemId: "3", first: 4, signal: $s) { __typename ' \
        '... on SimilarItems { signal modelVersion item { id } items { rank score item { id } contributions { signal value } } } } }'
    expected = HybridRecommender(load(api_root)).similar_items("3", 4, "als")
    async with running(create_app(make_settings())) as gql:
        fused = (await gql.data(q, {"s": "FUSED"}))["similarItems"]
        collab = (await gql.data(q, {"s": "COLLABORATIVE"}))["similarItems"]
    assert fused["__typename"] == "SimilarItems" and fused["item"]["id"] == "3"
    assert collab["signal"] == "COLLABORATIVE"
    assert [i["item"]["id"] for i in collab["items"]] == [s.item_id for s in expected]
    assert all(i["item"]["id"] != "3" for i in fused["items"])


async def test_explain_query(make_settings) -> None:
    q = '{ explain(userId: "3", itemId: "5") { __typename ... on Explanation { userId score item { id title } ' \
        'contributions { signal value } sentence sharedGenres } } }'
    async with running(create_app(make_settings())) as gql:
        e = (await gql.data(q))["explain"]
    assert e["__typename"] == "Explanation" and e["item"]["id"] == "5" and e["userId"] == "3"
    assert math.isclose(sum(c["value"] for c in e["contributions"]), e["score"], rel_tol=1e-4, abs_tol=1e-5)


async def test_items_search_user_variants_model(make_settings, api_root) -> None:
    q = '''{
      one: item(id: "2") { __typename ... on Item { id title genres tags year meanRating popularity } }
      items(ids: ["1", "nope", "3"]) { id }
      searchItems(title: "movie 1", first: 3) { id title popularity }
      user(id: "3") { id known trainedInteractions onlineInteractions recentHistory(first: 3) { value source item { id } } }
      variants { name description trafficShare coldStart weights { signal weight } }
      model { version trainedAt signals tunedWeights { signal weight } dataset { source users items interactions }
              metrics { name value } }
    }'''
    bundle = load(api_root)
    async with running(create_app(make_settings())) as gql:
        d = await gql.data(q)
    assert d["one"]["__typename"] == "Item" and d["one"]["id"] == "2" and d["one"]["year"] == 1991
    assert [None if i is None else i["id"] for i in d["items"]] == ["1", None, "3"]
    assert len(d["searchItems"]) == 3 and all("Movie 1" in i["title"] for i in d["searchItems"])
    pops = [i["popularity"] for i in d["searchItems"]]
    assert pops == sorted(pops, reverse=True)
    assert d["user"]["known"] and d["user"]["trainedInteractions"] == len(HybridRecommender(bundle).history("3"))
    assert [h["source"] for h in d["user"]["recentHistory"]] == ["TRAINED"] * 3
    names = {v["name"]: v for v in d["variants"]}
    assert set(names) >= {"tuned", "als", "popularity"} and names["tuned"]["trafficShare"] == 1.0
    assert d["model"]["version"] == "v1" and d["model"]["dataset"]["source"] == "tiny"
    assert {m["name"]: m["value"] for m in d["model"]["metrics"]}["hybrid.ndcg@10"] == 0.25


async def test_graphiql_is_served_on_get(make_settings) -> None:
    async with running(create_app(make_settings())) as gql:
        page = await gql.http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text.lower()


EXPLAINED = ('query($u: ID!) { recommendations(userId: $u, first: 10) { variant items { score item { id title genres } '
             'explanation { sentence mainSignal contributions { signal value } drivers { similarity item { id title } } } '
             '} } }')


async def test_both_executors_give_the_same_answers(make_settings, api_root) -> None:
    """HYBRIDREC_PLAIN_EXECUTOR=false (graphql-core's own path, the fallback) answers every field as
    graphql_api/execution.py's executor does: data and errors."""
    users = [str(u) for u in load(api_root).users.ids[:8]] + ["nobody-known"]
    answers = {}
    for plain in (True, False):
        async with running(create_app(make_settings(plain_executor=plain, cache_ttl=0))) as gql:
            answers[plain] = [await gql(EXPLAINED, {"u": u}) for u in users]
            answers[plain].append(await gql('{ recommendations(userId: "3", first: -1) { variant } }'))
    assert answers[True] == answers[False]
    assert all(len(a["data"]["recommendations"]["items"]) == 10 for a in answers[True][:-1])
    assert answers[True][-1]["errors"]
