"""The space the HNSW graph is built and searched in: each signal's part of the fused vectors cut to
the few directions that carry its scores.

The graph only has to find candidates: FusedIndex ranks them exactly from the float32 fused vectors.
Its cost (build and search) is a distance per visited node, linear in the width, and the fused
width is mostly signals whose score lives in a few directions: svd's 512 item columns are
orthonormal singular vectors whose user side is shrunk by s^2 / (s^2 + shrinkage), so most of its
columns carry almost none of a user's score; the sequence signal's 256 likewise.

The cut keeps the fused identity. For signal s with item part x = c_s i_s and user part u = u_s,
the score is <u, x>; with A A^T = E[u u^T] over the trained users and B B^T = E[x x^T] over the
items, ``E[<u, x>^2]`` splits over the singular values of A^T B = U S W^T, and

    <u, x> = <S^1/2 U^T A^+ u, S^1/2 W^T B^+ x>   (exactly, with every singular direction),

so keeping the top r_s directions gives the rank-r_s map of least mean squared score error (the
balanced truncation of the bilinear form): item x -> x @ item_map, user u -> u @ query_map. A
query for blend weights w is [w_s u_s]: each block is mapped on its own, so the weights scale the
blocks of the mapped query just as they scale the fused one, so one graph serves every blend that
weighs the signals roughly as the tuned one does; a blend leaning on a signal the space cut hard
would lose more of its score there (``GraphSpace.loss``) and FusedIndex ranks it exactly.
r_s is the fewest directions holding a share of the signal's mean squared score, and the share
follows the tuned blend (``weighted_shares``): the graph's geometry (item-item inner products over
all blocks) should be the tuned queries', not that of a wide block they hardly weigh. (A and B are
symmetric roots over the moments' non-null directions: Cholesky factors of near-singular moments
blow up in float32.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GraphSpace", "FILE", "weighted_shares"]

FILE = "graph_space.npz"
"""The bundle file that holds a graph space (absent: the graph holds the fused vectors as they are)."""


@dataclass(frozen=True)
class GraphSpace:
    """Block-diagonal maps from the fused space to the graph's (both ``dim x width``, float32), and
    what each signal's block keeps."""

    item_map: np.ndarray
    """Fused item vector (row) @ item_map -> its graph vector."""
    query_map: np.ndarray
    """Fused query (row) @ query_map -> its graph query."""
    widths: dict[str, int]
    """Each signal's directions, in the fused order."""
    dims: dict[str, int]
    """Each signal's fused columns, in the fused order."""
    kept: dict[str, float]
    """Each signal's share of its mean squared score that the graph space keeps."""
    gains: dict[str, float]
    """Each signal's mean squared score per unit of squared user-vector length (over the users the
    space was fit on): what a query's block of that length scores, squared, on average (``loss``)."""

    def __post_init__(self) -> None:
        if self.item_map.ndim != 2 or self.item_map.shape != self.query_map.shape:
            raise ValueError(f"graph space maps have shapes {self.item_map.shape} and {self.query_map.shape}; "
                             "they must be one (dim, width) shape")
        signals = list(self.widths)
        if [list(self.dims), list(self.kept), list(self.gains)] != [signals] * 3:
            raise ValueError(f"graph space records name signals {signals}, {list(self.dims)}, {list(self.kept)} "
                             f"and {list(self.gains)}: they must be one list")
        if sum(self.widths.values()) != self.width or sum(self.dims.values()) != self.dim:
            raise ValueError(f"graph space widths {self.widths} and dims {self.dims} do not add up to its "
                             f"{self.dim} x {self.width} maps")
        for name in ("item_map", "query_map"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"graph space {name} has non-finite values")
        if not all(0 <= v <= 1 for v in self.kept.values()) or not all(np.isfinite(v) and v >= 0
                                                                        for v in self.gains.values()):
            raise ValueError(f"graph space kept shares {self.kept} must be in [0, 1] and gains {self.gains} "
                             "finite and >= 0")
        starts = np.cumsum([0, *self.dims.values()])[:-1]
        object.__setattr__(self, "_starts", starts.astype(np.int64))
        object.__setattr__(self, "_lost", np.array([1.0 - self.kept[s] for s in signals]))
        object.__setattr__(self, "_gains", np.array([self.gains[s] for s in signals]))

    @property
    def dim(self) -> int:
        """The fused width it maps from."""
        return int(self.item_map.shape[0])

    @property
    def width(self) -> int:
        """The graph's width."""
        return int(self.item_map.shape[1])

    @classmethod
    def fit(cls, items: Mapping[str, np.ndarray], users: Mapping[str, np.ndarray],
            share: float | Mapping[str, float]) -> GraphSpace:
        """The space keeping ``share`` (in (0, 1]; one for all or one per signal) of each signal's
        mean squared score.

        ``items[s]``: signal s's fused item columns (c_s i_s, n_items x dim_s); ``users[s]``: its
        user vectors for a sample of users (any count x dim_s); both in the fused order.
        ValueError for a missing or bad share, mismatched widths or non-finite vectors.
        """
        missing = [s for s in items if s not in users or (isinstance(share, Mapping) and s not in share)]
        if missing:
            raise ValueError(f"no user vectors or share for signal(s) {missing}")
        shares = {s: float(share[s] if isinstance(share, Mapping) else share) for s in items}
        for s, value in shares.items():
            if not 0.0 < value <= 1.0:
                raise ValueError(f"share must be in (0, 1], got {value} for {s}")
        blocks = {s: _balanced(np.asarray(items[s]), np.asarray(users[s]), shares[s], s) for s in items}
        dim = sum(b.item_map.shape[0] for b in blocks.values())
        width = sum(b.item_map.shape[1] for b in blocks.values())
        item_map = np.zeros((dim, width), np.float32)
        query_map = np.zeros((dim, width), np.float32)
        row = col = 0
        for b in blocks.values():
            rows, cols = b.item_map.shape
            item_map[row : row + rows, col : col + cols] = b.item_map
            query_map[row : row + rows, col : col + cols] = b.query_map
            row, col = row + rows, col + cols
        return cls(item_map, query_map, {s: int(b.item_map.shape[1]) for s, b in blocks.items()},
                   {s: int(b.item_map.shape[0]) for s, b in blocks.items()}, {s: b.kept for s, b in blocks.items()},
                   {s: b.gain for s, b in blocks.items()})

    def items(self, vectors: np.ndarray, block_rows: int = 65_536) -> np.ndarray:
        """Graph vectors of fused item vectors (in blocks: they may be memory-mapped), float32."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"item vectors have shape {vectors.shape}, the graph space maps {self.dim} columns")
        out = np.empty((len(vectors), self.width), np.float32)
        for start in range(0, len(vectors), block_rows):
            out[start : start + block_rows] = np.asarray(vectors[start : start + block_rows], np.float32) @ self.item_map
        return out

    def queries(self, queries: np.ndarray) -> np.ndarray:
        """Graph queries of fused queries (m x dim), float32."""
        return np.asarray(queries, np.float32) @ self.query_map

    def loss(self, queries: np.ndarray) -> np.ndarray:
        """(m,) the share of each fused query's mean squared score the graph space loses: its
        signals' lost shares weighed by what each block of the query scores, squared, on average
        (``gains`` times the block's squared length). The tuned blend's queries lose about
        1 - graph_share; one that leans on a signal the blend hardly weighs loses up to 1 - the
        floor of its share, and FusedIndex.search ranks it exactly (IndexConfig.graph_max_loss)."""
        q = np.asarray(queries, np.float64)
        blocks = np.add.reduceat(q * q, self._starts, axis=1) * self._gains
        total = blocks.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (blocks @ self._lost) / total, 0.0)

    def save(self, path: str | Path) -> None:
        signals = list(self.widths)
        np.savez(path, item_map=self.item_map, query_map=self.query_map, signals=np.array(signals),
                 widths=np.array([self.widths[s] for s in signals], np.int64),
                 dims=np.array([self.dims[s] for s in signals], np.int64),
                 kept=np.array([self.kept[s] for s in signals]), gains=np.array([self.gains[s] for s in signals]))

    @classmethod
    def load(cls, path: str | Path) -> GraphSpace:
        """ValueError naming the file when it is not a graph space."""
        try:
            with np.load(path, allow_pickle=False) as data:
                signals = data["signals"].tolist()

                def record(name: str, kind: type) -> dict[str, Any]:
                    return dict(zip(signals, map(kind, data[name].tolist()), strict=True))

                return cls(data["item_map"].astype(np.float32), data["query_map"].astype(np.float32),
                           record("widths", int), record("dims", int), record("kept", float), record("gains", float))
        except (OSError, KeyError, ValueError, TypeError, EOFError) as exc:
            raise ValueError(f"{path} is not a readable graph space: {exc}") from exc


def weighted_shares(weights: Mapping[str, float], share: float, floor: float) -> dict[str, float]:
    """Per-signal shares for blend ``weights``: the signals' errors weighed in the blend's units
    are alike, ``(w_s / w_max)^2 (1 - share_s) = 1 - share``, and no share is below ``floor``.

    On the 25M synthetic scale bundle (62,423 items; tuned weights lightgcn 0.65, popularity 0.31,
    svd 0.04, the others below 0.005), share 0.999 and floor 0.8 kept 101 of the 993 fused
    columns (lightgcn 20, als 42, svd 36, popularity, content and sequence 1 each); with
    connectivity 64 the graph built in 11 s and gave the exact top 10 (1,000 users, their train
    items excluded) for 99.9% of tuned queries and 100% of equal-weight ones, 0.68 ms a query on
    one core. The same share for every signal did worse at any width: 0.95 (260 columns, svd 125)
    95.3%, 0.99 (533 columns) 99.2% at 1.8 ms a query.
    """
    if not 0.0 < share <= 1.0 or not 0.0 < floor <= 1.0:
        raise ValueError(f"share and floor must be in (0, 1], got {share} and {floor}")
    top = max(float(w) for w in weights.values())
    if not top > 0:
        raise ValueError(f"blend weights must have a positive one, got {dict(weights)}")
    out = {}
    for s, w in weights.items():
        lead = float(w) / top
        out[s] = min(1.0, max(floor, 1.0 - (1.0 - share) / max(lead, 1e-12) ** 2))
    return out


@dataclass(frozen=True)
class _Block:
    item_map: np.ndarray
    query_map: np.ndarray
    kept: float
    gain: float


def _balanced(items: np.ndarray, users: np.ndarray, share: float, name: str) -> _Block:
    """One signal's maps (dim_s x r_s each) and what they keep (see the module docstring)."""
    dim = items.shape[1]
    if items.ndim != 2 or users.ndim != 2 or users.shape[1] != dim or len(users) == 0 or len(items) == 0:
        raise ValueError(f"{name}: need item and user vectors of one width, got {items.shape} and {users.shape}")
    if not (np.isfinite(items).all() and np.isfinite(users).all()):
        raise ValueError(f"{name}: item or user vectors have non-finite values")
    second_users = _second_moment(users)
    a, a_inverse = _root(second_users)
    b, b_inverse = _root(_second_moment(items))
    energy = np.zeros(0)
    if a.shape[1] and b.shape[1]:
        u, s, wt = np.linalg.svd(a.T @ b, full_matrices=False)
        energy = s**2
    total = float(energy.sum())
    if total <= 0.0:  # scores all zero: one zero direction keeps the block's place
        return _Block(np.zeros((dim, 1), np.float32), np.zeros((dim, 1), np.float32), 1.0, 0.0)
    r = min(len(s), int(np.searchsorted(np.cumsum(energy) / total, share - 1e-12)) + 1)
    root = np.sqrt(s[:r])
    item_map = b_inverse.T @ (wt[:r].T * root)  # (B^+)^T W_r S_r^1/2
    query_map = a_inverse.T @ (u[:, :r] * root)  # (A^+)^T U_r S_r^1/2
    return _Block(item_map.astype(np.float32), query_map.astype(np.float32), min(1.0, float(energy[:r].sum()) / total),
                  total / float(np.trace(second_users)))


def _second_moment(rows: np.ndarray, block_rows: int = 65_536) -> np.ndarray:
    total = np.zeros((rows.shape[1], rows.shape[1]), np.float64)
    for start in range(0, len(rows), block_rows):
        block = np.asarray(rows[start : start + block_rows], np.float64)
        total += block.T @ block
    return total / len(rows)


def _root(second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, R^+) with R R^T = ``second`` (dim x k), over its eigen-directions above 1e-10 of the
    largest: the others carry no score (a signal's columns may be dependent, e.g. a constant one)."""
    values, vectors = np.linalg.eigh(second)
    keep = values > 1e-10 * max(float(values[-1]), 0.0)
    values, vectors = values[keep], vectors[:, keep]
    return vectors * np.sqrt(values), (vectors / np.sqrt(values)).T
