"""LightGCN at MovieLens-25M size on one device: spectral basis, seconds per epoch, validation NDCG@10.

    python bench/lightgcn_gpu.py --interactions 200000 --device cpu --out /tmp/lgcn    # small, any machine
    python bench/lightgcn_gpu.py --device cuda --batches auto 16384 --time-limit 130 --budget 350 \
        --out bench/results/lightgcn_gpu                                                 # ~6 minutes

Builds a MovieLens-25M-shaped interaction graph (162,541 users, 59,047 items, 25,000,095
interactions at full size; both scaled down with --interactions), splits it by the protocol
(DESIGN.md: per user by time, the last ceil(20%) to test, validation cut from train the same way)
and trains LightGCN with the project's trainer (models.lightgcn_trainer.LightGCNTrainer) on 'fit',
early-stopped on a seeded sample of validation users, within a wall-clock limit. It prints and
writes (--out/lightgcn_<device>_<interactions>.json, after every run, so a run cut short keeps what it finished) the
time of the spectral basis (models.lightgcn_trainer.spectral_basis), seconds per epoch, validation NDCG@10 per evaluated epoch, the
epoch of the validation-picked best, peak GPU memory, and test NDCG@10 of the kept embeddings.

Each --batches entry is one run: 'auto' is LightGCNConfig's default batch, an integer is that
batch. An epoch draws --epoch-size positives (bench/scale.py's default), so early stopping looks
at validation every few million positives instead of every full pass. A run starts only if its first epoch is expected to end inside
--budget (estimated from the seconds per step of the runs before it).

The generator is numpy alone (no Dask), so the bench runs where only torch is installed: users
have Dirichlet tastes over latent topics, each item belongs to one topic, item popularity follows
a power law, user activity is heavy-tailed (log-normal, at least 20 interactions as in
MovieLens), and a share of picks follows popularity alone. It is not etl.sources.synthetic (which
generates partitions on Dask workers): the figures here are for this graph.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from etl.metrics import evaluate  # noqa: E402
from models.lightgcn import LightGCNConfig  # noqa: E402
from models.lightgcn_trainer import LightGCNTrainer  # noqa: E402

#: MovieLens-25M: interactions, users, rated items.
ML25M = (25_000_095, 162_541, 59_047)
DEFAULT_BATCH = LightGCNConfig().batch_size
#: Rounds of drawing by taste and popularity, then uniform rounds for what is still missing.
MODEL_ROUNDS, UNIFORM_ROUNDS = 2, 20
#: Draws per missing interaction in a round (duplicates are dropped).
OVERSAMPLE = 1.5


@dataclass(frozen=True)
class GraphShape:
    """What to generate: sizes and the knobs of the latent-topic model."""

    interactions: int = ML25M[0]
    users: int = ML25M[1]
    items: int = ML25M[2]
    topics: int = 24
    """Latent topics behind user tastes; each item belongs to one."""
    taste_concentration: float = 0.15
    """Dirichlet concentration of user tastes; smaller: users stick to fewer topics."""
    popularity_exponent: float = 0.9
    """Zipf exponent of item popularity."""
    activity_sigma: float = 1.2
    """Log-normal sigma of user activity (heavy tail)."""
    min_per_user: int = 20
    """Least interactions per user (MovieLens: 20), lowered when the total cannot afford it."""
    popularity_share: float = 0.15
    """Share of picks drawn by popularity alone, ignoring taste."""
    seed: int = 0

    @classmethod
    def scaled(cls, interactions: int, seed: int = 0) -> GraphShape:
        """MovieLens-25M's shape for fewer interactions: users ~ n^0.8, items ~ n^0.5 (both capped)."""
        if interactions >= ML25M[0]:
            return cls(interactions=interactions, seed=seed)
        r = interactions / ML25M[0]
        users = max(20, round(ML25M[1] * r**0.8))
        items = max(50, round(ML25M[2] * r**0.5))
        return cls(interactions=interactions, users=users, items=items, seed=seed)

    def __post_init__(self) -> None:
        if self.users * self.items < 2 * self.interactions:
            raise ValueError(
                f"{self.interactions} interactions do not fit in {self.users} x {self.items} at half density"
            )


def user_activity(shape: GraphShape, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: at least the minimum, the rest log-normal, capped at a quarter of the items."""
    least = min(shape.min_per_user, shape.interactions // shape.users)
    cap = max(least + 1, shape.items // 4)
    counts = np.full(shape.users, least, dtype=np.int64)
    weights = rng.lognormal(0.0, shape.activity_sigma, size=shape.users)
    left = shape.interactions - counts.sum()
    while left > 0:
        open_ = counts < cap
        add = rng.multinomial(left, weights * open_ / (weights * open_).sum())
        counts = np.minimum(counts + add, cap)
        left = shape.interactions - counts.sum()
    return counts


def _stacked_draw(cdf: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each draw, the column of row ``rows[j]`` of a row-stochastic cdf (rows x cols) hit by ``u[j]``."""
    cols = cdf.shape[1]
    stacked = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()
    at = np.searchsorted(stacked, rows + u, side="right")
    return np.minimum(at - rows * cols, cols - 1)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2.4's np.unique hashes first, several times slower on 25M int64)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def generate(shape: GraphShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, timestamps) of exactly ``shape.interactions`` distinct user-item pairs."""
    rng = np.random.default_rng(shape.seed)
    counts = user_activity(shape, rng)
    taste = rng.dirichlet(np.full(shape.topics, shape.taste_concentration), size=shape.users)
    taste_cdf = np.cumsum(taste, axis=1)
    taste_cdf /= taste_cdf[:, -1:]
    item_topic = rng.permutation(np.arange(shape.items) % shape.topics)  # no topic left empty
    popularity = rng.permutation(np.arange(1, shape.items + 1, dtype=np.float64) ** -shape.popularity_exponent)
    # Items grouped by topic; within a topic, a popularity cdf offset by the topic number.
    by_topic = np.argsort(item_topic, kind="stable")
    topic_start = np.searchsorted(item_topic[by_topic], np.arange(shape.topics + 1))
    within = popularity[by_topic].copy()
    for t in range(shape.topics):
        seg = slice(topic_start[t], topic_start[t + 1])
        within[seg] = np.cumsum(within[seg]) / within[seg].sum()
    stacked_items = within + item_topic[by_topic]
    global_cdf = np.cumsum(popularity) / popularity.sum()

    keys = np.empty(0, dtype=np.int64)
    want = counts.copy()
    for round_ in range(MODEL_ROUNDS + UNIFORM_ROUNDS):
        started = time.perf_counter()
        draw_users = np.repeat(np.arange(shape.users, dtype=np.int64), np.ceil(want * OVERSAMPLE).astype(np.int64))
        n = draw_users.size
        if round_ < MODEL_ROUNDS:
            topic = _stacked_draw(taste_cdf, draw_users, rng.random(n))
            at = np.searchsorted(stacked_items, topic + rng.random(n), side="right")
            picks = by_topic[np.minimum(at, shape.items - 1)]
            noise = rng.random(n) < shape.popularity_share
            at = np.searchsorted(global_cdf, rng.random(int(noise.sum())), side="right")
            picks[noise] = np.minimum(at, shape.items - 1)
        else:  # what taste and popularity did not fill (users of narrow taste and high activity)
            picks = rng.integers(0, shape.items, size=n)
        keys = _sorted_unique(np.concatenate([keys, draw_users * shape.items + picks]))
        want = np.maximum(counts - np.bincount(keys // shape.items, minlength=shape.users), 0)
        log(f"  draw round {round_ + 1}: {n:,} draws, {keys.size:,} distinct pairs, {int(want.sum()):,} missing "
            f"({time.perf_counter() - started:.1f} s)")
        if not want.any():
            break
    # Per user, keep a random subset of its distinct picks of the size of its activity (keys are
    # sorted by user; user + a uniform number orders each user's picks at random).
    user = keys // shape.items
    order = np.argsort(user + rng.random(keys.size))
    start = np.concatenate([[0], np.cumsum(np.bincount(user, minlength=shape.users))[:-1]])
    rank = np.arange(keys.size) - start[user[order]]
    keys = keys[np.sort(order[rank < counts[user[order]]])]
    if keys.size != shape.interactions:
        raise RuntimeError(f"generated {keys.size:,} distinct interactions, not {shape.interactions:,}")
    times = rng.random(keys.size)
    return keys // shape.items, keys % shape.items, times


def protocol_split(users: np.ndarray, times: np.ndarray, n_users: int) -> np.ndarray:
    """0 fit, 1 validation, 2 test per interaction (DESIGN.md: per user by time, last ceil(20%) of
    users with >= 5 interactions to test; validation cut from the rest the same way)."""
    order = np.argsort(users + times)  # by user, then time (times are in [0, 1))
    counts = np.bincount(users, minlength=n_users)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty(users.size, dtype=np.int64)
    pos[order] = np.arange(users.size) - start[users[order]]
    test_n = np.where(counts >= 5, np.ceil(0.2 * counts), 0).astype(np.int64)
    train_n = counts - test_n
    val_n = np.where(train_n >= 5, np.ceil(0.2 * train_n), 0).astype(np.int64)
    part = np.zeros(users.size, dtype=np.int8)
    part[pos >= train_n[users] - val_n[users]] = 1
    part[pos >= train_n[users]] = 2
    return part


def matrix(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(users.size, dtype=np.float32), (users, items)), shape=shape)


def sample_rows(m: sp.csr_matrix, size: int, rng: np.random.Generator) -> sp.csr_matrix:
    """``m`` with only a seeded sample of its non-empty rows kept."""
    rows = np.flatnonzero(np.diff(m.indptr) > 0)
    if size >= rows.size:
        return m
    keep = np.zeros(m.shape[0], dtype=np.float32)
    keep[rng.choice(rows, size=size, replace=False)] = 1.0
    return sp.csr_matrix(sp.diags(keep) @ m)


def batch_for(spec: str) -> int:
    """'auto': LightGCNConfig's default batch; else the integer given."""
    return DEFAULT_BATCH if spec == "auto" else int(spec)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=ML25M[0], help="graph size (users and items scale with it)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--batches", nargs="+", default=["auto"], help="one run per entry: 'auto' or a batch size")
    parser.add_argument("--epoch-size", type=int, default=2**20, help="positives an epoch draws (at most all)")
    parser.add_argument("--epochs", type=int, default=200, help="most epochs per run")
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--eval-users", type=int, default=10_000, help="validation and test users sampled")
    parser.add_argument("--time-limit", type=float, default=200.0, help="seconds of epochs per run")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole script (runs that would overrun it are skipped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    t0 = time.perf_counter()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)

    shape = GraphShape.scaled(args.interactions, seed=args.seed)
    log(f"generating {shape.interactions:,} interactions, {shape.users:,} users x {shape.items:,} items")
    start = time.perf_counter()
    users, items, times = generate(shape)
    gen_s = time.perf_counter() - start
    part = protocol_split(users, times, shape.users)
    dims = (shape.users, shape.items)
    fit = matrix(users[part == 0], items[part == 0], dims)
    val = matrix(users[part == 1], items[part == 1], dims)
    test = matrix(users[part == 2], items[part == 2], dims)
    train = (fit + val).tocsr()
    del users, items, times, part
    split_s = time.perf_counter() - start - gen_s
    degrees = np.diff(train.tocsc().indptr)
    log(f"generated in {gen_s:.1f} s, split in {split_s:.1f} s: fit {fit.nnz:,}, validation {val.nnz:,}, "
        f"test {test.nnz:,}; item degree max {degrees.max():,}, median {int(np.median(degrees))}")

    rng = np.random.default_rng(args.seed)
    test_sample = sample_rows(test, args.eval_users, rng)
    val_sample = sample_rows(val, args.eval_users, np.random.default_rng(args.seed))
    popularity = np.diff(fit.tocsc().indptr).astype(np.float32)
    pop_val = evaluate(lambda rows: np.tile(popularity, (rows.size, 1)), fit, val_sample)["ndcg@10"]
    val_users = int(np.count_nonzero(np.diff(val.indptr)))
    log(f"popularity: validation NDCG@10 {pop_val:.4f} ({min(args.eval_users, val_users):,} users)")

    report: dict[str, Any] = {
        "bench": "lightgcn_gpu", "graph": asdict(shape), "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
        "load_average_before": os.getloadavg()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "sizes": {"fit": int(fit.nnz), "validation": int(val.nnz), "test": int(test.nnz)},
        "generate_seconds": gen_s, "split_seconds": split_s, "eval_users": args.eval_users,
        "popularity_validation_ndcg": pop_val, "runs": [],
    }
    write(args.out, report)
    step_seconds: float | None = None
    for spec in args.batches:
        batch = batch_for(spec)
        steps = -(-min(fit.nnz, args.epoch_size) // batch)
        elapsed = time.perf_counter() - t0
        if args.budget is not None and step_seconds is not None:
            expected = elapsed + 60 + steps * step_seconds * 1.3  # basis and one epoch, with margin
            if expected > args.budget:
                log(f"batch {batch:,}: skipped, its first epoch ({steps} steps) would end near {expected:.0f} s "
                    f"of a {args.budget:.0f} s budget")
                report["runs"].append({"batch": batch, "steps_per_epoch": steps, "skipped": True})
                write(args.out, report)
                continue
        limit = args.time_limit if args.budget is None else max(1.0, min(args.time_limit, args.budget - elapsed - 60))
        config = LightGCNConfig(batch_size=batch, epoch_size=args.epoch_size, epochs=args.epochs, eval_every=min(args.eval_every, args.epochs),
                                patience=args.patience, validation_users=args.eval_users)
        log(f"run: batch {batch:,} ({steps} steps an epoch), time limit {limit:.0f} s, on {device}")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        result = LightGCNTrainer(config, device=str(device), seed=args.seed, time_limit=limit).fit(fit, val)
        wall = time.perf_counter() - start
        user_emb, item_emb = result.user_embeddings, result.item_embeddings
        test_metrics = evaluate(lambda rows: user_emb[rows] @ item_emb.T, train, test_sample)
        epochs = np.asarray(result.epoch_seconds)
        step_seconds = float(np.median(epochs)) / steps
        run = {
            "batch": batch, "steps_per_epoch": steps, "config": asdict(config), "time_limit": limit,
            "wall_seconds": wall, "basis_seconds": result.basis_seconds,
            "epoch_seconds": result.epoch_seconds, "median_epoch_seconds": float(np.median(epochs)),
            "step_seconds": step_seconds, "epochs_run": result.epochs_run, "history": result.history,
            "best_epoch": result.best_epoch, "best_validation_ndcg": result.best_ndcg,
            "test_ndcg": test_metrics["ndcg@10"], "test_recall": test_metrics["recall@10"],
            "test_coverage": test_metrics["coverage@10"], "test_users": test_metrics["users"],
            "device": result.device, "load_average": os.getloadavg()[0],
            "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        }
        report["runs"].append(run)
        write(args.out, report)
        log(f"batch {batch:,}: basis {result.basis_seconds:.1f} s, "
            f"median epoch {run['median_epoch_seconds']:.2f} s "
            f"({step_seconds * 1000:.1f} ms a step), {result.epochs_run} epochs, best validation NDCG@10 "
            f"{result.best_ndcg} at epoch {result.best_epoch}, test NDCG@10 {run['test_ndcg']:.4f}, peak GPU MiB "
            f"{run['peak_gpu_mib'] if run['peak_gpu_mib'] is None else round(run['peak_gpu_mib'])}")
    report["total_seconds"] = time.perf_counter() - t0
    write(args.out, report)
    log(f"done in {report['total_seconds']:.0f} s")
    return report


def write(out: Path | None, report: dict[str, Any]) -> None:
    """``out``/lightgcn_<device type>_<interactions>.json, replaced atomically."""
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"lightgcn_{report['device'].split(':')[0]}_{report['graph']['interactions']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
