"""Deterministic synthetic interactions shaped like MovieLens, generated partition by partition.

A small topic model drives everything, so that collaborative and content signals both carry
information: users have Dirichlet tastes over topics, items have topic mixtures (one of them the
item's primary topic), an item's genres and tags are drawn from its topics, item popularity
follows a power law, and a user picks distinct items by taste x popularity (a topic from the
taste, then an item of that topic weighted by popularity). Ratings (0.5..5.0 in half stars) grow
with user-item affinity; timestamps increase per user. A small share of items is cold.

Users are generated in fixed blocks of ``BLOCK_USERS``, each from its own random stream
``(seed, block)``; a Dask partition is a run of whole blocks. So the data depend on the config's
generator fields only, never on the number of workers nor on ``partition_size``.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd

from etl.errors import DataError
from etl.sources.base import INTERACTION_COLUMNS, RawSource

#: The 19 MovieLens genres (ml-25m, without "(no genres listed)").
GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

#: Users per random stream; partitions hold whole blocks.
BLOCK_USERS = 128
#: The config beside the Parquet files ``write_parquet`` writes.
CONFIG_FILE = "synthetic.json"

_TAG_WORDS: tuple[str, ...] = (
    "atmospheric", "twist ending", "dark comedy", "based on a book", "thought-provoking",
    "visually appealing", "funny", "classic", "dystopia", "surreal", "quirky", "psychology",
    "time travel", "space", "romance", "violence", "heist", "superhero", "pixar", "musical",
    "world war ii", "history", "biography", "true story", "mystery", "suspense", "cult film",
    "noir", "western", "zombies", "vampires", "gore", "satire", "philosophical", "slow",
    "great soundtrack", "coming of age", "high school", "family", "friendship", "revenge",
    "aliens", "robots", "magic", "mafia", "politics", "religion", "sports", "nostalgic", "epic",
)  # fmt: skip

# MovieLens-like anchors (interactions, users, items): ml-latest-small and ml-25m.
_SMALL = (100_836, 610, 9_742)
_LARGE = (25_000_095, 162_541, 62_423)
# Rating time span of ml-25m, unix seconds (1995-01-09 .. 2019-11-21).
_T0, _T1 = 789_652_009, 1_574_327_703
# Random stream tags: each kind of draw has its own stream.
_S_ITEMS, _S_META, _S_COUNTS, _S_USERS = 1, 2, 3, 4
_TASTE_ROUNDS, _TOPIC_ROUNDS, _UNIFORM_ROUNDS = 4, 4, 24


def _scaled(n: int, index: int) -> int:
    """Users (index 1) or items (2) for n interactions, on the power law through both anchors."""
    slope = math.log(_LARGE[index] / _SMALL[index]) / math.log(_LARGE[0] / _SMALL[0])
    return max(1, round(_SMALL[index] * (n / _SMALL[0]) ** slope))


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Fields left None are scaled from n_interactions like MovieLens."""

    n_interactions: int = 100_000
    """Exact number of interaction rows (MovieLens-25M: 25_000_095)."""
    n_users: int | None = None
    """Users, each with >= 1 interaction; None: ~610 at 100k, ~162k at 25M."""
    n_items: int | None = None
    """Catalog size, cold items included; None: ~9.7k at 100k, ~62k at 25M."""
    n_topics: int = 20
    """Latent topics behind tastes, genres and tags."""
    n_genres: int = 19
    """How many of the 19 MovieLens genre names to use (the first n of GENRES)."""
    n_tags: int = 1_000
    """Tag vocabulary size."""
    popularity_exponent: float = 1.0
    """Zipf exponent s of item popularity: the item at popularity rank r has weight r**-s."""
    taste_concentration: float = 0.15
    """Dirichlet concentration of user tastes over topics; smaller: users stick to fewer topics."""
    item_concentration: float = 0.05
    """Dirichlet concentration of item topic mixtures; smaller: items belong to fewer topics."""
    cold_item_share: float = 0.01
    """Share of items released after the rating period, so without interactions (cold start)."""
    latent_dim: int = 8
    """Dimension of the user/item factors that add taste beyond topics to ratings."""
    min_user_interactions: int = 20
    """Least interactions per user (MovieLens: 20); lowered when n_interactions can't afford it."""
    seed: int = 0
    """Seed of every random stream; same config, same data."""
    partition_size: int = 1_000_000
    """Target rows per Dask partition (partitions hold whole user blocks). Does not change data."""

    def __post_init__(self) -> None:
        for name in ("n_interactions", "n_topics", "n_genres", "n_tags", "latent_dim",
                     "min_user_interactions", "partition_size"):  # fmt: skip
            _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0)
        for name in ("n_users", "n_items"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        for name in ("popularity_exponent", "taste_concentration", "item_concentration"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        share = self.cold_item_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ValueError(f"cold_item_share must be in [0, 1), got {share!r}")
        if self.n_genres > len(GENRES):
            raise ValueError(f"n_genres must be <= {len(GENRES)}, got {self.n_genres}")
        n = self.n_interactions
        if self.n_users is None:
            object.__setattr__(self, "n_users", min(_scaled(n, 1), n))
        if self.n_items is None:
            # Enough warm items that every user can have distinct ones.
            least = math.ceil(-(-n // self.n_users) / (1 - share)) + 1
            object.__setattr__(self, "n_items", max(_scaled(n, 2), least))
        if self.n_users > n:
            raise ValueError(
                f"n_users must be <= n_interactions ({n}) so that every user has an "
                f"interaction, got {self.n_users}"
            )
        if n > self.n_users * self.warm_items:
            raise ValueError(
                f"n_interactions must be <= n_users * warm items ({self.n_users} * "
                f"{self.warm_items}) since (user, item) pairs are distinct, got {n}"
            )

    @property
    def users(self) -> int:
        """n_users, resolved (never None after construction)."""
        return int(self.n_users)  # type: ignore[arg-type]

    @property
    def items(self) -> int:
        """n_items, resolved (never None after construction)."""
        return int(self.n_items)  # type: ignore[arg-type]

    @property
    def warm_items(self) -> int:
        """Items that can have interactions (all but the cold share)."""
        return max(1, self.items - math.floor(self.cold_item_share * self.items))


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")


@dataclass(frozen=True)
class _ItemWorld:
    """Item parameters every partition needs (derived from the seed, cached per process)."""

    topics: np.ndarray  # (n_items, n_topics) topic mixtures
    popularity: np.ndarray  # (n_items,) power-law weights summing to 1; 0 for cold items
    warm: np.ndarray  # indices of the items with popularity > 0
    cdf: np.ndarray  # flat (n_topics * n_items,): t + cumulative popularity over topic t's items
    bias: np.ndarray  # (n_items,) rating offset
    factors: np.ndarray  # (n_items, latent_dim)


@lru_cache(maxsize=4)
def _item_world(
    seed: int, n_items: int, n_warm: int, n_topics: int, exponent: float, alpha: float, dim: int
) -> _ItemWorld:
    rng = np.random.default_rng([seed, _S_ITEMS])
    topics = rng.dirichlet(np.full(n_topics, alpha), size=n_items)
    rank = rng.permutation(n_items) + 1
    popularity = np.where(rank <= n_warm, rank.astype(np.float64) ** -exponent, 0.0)
    popularity /= popularity.sum()
    log_pop = np.log(popularity[rank <= n_warm])
    z_pop = np.zeros(n_items)
    z_pop[rank <= n_warm] = (log_pop - log_pop.mean()) / (log_pop.std() + 1e-12)
    bias = 0.3 * rng.standard_normal(n_items) + 0.15 * z_pop
    factors = rng.normal(0.0, (0.25 / dim) ** 0.25, size=(n_items, dim))  # as in _block
    # Who watches an item is decided by one primary topic drawn from its mixture; without this
    # the head items of the power law would dominate every topic and tastes would not show.
    primary = _draw(rng, np.arange(n_items), _stacked_cdf(topics.T), n_topics)
    weights = np.zeros_like(topics)
    weights[np.arange(n_items), primary] = popularity
    empty = weights.sum(axis=0) == 0
    weights[:, empty] = popularity[:, None]  # a topic without items falls back to popularity
    cdf = _stacked_cdf(weights)
    return _ItemWorld(topics, popularity, np.flatnonzero(rank <= n_warm), cdf, bias, factors)


def _stacked_cdf(weights: np.ndarray) -> np.ndarray:
    """Column t of weights (n, k) as a cumulative distribution shifted by t, all k in one array.

    One searchsorted over it then draws from many distributions at once (see _draw).
    """
    cdf = np.cumsum(weights, axis=0).T
    cdf = cdf / cdf[:, -1:]
    return (cdf + np.arange(weights.shape[1])[:, None]).ravel()


def _world(config: SyntheticConfig) -> _ItemWorld:
    return _item_world(
        config.seed, config.items, config.warm_items, config.n_topics,
        float(config.popularity_exponent), float(config.item_concentration), config.latent_dim,
    )  # fmt: skip


def user_activity(config: SyntheticConfig) -> np.ndarray:
    """Interactions per user (row u: user id u+1): long-tailed, >= 1, summing to n_interactions."""
    rng = np.random.default_rng([config.seed, _S_COUNTS])
    users, total, warm = config.users, config.n_interactions, config.warm_items
    floor = max(1, min(config.min_user_interactions, total // users))
    # Leave heavy users room to find distinct items, when the total allows it.
    cap = min(warm, max(warm // 2, -(-total // users)))
    counts = np.full(users, floor, dtype=np.int64)
    weights = rng.lognormal(0.0, 1.2, size=users)
    rest = total - int(counts.sum())
    while rest > 0:
        room = cap - counts
        p = np.where(room > 0, weights, 0.0)
        counts += np.minimum(rng.multinomial(rest, p / p.sum()), room)
        rest = total - int(counts.sum())
    return counts


def _draw(rng: np.random.Generator, which: np.ndarray, cdf: np.ndarray, n: int) -> np.ndarray:
    """One of n outcomes per draw, from distribution which[i] of a _stacked_cdf."""
    q = which + rng.random(len(which)) * (1.0 - 1e-9)  # stays inside its segment
    order = np.argsort(q)  # sorted queries search several times faster
    found = np.empty(len(q), dtype=np.int64)
    found[order] = np.searchsorted(cdf, q[order], side="right")
    return found - which * n


def _distinct_items(
    rng: np.random.Generator, taste: np.ndarray, counts: np.ndarray, world: _ItemWorld
) -> np.ndarray:
    """counts[u] distinct items per local user u, as keys u * n_items + item, grouped by user.

    Draws in rounds, keeping new distinct pairs: first by taste x popularity; then (for users
    whose taste is too narrow for their activity) by topic popularity; then uniformly.
    """
    n_users, n_items, k = len(counts), len(world.popularity), taste.shape[1]
    taste_cdf = _stacked_cdf(taste.T)
    chosen = np.empty(0, dtype=np.int64)
    have = np.zeros(n_users, dtype=np.int64)
    hit_rate = np.ones(n_users)
    for rnd in range(_TASTE_ROUNDS + _TOPIC_ROUNDS + _UNIFORM_ROUNDS):
        need = counts - have
        if not need.any():
            return chosen
        if rnd in (_TASTE_ROUNDS, _TASTE_ROUNDS + _TOPIC_ROUNDS):
            hit_rate[:] = 1.0
        draws = np.where(need > 0, np.ceil(1.2 * need / np.maximum(hit_rate, 0.05)), 0)
        draws = draws.astype(np.int64) + 2 * (need > 0)
        user = np.repeat(np.arange(n_users), draws)
        if rnd < _TASTE_ROUNDS:
            item = _draw(rng, _draw(rng, user, taste_cdf, k), world.cdf, n_items)
        elif rnd < _TASTE_ROUNDS + _TOPIC_ROUNDS:
            item = _draw(rng, rng.integers(0, k, len(user)), world.cdf, n_items)
        else:
            item = world.warm[rng.integers(0, len(world.warm), len(user))]
        keys = np.concatenate([chosen, user * n_items + item])
        first = np.sort(np.unique(keys, return_index=True)[1])  # earlier picks win
        keys = keys[first]
        owner = keys // n_items
        order = np.argsort(owner, kind="stable")
        keys, owner = keys[order], owner[order]
        rank = np.arange(len(keys)) - np.searchsorted(owner, owner)
        chosen = keys[rank < counts[owner]]
        now = np.bincount(chosen // n_items, minlength=n_users)
        hit_rate = np.where(draws > 0, (now - have) / np.maximum(draws, 1), hit_rate)
        have = now
    # Only reached when a user rates nearly every warm item: fill exactly from what is left.
    extra = []
    for u in np.flatnonzero(counts > have):
        free = np.setdiff1d(world.warm, chosen[chosen // n_items == u] % n_items)
        extra.append(u * n_items + rng.choice(free, counts[u] - have[u], replace=False))
    keys = np.concatenate([chosen, *extra])
    return keys[np.argsort(keys // n_items, kind="stable")]


def _block(
    config: SyntheticConfig, world: _ItemWorld, block: int, counts: np.ndarray
) -> dict[str, np.ndarray]:
    """Interactions of one block of users, from the block's own random stream."""
    rng = np.random.default_rng([config.seed, _S_USERS, block])
    n_users, k, n_items = len(counts), config.n_topics, config.items
    taste = rng.dirichlet(np.full(k, config.taste_concentration), size=n_users)
    user_bias = 0.35 * rng.standard_normal(n_users)
    scale = (0.25 / config.latent_dim) ** 0.25  # latent dot products have spread ~0.5
    user_factors = rng.normal(0.0, scale, (n_users, config.latent_dim))
    start_frac = rng.beta(1.2, 1.0, n_users)
    span = np.exp(rng.normal(math.log(60 * 86_400), 2.5, n_users))

    keys = _distinct_items(rng, taste, counts, world)
    user, item = keys // n_items, keys % n_items
    n = len(keys)
    # Shuffle within user so that time order does not follow draw order.
    shuffled = rng.permutation(n)
    order = shuffled[np.argsort(user[shuffled].astype(np.int32), kind="stable")]
    user, item = user[order], item[order]

    affinity = (taste[user] * world.topics[item]).sum(axis=1)
    latent = (user_factors[user] * world.factors[item]).sum(axis=1)
    raw = (
        3.2 + user_bias[user] + world.bias[item] + 0.3 * np.log(k * affinity + 0.05) + latent
        + 0.7 * rng.standard_normal(n)
    )  # fmt: skip
    whole = rng.random(n) < 0.5  # MovieLens has more whole stars than half stars
    value = np.clip(np.where(whole, np.round(raw), np.round(raw * 2.0) / 2.0), 0.5, 5.0)

    # Timestamps: each user rates during [start, start + span]; strictly increasing per user.
    span = np.minimum(span, (_T1 - _T0) - counts)
    start = _T0 + start_frac * ((_T1 - _T0) - counts - span)
    gaps = np.cumsum(rng.exponential(1.0, n))
    first = np.searchsorted(user, np.arange(n_users))
    last = np.append(first[1:], n) - 1
    before = np.where(first > 0, gaps[np.maximum(first - 1, 0)], 0.0)
    frac = (gaps - before[user]) / (gaps[last] - before)[user]
    rank = np.arange(n) - first[user]
    timestamp = (start[user] + np.floor(frac * span[user])).astype(np.int64) + rank
    return {"user": user + block * BLOCK_USERS, "item": item, "value": value, "ts": timestamp}


def _partition(
    config: SyntheticConfig, blocks: tuple[int, int], counts: np.ndarray
) -> pd.DataFrame:
    """Interactions of the users in blocks [blocks[0], blocks[1]); counts covers those users."""
    world = _world(config)
    parts = []
    for b in range(*blocks):
        lo = (b - blocks[0]) * BLOCK_USERS
        parts.append(_block(config, world, b, counts[lo : lo + BLOCK_USERS]))
    cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return pd.DataFrame({
        "user_id": pd.Series(cols["user"] + 1).astype("string[pyarrow]"),
        "item_id": pd.Series(cols["item"] + 1).astype("string[pyarrow]"),
        "value": cols["value"],
        "timestamp": cols["ts"],
    })  # fmt: skip


def _meta() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": pd.Series([], dtype="string[pyarrow]"),
        "item_id": pd.Series([], dtype="string[pyarrow]"),
        "value": pd.Series([], dtype="float64"),
        "timestamp": pd.Series([], dtype="int64"),
    })[list(INTERACTION_COLUMNS)]  # fmt: skip


def partition_plan(
    config: SyntheticConfig, counts: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """Block ranges [start, stop) of the partitions: runs of whole blocks, ~partition_size rows."""
    counts = user_activity(config) if counts is None else counts
    block_rows = np.add.reduceat(counts, np.arange(0, len(counts), BLOCK_USERS))
    before = np.cumsum(block_rows) - block_rows
    group = before // config.partition_size
    cuts = np.flatnonzero(np.diff(group)) + 1
    edges = [0, *cuts.tolist(), len(block_rows)]
    return list(zip(edges[:-1], edges[1:]))


def items_table(config: SyntheticConfig) -> pd.DataFrame:
    """Item metadata (ITEM_COLUMNS): genres and tags drawn from each item's topics."""
    world = _world(config)
    rng = np.random.default_rng([config.seed, _S_META])
    n_items, k, n_genres = config.items, config.n_topics, config.n_genres
    # Genres: 1..n distinct per item, Gumbel-top-k on the item's topic-mixed genre distribution.
    topic_genres = rng.dirichlet(np.full(n_genres, 0.1), size=k)
    keys = np.log(world.topics @ topic_genres + 1e-12) + rng.gumbel(size=(n_items, n_genres))
    how_many = np.minimum(1 + rng.poisson(0.9, n_items), n_genres)
    top = np.argsort(-keys, axis=1)
    picked = np.sort(np.where(np.arange(n_genres) < how_many[:, None], top, n_genres), axis=1)
    names = np.array(GENRES[:n_genres], dtype=object)
    genres = [names[row[row < n_genres]].tolist() for row in picked]

    # Tags: popular items get more; each tag comes from a topic of the item.
    tag_cdf = _stacked_cdf(rng.dirichlet(np.full(config.n_tags, 0.02), size=k).T)
    pop_pct = np.argsort(np.argsort(world.popularity)) / max(n_items - 1, 1)
    slots = rng.poisson(0.3 + 5.0 * pop_pct**3)
    owner = np.repeat(np.arange(n_items), slots)
    topic = _draw(rng, owner, _stacked_cdf(world.topics.T), k)
    tag = _draw(rng, topic, tag_cdf, config.n_tags)
    pairs = np.unique(owner * config.n_tags + tag)
    vocab = np.array(_tag_names(config.n_tags), dtype=object)
    bounds = np.searchsorted(pairs // config.n_tags, np.arange(1, n_items))
    tags = [t.tolist() for t in np.split(vocab[pairs % config.n_tags], bounds)]

    # Warm items were released before the ratings end (2019); cold ones after.
    year = np.clip(2019 - np.floor(rng.exponential(18.0, n_items)), 1902, 2019).astype(np.int64)
    cold = world.popularity == 0
    year[cold] = rng.integers(2020, 2024, int(cold.sum()))
    year_known = (rng.random(n_items) >= 0.003) | cold
    ids = pd.Series(np.arange(1, n_items + 1)).astype("str")
    year_col = pd.array(np.where(year_known, year, 0), dtype="Int64")
    year_col[~year_known] = pd.NA
    suffix = pd.Series(np.where(year_known, " (" + pd.Series(year).astype("str") + ")", ""))
    return pd.DataFrame({
        "item_id": ids,
        "title": ("Synthetic Movie " + ids + suffix).astype("str"),
        "genres": genres,
        "tags": tags,
        "year": year_col,
    })  # fmt: skip


def _tag_names(n: int) -> list[str]:
    words = len(_TAG_WORDS)
    return [_TAG_WORDS[j % words] + (f" {j // words + 1}" if j >= words else "") for j in range(n)]


def generate(config: SyntheticConfig, *, client: Any | None = None) -> RawSource:
    """A RawSource of synthetic interactions, lazy and partitioned by blocks of users.

    Each partition is generated on whichever worker runs it, from (seed, block) alone; nothing
    builds all interactions in one frame. ``client`` is accepted for the common source signature:
    the frame is lazy and runs on the client that computes it.
    """
    del client
    counts = user_activity(config)
    plan = partition_plan(config, counts)
    users = [counts[a * BLOCK_USERS : b * BLOCK_USERS] for a, b in plan]
    frame = dd.from_map(
        _partition, [config] * len(plan), plan, users,
        meta=_meta(), label="synthetic-interactions", enforce_metadata=False,
    )  # fmt: skip
    return _source(config, frame, items_table(config), len(plan))


def _source(config: SyntheticConfig, interactions: dd.DataFrame, items: pd.DataFrame, partitions: int) -> RawSource:
    return RawSource(
        name=f"synthetic:seed={config.seed},n={config.n_interactions}",
        interactions=interactions,
        items=items,
        value_range=(0.5, 5.0),
        numeric_ids=True,
        header_lines=0,
        extra={"generator": "etl.sources.synthetic", "config": asdict(config), "partitions": partitions},
    )


def write_parquet(
    config: SyntheticConfig, out_dir: str | Path, client: Any | None = None
) -> Path:
    """Write ``out_dir/interactions/`` (a Parquet file per partition), ``out_dir/items.parquet`` and
    the config as ``out_dir/synthetic.json``, so that ``read_parquet`` gives the same source back.

    Runs on ``client`` when given, else on the current Dask scheduler. Returns out_dir.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = generate(config, client=client)
    context = client.as_current() if client is not None else contextlib.nullcontext()
    with context:
        source.interactions.to_parquet(
            out / "interactions", write_index=False, overwrite=True,
            name_function=lambda i: f"part.{i:05d}.parquet",
        )  # fmt: skip
    source.items.to_parquet(out / "items.parquet", index=False)
    (out / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=1))
    return out


def read_parquet(folder: str | Path) -> RawSource:
    """The source ``write_parquet`` wrote into ``folder`` (the same rows, items and facts as ``generate``)."""
    p = Path(folder)
    try:
        config = SyntheticConfig(**json.loads((p / CONFIG_FILE).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"{p / CONFIG_FILE}: not a synthetic data config ({exc})") from None
    for part in ("interactions", "items.parquet"):
        if not (p / part).exists():
            raise DataError(f"{p / part}: missing (the folder is not what `hybridrec data synth` writes)")
    items = pd.read_parquet(p / "items.parquet")
    for column in ("genres", "tags"):
        items[column] = [list(v) for v in items[column]]
    interactions = dd.read_parquet(p / "interactions", columns=list(INTERACTION_COLUMNS))
    return _source(config, interactions, items, interactions.npartitions)
