"""Concurrent requests' searches ranked as one batch (graphql_api.batching), with the answers each
would get alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from graphql_api.app import create_app
from graphql_api.batching import SearchBatcher
from hybrid.bundle import load
from hybrid.index import FusedIndex
from hybrid.recommender import HybridRecommender
from tests.api_helpers import running

pytest_plugins = ["tests.api_helpers"]

CANONICAL = 'query($u: ID!) { recommendations(userId: $u, first: 10) { variant items { score item { id } } } }'


@pytest.fixture(scope="module")
def index() -> FusedIndex:
    rng = np.random.default_rng(5)
    index = FusedIndex.build(rng.standard_normal((3000, 48)).astype(np.float32))
    index.search(np.ones(48, np.float32), 1)  # the screen built and its kernel compiled before any timing
    return index


def queries(n: int, dim: int = 48) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(n)
    return rng.standard_normal((n, dim)).astype(np.float32), [rng.choice(3000, 40) for _ in range(n)]


def run(coro):  # noqa: ANN001, ANN201 - a test helper
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_open_slots_are_searched_together_with_their_own_answers(index: FusedIndex) -> None:
    sizes: list[int] = []
    batcher = SearchBatcher(observe=sizes.append, max_delay=10.0)  # the slots decide, not a loaded clock
    q, ex = queries(6)

    async def one(j: int) -> tuple[np.ndarray, np.ndarray]:
        async with batcher.slot() as slot:
            await asyncio.sleep(0.0001 * j)  # the user's state, arriving at different times
            return await slot.search(index, q[j], 10, ex[j])

    async def main() -> list[tuple[np.ndarray, np.ndarray]]:
        return await asyncio.gather(*(one(j) for j in range(6)))

    answers = run(main())
    assert sizes == [6]
    for j, (rows, scores) in enumerate(answers):
        alone_rows, alone_scores = index.search(q[j], 10, exclude=ex[j])
        np.testing.assert_array_equal(rows, alone_rows)
        np.testing.assert_array_equal(scores, alone_scores)


def test_a_slot_left_without_a_search_does_not_hold_the_batch(index: FusedIndex) -> None:
    sizes: list[int] = []
    batcher = SearchBatcher(observe=sizes.append, max_delay=10.0)  # only the slots decide
    q, ex = queries(3)

    async def searching(j: int) -> np.ndarray:
        async with batcher.slot() as slot:
            return (await slot.search(index, q[j], 5, ex[j]))[0]

    async def failing() -> None:
        async with batcher.slot():
            await asyncio.sleep(0.01)
            raise LookupError("no such user")

    async def main() -> list[object]:
        return await asyncio.gather(searching(0), failing(), searching(1), return_exceptions=True)

    first, error, second = run(main())
    assert isinstance(error, LookupError)
    assert sizes == [2]
    np.testing.assert_array_equal(first, index.search(q[0], 5, exclude=ex[0])[0])
    np.testing.assert_array_equal(second, index.search(q[1], 5, exclude=ex[1])[0])


def test_a_slow_slot_delays_the_batch_by_max_delay_at_most(index: FusedIndex) -> None:
    sizes: list[int] = []
    batcher = SearchBatcher(observe=sizes.append, max_delay=0.01)
    q, ex = queries(3)
    asked_at: dict[int, float] = {}
    done_at: dict[int, float] = {}

    async def one(j: int, wait: float) -> None:
        async with batcher.slot() as slot:
            await asyncio.sleep(wait)
            asked_at[j] = asyncio.get_running_loop().time()
            await slot.search(index, q[j], 5, ex[j])
            done_at[j] = asyncio.get_running_loop().time()

    async def main() -> None:
        await asyncio.gather(one(0, 0.0), one(1, 0.0), one(2, 0.5))

    run(main())
    assert sizes == [2, 1]  # the two quick ones did not wait for the slow one ...
    assert max(done_at[0], done_at[1]) < asked_at[2]  # ... they were answered before it even asked


def test_a_bad_query_fails_alone_and_batches_are_capped(index: FusedIndex) -> None:
    sizes: list[int] = []
    batcher = SearchBatcher(observe=sizes.append, max_batch=4)
    q, ex = queries(9)
    bad = q[4].copy()
    bad[0] = np.nan

    async def one(j: int) -> object:
        async with batcher.slot() as slot:
            return await slot.search(index, bad if j == 4 else q[j], 3, ex[j])

    async def main() -> list[object]:
        return await asyncio.gather(*(one(j) for j in range(9)), return_exceptions=True)

    answers = run(main())
    assert isinstance(answers[4], ValueError) and "non-finite" in str(answers[4])
    for j, answer in enumerate(answers):
        if j != 4:
            np.testing.assert_array_equal(answer[0], index.search(q[j], 3, exclude=ex[j])[0])
    assert sizes[:3] == [4, 4, 1]  # the capped batches; then the failed one's batch query by query
    assert sorted(sizes[3:]) == [1, 1, 1, 1]


def test_filtered_searches_run_alone(index: FusedIndex) -> None:
    sizes: list[int] = []
    batcher = SearchBatcher(observe=sizes.append)
    q, ex = queries(3)
    allowed = np.arange(3000) % 2 == 0

    async def one(j: int) -> np.ndarray:
        async with batcher.slot() as slot:
            return (await slot.search(index, q[j], 5, ex[j], allowed if j == 0 else None))[0]

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(one(j) for j in range(3)))

    filtered, *_ = run(main())
    assert sorted(sizes) == [1, 2]
    assert (filtered % 2 == 0).all()
    np.testing.assert_array_equal(filtered, index.search(q[0], 5, exclude=ex[0], allowed=allowed)[0])


@pytest.mark.anyio
async def test_concurrent_requests_are_batched_and_answer_as_alone(make_settings, api_root) -> None:
    bundle = load(api_root)
    users = [str(u) for u in bundle.users.ids[:12]]
    expected = {u: HybridRecommender(bundle).recommend(u, 10).item_ids for u in users}
    async with running(create_app(make_settings())) as gql:
        answers = await asyncio.gather(*(gql.data(CANONICAL, {"u": u}) for u in users))
        metrics = (await gql.http.get("/metrics")).text
    for u, data in zip(users, answers, strict=True):
        assert [i["item"]["id"] for i in data["recommendations"]["items"]] == expected[u]
    count = next(float(line.split()[-1]) for line in metrics.splitlines()
                 if line.startswith("hybridrec_search_batch_size_count"))
    assert count < len(users), f"12 concurrent requests were searched in {count:.0f} batches"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
