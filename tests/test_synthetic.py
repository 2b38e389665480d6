"""The synthetic MovieLens-shaped generator: shape, determinism, signal, and Dask execution."""

from __future__ import annotations

import math

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, get_task_stream

from etl.errors import DataError
from etl.sources import synthetic
from etl.sources.base import INTERACTION_COLUMNS, ITEM_COLUMNS
from etl.sources.synthetic import (
    BLOCK_USERS,
    GENRES,
    SyntheticConfig,
    generate,
    partition_plan,
    read_parquet,
    user_activity,
    write_parquet,
)

# ~12 user blocks of ~5k rows: several partitions at partition_size=10_000.
SMALL = dict(n_interactions=60_000, n_users=1_500, n_items=4_000, seed=7, partition_size=10_000)


@pytest.fixture(scope="module")
def small(client) -> tuple[SyntheticConfig, pd.DataFrame, pd.DataFrame]:
    config = SyntheticConfig(**SMALL)
    source = generate(config, client=client)
    # Partitions each number their rows from 0: give the whole frame one plain index.
    return config, source.interactions.compute().reset_index(drop=True), source.items


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    return df.reset_index(drop=True)


def test_defaults_scale_like_movielens() -> None:
    small = SyntheticConfig(n_interactions=100_836)
    large = SyntheticConfig(n_interactions=25_000_095)
    assert small.users == 610 and small.items == 9_742
    assert large.users == 162_541 and large.items == 62_423
    mid = SyntheticConfig(n_interactions=1_000_000)
    assert small.users < mid.users < large.users and small.items < mid.items < large.items


def test_tiny_defaults_stay_valid() -> None:
    config = SyntheticConfig(n_interactions=1)
    assert config.users == 1 and config.warm_items >= 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_interactions": 0}, "n_interactions"),
        ({"n_interactions": 10.5}, "n_interactions"),
        ({"n_interactions": True}, "n_interactions"),
        ({"n_users": 0}, "n_users"),
        ({"n_items": -3}, "n_items"),
        ({"n_topics": 0}, "n_topics"),
        ({"n_genres": 20}, "n_genres"),
        ({"n_tags": 0}, "n_tags"),
        ({"popularity_exponent": 0.0}, "popularity_exponent"),
        ({"popularity_exponent": float("inf")}, "popularity_exponent"),
        ({"taste_concentration": -1.0}, "taste_concentration"),
        ({"item_concentration": "a"}, "item_concentration"),
        ({"cold_item_share": 1.0}, "cold_item_share"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"min_user_interactions": 0}, "min_user_interactions"),
        ({"seed": -1}, "seed"),
        ({"partition_size": 0}, "partition_size"),
        ({"n_interactions": 10, "n_users": 11}, "n_users"),
        ({"n_interactions": 100, "n_users": 2, "n_items": 40}, "n_interactions"),
    ],
)
def test_config_rejects_bad_fields(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**kwargs)


def test_user_activity_long_tailed_and_exact() -> None:
    config = SyntheticConfig(n_interactions=500_000)
    counts = user_activity(config)
    assert counts.sum() == config.n_interactions and len(counts) == config.users
    assert counts.min() >= 20  # the MovieLens floor, affordable at ~160 per user
    assert counts.max() > 10 * np.median(counts)
    # The floor drops when the budget cannot pay for it, but every user keeps one.
    thin = user_activity(SyntheticConfig(n_interactions=1_000, n_users=900))
    assert thin.min() >= 1 and thin.sum() == 1_000


@pytest.mark.parametrize("rounds", [None, 1])
@pytest.mark.parametrize("n", [118, 120])
def test_dense_configs_still_give_distinct_pairs(n: int, rounds: int | None, monkeypatch) -> None:
    # Two users who must rate (nearly) every one of 60 items. With a single sampling round the
    # generator has to finish through its exact fill. The round counts are private constants, patched
    # here because no public setting reaches that path on purpose; the assertions are on the output.
    if rounds is not None:
        monkeypatch.setattr(synthetic, "_TASTE_ROUNDS", rounds)
        monkeypatch.setattr(synthetic, "_TOPIC_ROUNDS", 0)
        monkeypatch.setattr(synthetic, "_UNIFORM_ROUNDS", 0)
    config = SyntheticConfig(n_interactions=n, n_users=2, n_items=60, seed=1)
    df = generate(config).interactions.compute(scheduler="sync")
    assert len(df) == n and not df.duplicated(["user_id", "item_id"]).any()
    assert sorted(df.groupby("user_id").size()) == sorted(user_activity(config))


def test_partitions_are_user_blocks_and_run_on_the_cluster(client: Client) -> None:
    config = SyntheticConfig(**SMALL)
    source = generate(config, client=client)
    plan = partition_plan(config)
    assert source.interactions.npartitions == len(plan) > 1
    assert plan[0][0] == 0 and plan[-1][1] == math.ceil(config.users / BLOCK_USERS)
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
    with get_task_stream(client) as stream:
        parts = client.gather(client.compute(source.interactions.to_delayed()))
    ran = [t for t in stream.data if "synthetic" in str(t["key"])]
    assert len({str(t["key"]) for t in ran}) == len(plan)
    assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])
    # Each partition owns a disjoint, contiguous range of users.
    ranges = [(p.user_id.astype(int).min(), p.user_id.astype(int).max()) for p in parts]
    assert all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))


def test_schema_and_size(small) -> None:
    config, df, items = small
    assert list(df.columns) == list(INTERACTION_COLUMNS)
    assert len(df) == config.n_interactions
    assert df.user_id.astype(int).between(1, config.users).all()
    assert df.user_id.nunique() == config.users
    assert df.item_id.astype(int).between(1, config.items).all()
    assert df.value.between(0.5, 5.0).all() and ((df.value * 2) % 1 == 0).all()
    assert df.value.nunique() == 10
    assert not df.duplicated(["user_id", "item_id"]).any()
    assert df.timestamp.dtype == np.int64
    assert list(items.columns) == list(ITEM_COLUMNS) and len(items) == config.items
    assert items.item_id.is_unique


def test_raw_source_flags(client: Client) -> None:
    source = generate(SyntheticConfig(n_interactions=5_000, seed=3), client=client)
    assert source.numeric_ids and source.value_range == (0.5, 5.0) and source.header_lines == 0
    assert source.name == "synthetic:seed=3,n=5000"
    assert source.extra["config"]["n_interactions"] == 5_000


def test_timestamps_increase_per_user(small) -> None:
    _, df, _ = small
    # Rows come grouped by user, in time order.
    same_user = df.user_id.to_numpy()[1:] == df.user_id.to_numpy()[:-1]
    assert (np.diff(df.timestamp.to_numpy())[same_user] > 0).all()
    years = pd.to_datetime(df.timestamp, unit="s").dt.year
    assert years.min() <= 1998 and years.max() >= 2017


def test_same_config_same_data_whatever_the_workers_or_partitions(client: Client, small) -> None:
    config, df, items = small
    again = generate(config)
    one_thread = again.interactions.compute(scheduler="sync")
    pd.testing.assert_frame_equal(_plain(one_thread), _plain(df))
    pd.testing.assert_frame_equal(again.items, items)
    coarse = generate(SyntheticConfig(**{**SMALL, "partition_size": 25_000}), client=client)
    assert coarse.interactions.npartitions < generate(config).interactions.npartitions
    pd.testing.assert_frame_equal(_plain(coarse.interactions.compute()), _plain(df))


def test_another_seed_other_data(client: Client, small) -> None:
    _, df, items = small
    other = generate(SyntheticConfig(**{**SMALL, "seed": 8}), client=client)
    assert len(other.interactions) == len(df)
    assert not other.interactions.compute().reset_index(drop=True).equals(_plain(df))
    assert not other.items.genres.equals(items.genres)


def test_item_popularity_is_power_law_with_cold_items(small) -> None:
    config, df, items = small
    counts = df.item_id.value_counts().to_numpy()
    top = max(1, config.items // 100)
    assert counts[:top].sum() / len(df) > 0.15  # uniform would give 0.01
    # Rank-frequency is roughly a straight, falling line on log-log axes over the head.
    ranks = np.arange(1, 501)
    slope = np.polyfit(np.log(ranks), np.log(counts[:500]), 1)[0]
    assert -1.5 < slope < -0.4
    cold = items[~items.item_id.isin(df.item_id.unique())]
    assert len(cold) >= math.floor(config.cold_item_share * config.items) > 0
    assert (cold.year.dropna() >= 2020).sum() == math.floor(config.cold_item_share * config.items)


def test_items_table(small) -> None:
    config, _, items = small
    assert items.genres.map(len).min() >= 1
    assert set(g for gs in items.genres for g in gs) <= set(GENRES[: config.n_genres])
    assert all(gs == sorted(gs) for gs in items.genres)
    assert items.tags.map(len).mean() > 0.5 and (items.tags.map(len) == 0).any()
    assert all(isinstance(t, str) for ts in items.tags for t in ts)
    assert str(items.year.dtype) == "Int64" and items.year.between(1900, 2023).all()
    known = items.year.notna()
    years = items.year[known].astype(str)
    expected = "Synthetic Movie " + items.item_id[known] + " (" + years + ")"
    assert (items.title[known] == expected).all()


def _top_share(df: pd.DataFrame, labels: pd.Series) -> float:
    """Mean over users of the share of their interactions whose item carries their top label."""
    exploded = df.assign(label=labels.reindex(df.item_id).to_numpy()).explode("label")
    per_user = exploded.groupby(["user_id", "label"]).size()
    top = per_user.groupby(level=0).max()
    sizes = df.groupby("user_id").size()
    return float((top / sizes.reindex(top.index)).mean())


@pytest.mark.parametrize("column", ["genres", "tags"])
def test_content_features_follow_tastes(small, column: str) -> None:
    _, df, items = small
    labels = items.set_index("item_id")[column]
    heavy = df[df.groupby("user_id").user_id.transform("size") >= 20]
    rng = np.random.default_rng(0)
    shuffled = heavy.assign(user_id=rng.permutation(heavy.user_id.to_numpy()))
    real, chance = _top_share(heavy, labels), _top_share(shuffled, labels)
    assert real > 1.1 * chance, (real, chance)


def test_ratings_are_higher_on_a_users_favourite_genre(small) -> None:
    _, df, items = small
    genres = items.set_index("item_id").genres
    exploded = df.assign(genre=genres.reindex(df.item_id).to_numpy()).explode("genre")
    favourite = exploded.groupby(["user_id", "genre"]).size().groupby(level=0).idxmax().str[1]
    on = exploded.genre.to_numpy() == favourite.reindex(exploded.user_id).to_numpy()
    assert exploded.value[on].mean() > exploded.value[~on].mean() + 0.04


def test_write_parquet_round_trip(client: Client, small, tmp_path) -> None:
    config, df, items = small
    out = write_parquet(config, tmp_path / "synth", client=client)
    files = sorted((out / "interactions").glob("*.parquet"))
    assert len(files) == len(partition_plan(config))
    back = dd.read_parquet(out / "interactions").compute()
    pd.testing.assert_frame_equal(_plain(back), _plain(df), check_dtype=False)
    items_back = pd.read_parquet(out / "items.parquet")
    assert items_back.item_id.tolist() == items.item_id.tolist()
    assert [list(g) for g in items_back.genres] == items.genres.tolist()
    # read_parquet: the source generate() gives, read back from the files
    source, generated = read_parquet(out), generate(config)
    pd.testing.assert_frame_equal(_plain(source.interactions.compute()), _plain(df), check_dtype=False)
    pd.testing.assert_frame_equal(source.items, generated.items)
    assert (source.name, source.value_range, source.numeric_ids, source.extra["config"]) == (
        generated.name, generated.value_range, generated.numeric_ids, generated.extra["config"])
    (out / "synthetic.json").unlink()
    with pytest.raises(DataError, match=r"synthetic\.json: not a synthetic data config"):
        read_parquet(out)
