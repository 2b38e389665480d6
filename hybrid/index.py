"""One usearch inner-product index over the fused item vectors, and item filters.

The fused identity (../shared/DESIGN.md) makes <query, item> the blended score for any weights,
so a single HNSW index answers every variant. HNSW is approximate and cannot filter, so a search
over-fetches, rescores the candidates exactly (numpy, the same float32 arithmetic as a brute-force
ranking), drops excluded and disallowed items and keeps the top k; when the eligible set is small
(a selective filter) or HNSW cannot supply k eligible items after growing its fetch, it ranks the
eligible items exactly instead (an int8 copy of the vectors screens out the items that cannot
reach the top k, hybrid/screening.py; the rest are scored in float32). Filters therefore never
return a wrong item, and a filter that keeps fewer than k items returns all of them.

The graph may live in a graph space (hybrid/graph_space.py): each item's fused vector cut to the
directions that carry the tuned blend's scores, queries mapped alike; candidates are still ranked
from the fused vectors, and a query the space serves poorly (``GraphSpace.loss`` above
``IndexConfig.graph_max_loss``) is ranked exactly.
"""

from __future__ import annotations

import math
import mmap
import threading
from collections.abc import Sequence
import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from usearch.index import Index

from hybrid.graph_space import GraphSpace
from hybrid.item_table import ItemTable
from hybrid.screening import ScreenedVectors, exact_scores, ranked

__all__ = ["IndexConfig", "FusedIndex", "Graph", "ItemFilter", "ItemCatalog"]


@dataclass(frozen=True)
class IndexConfig:
    """HNSW build/search settings and the exact-search thresholds.

    Defaults measured on ml-latest-small (9,742 items; ALS 64 + content 32 + popularity fused,
    content with its popularity lift; 610 users, their train items excluded), recall@10 of
    search() against the exact blend for a tuned-like blend (als 1, content 0.2, popularity 0.3):
    M=32 0.977 (ef 256) - 0.980 (ef 1024); M=64 0.992 (ef 256), 0.994 (ef 512), 0.996 (ef 1024),
    at 0.4-0.8 ms a query. Item norms that follow popularity (content's lift, popularity itself)
    need a denser graph than cosine data does; the candidate list matters less than the degree.
    """

    connectivity: int = 64
    """Graph degree (usearch's M)."""
    expansion_add: int = 256
    """Candidate list size while building (efConstruction)."""
    expansion_search: int = 128
    """Candidate list size while searching (ef); the effective ef is max(this, fetch). 256 before
    graph spaces; at 128, ml-latest-small's recall@10 (tests/test_index.py, real signals) was 0.9920
    against 0.9926 over the fused vectors and 0.9982 against 0.9984 in a graph space, and the 25M
    scale bundle's tuned queries got the exact top 10 for 99.9% of 1,000 users (its searches are
    mostly deeper than either: a user's excluded history adds to the fetch)."""
    overfetch: int = 4
    """A search first fetches overfetch * k candidates plus the excluded count (at least
    expansion_search), scaled up by the inverse share of allowed items."""
    max_growth: int = 3
    """How many times a search doubles its fetch before falling back to brute force."""
    exact_share: float = 0.05
    """Brute force when the eligible items are fewer than this share of the catalogue ..."""
    exact_count: int = 2000
    """... or fewer than this many items."""
    graph_share: float | None = 0.999
    """Share of the tuned blend's lead signal's mean squared score that the graph's space keeps
    (hybrid/graph_space.py, fit when a bundle is published; the others keep theirs in proportion,
    graph_space.weighted_shares): the graph holds each item's fused vector cut to the directions
    that carry the blend's scores; None: the fused vectors as they are."""
    graph_floor: float = 0.8
    """The least share of any signal's mean squared score the graph's space keeps."""
    graph_max_loss: float = 0.05
    """Queries that would lose more than this share of their mean squared score in the graph's
    space (``GraphSpace.loss``: a blend leaning on signals the tuned one hardly weighs) are ranked
    exactly. Tuned queries lose about 1 - graph_share; on ml-latest-small an ALS-only query's
    recall@10 through a graph holding 0.8 of ALS fell to 0.948 (0.996 holding 0.999)."""
    min_active_share: float = 0.4
    """Queries whose non-zero coordinates carry less than this share of the item vectors' energy
    (mean squared value per coordinate, summed) are ranked exactly: the graph is built on whole
    fused vectors and navigates a subspace query poorly. On ml-latest-small ALS alone holds 0.27
    of the energy (content 0.45, popularity 0.29) and its HNSW recall@10 was 0.92; ALS + content
    (0.71) 0.994."""

    def __post_init__(self) -> None:
        for name in ("connectivity", "expansion_add", "expansion_search", "overfetch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_growth < 0 or self.exact_count < 0:
            raise ValueError(
                f"IndexConfig.max_growth and exact_count must be >= 0, got {self.max_growth}, {self.exact_count}"
            )
        if self.graph_share is not None and not 0.0 < self.graph_share <= 1.0:
            raise ValueError(f"IndexConfig.graph_share must be in (0, 1] or None, got {self.graph_share!r}")
        if not 0.0 < self.graph_floor <= 1.0:
            raise ValueError(f"IndexConfig.graph_floor must be in (0, 1], got {self.graph_floor!r}")
        for name in ("exact_share", "min_active_share", "graph_max_loss"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"IndexConfig.{name} must be in [0, 1], got {getattr(self, name)}")


ExcludeLike = np.ndarray | Sequence[int] | None


GRAPH_DTYPE = "f16"
"""The scalar type of the usearch graph's vectors. Its candidates are ranked exactly from the
float32 fused vectors (``FusedIndex._rank``), so the graph only has to find them. Over the
six-signal ml-latest-small bundle's 9,742 x 993 fused vectors (connectivity 64, expansion_add and
_search 256, the 610 users' queries, 256 candidates each rescored in float32; two alternated
rounds, 2-core AMD EPYC at load 1.4-1.5): f16 built in 3.6-4.1 s against 8.8-11.5 s for f32,
searched in 1.6-2.5 ms a query against 4.1-4.3, took 33.7 MB against 67.2 (usearch's
``memory_usage``), and gave the exact
top 10 for 608 of 610 queries against 609 (recall@10 0.9998 against 1.0). i8 is unusable here:
usearch quantises i8 for vectors within [-1, 1], and fused coordinates span a wide range (0 exact
top-10s even with the vectors scaled into it). Vectors with a coordinate beyond half precision's
range get an f32 graph (``graph_dtype``)."""


def graph_dtype(vectors: np.ndarray) -> str:
    """GRAPH_DTYPE, or 'f32' when a coordinate of ``vectors`` is beyond half precision's range (it
    would be infinite in the graph and mislead its navigation)."""
    largest = max(float(vectors.max(initial=0.0)), -float(vectors.min(initial=0.0)))  # no |vectors| copy
    return GRAPH_DTYPE if largest <= float(np.finfo(np.float16).max) else "f32"


class Graph:
    """The usearch graph of a FusedIndex, or its file, restored on first use (``get``).

    A served catalogue up to graphql_api.engine.EXACT_SCAN_ITEMS is ranked exactly and never
    searches the graph: restoring it only on first use keeps its mapped nodes (5 MiB for the
    six-signal ml-latest-small bundle) out of such an API worker. The file's header is read at
    once (``Index.metadata``: format, metric, size), so a file that is not a usearch index fails
    where it is loaded; an extended index shares its Graph, so the file is restored once."""

    def __init__(self, index: Index | None, count: int, ndim: int, dtype: str, path: str | None = None,
                 view: bool = True) -> None:
        """Use ``Graph.of`` (an index at hand) or ``Graph.file`` (a saved one)."""
        self._index, self.count, self.ndim = index, count, ndim
        self._path, self._view = path, view
        self.dtype = dtype
        """The scalar kind of the graph's vectors ('f16', 'f32'), as usearch names it."""
        self._lock = threading.Lock()

    @classmethod
    def of(cls, index: Index) -> Graph:
        return cls(index, len(index), int(index.ndim), index.dtype.name.lower())

    @classmethod
    def file(cls, path: str | Path, view: bool = True) -> Graph:
        """The graph saved at ``path`` (``view``: memory-mapped when restored); ValueError when the
        header is not a usearch inner-product index's."""
        try:
            head = Index.metadata(str(path))
        except (ValueError, RuntimeError, OSError) as exc:
            raise ValueError(f"{path} is not a readable usearch index: {exc}") from exc
        if head is None:
            raise ValueError(f"{path} is not a readable usearch index")
        if head["kind_metric"].name != "IP":
            raise ValueError(f"{path} uses metric {head['kind_metric'].name}, expected IP")
        return cls(None, int(head["count_present"]), int(head["dimensions"]), head["kind_scalar"].name.lower(),
                   str(path), view)

    @property
    def restored(self) -> bool:
        return self._index is not None

    def get(self) -> Index:
        """The usearch index (restored from the file the first time)."""
        if self._index is None:
            with self._lock:
                if self._index is None:
                    try:
                        index = Index.restore(self._path, view=self._view)
                    except (ValueError, RuntimeError, OSError) as exc:
                        raise ValueError(f"{self._path} is not a readable usearch index: {exc}") from exc
                    if index is None or (len(index), int(index.ndim)) != (self.count, self.ndim):
                        raise ValueError(f"{self._path} does not restore to its header's {self.count} x {self.ndim}")
                    self._index = index
        return self._index


class FusedIndex:
    """Top-k by inner product over fused item vectors (keys = item rows)."""

    def __init__(
        self, index: Index | Graph, vectors: np.ndarray, config: IndexConfig | None = None, *, mapped: bool = False,
        space: GraphSpace | None = None,
    ) -> None:
        self.config = config or IndexConfig()
        self.mapped = mapped
        """True when the graph is a memory-mapped view of its file (read-only)."""
        graph = index if isinstance(index, Graph) else Graph.of(index)
        if space is not None and space.width != graph.ndim:
            raise ValueError(f"the graph space is {space.width} wide, the graph {graph.ndim}")
        dim = graph.ndim if space is None else space.dim
        if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.shape[0] < graph.count:
            raise ValueError(f"vectors have shape {vectors.shape}, index holds {graph.count} x {dim}")
        self.space = space
        """Where the graph lives (hybrid/graph_space.py); None: the fused vectors as they are."""
        self._pending = np.arange(graph.count, vectors.shape[0], dtype=np.int64)
        """Rows after the graph's (items added while serving, ``extended``): every graph search
        ranks them too, exactly."""
        self.graph = graph
        self.vectors = vectors
        self._rows = np.asarray(vectors)  # a plain view: np.memmap's own __getitem__ costs ~0.1 ms a gather
        self.stats = {"hnsw": 0, "exact": 0, "grown": 0}
        """How searches were answered (for benches and tests)."""
        self._energy: np.ndarray | None = None
        self._screen: ScreenedVectors | None = None
        self._inverse_norms: dict[tuple[int, int], np.ndarray] = {}
        self._columns: dict[tuple[int, int], np.ndarray] = {}

    @property
    def screen(self) -> ScreenedVectors:
        """The int8 copy of the vectors that exact searches screen with (built on first use)."""
        if self._screen is None:
            self._screen = ScreenedVectors(self._rows)
        return self._screen

    @property
    def energy(self) -> np.ndarray:
        """(dim,) share of the item vectors' mean squared value on each coordinate (sums to 1)."""
        if self._energy is None:
            total = np.zeros(self.vectors.shape[1], dtype=np.float64)
            for start in range(0, len(self.vectors), 65536):  # in blocks: the vectors may be memory-mapped
                block = np.asarray(self.vectors[start : start + 65536], dtype=np.float64)
                total += np.einsum("ij,ij->j", block, block)
            self._energy = total / total.sum() if total.sum() > 0 else np.full(len(total), 1.0 / len(total))
            self.release_pages()
        return self._energy

    def release_pages(self) -> None:
        """Let the kernel take back this process's pages of memory-mapped vectors (np.memmap) after
        a pass over every row (the int8 screen's build, ``energy``, a warm-up): they count in the
        process's RSS until then, though serving reads only the rows it rescores, which fault back
        in from the file. Vectors in memory are left alone."""
        mapping = getattr(self.vectors, "_mmap", None)  # np.memmap's mapping of the whole file
        if isinstance(mapping, mmap.mmap) and hasattr(mapping, "madvise"):
            mapping.madvise(mmap.MADV_DONTNEED)

    # -- construction and persistence ------------------------------------------------------------
    @classmethod
    def build(cls, vectors: np.ndarray, config: IndexConfig | None = None, threads: int = 0,
              space: GraphSpace | None = None) -> FusedIndex:
        """An index over ``vectors`` (n_items x dim); row i gets key i. ``space``: the graph holds
        each item's vector mapped into it (candidates are still ranked from ``vectors``)."""
        config = config or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise ValueError(f"vectors must be a non-empty 2-d array, got shape {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("fused item vectors have non-finite values")
        nodes = vectors if space is None else space.items(vectors)
        index = Index(
            ndim=nodes.shape[1],
            metric="ip",
            dtype=graph_dtype(nodes),
            connectivity=config.connectivity,
            expansion_add=config.expansion_add,
            expansion_search=config.expansion_search,
        )
        index.add(np.arange(len(nodes), dtype=np.uint64), nodes, threads=threads)
        return cls(index, vectors, config, space=space)

    def extended(self, vectors: np.ndarray) -> FusedIndex:
        """A new index over these items and ``vectors`` appended after them (rows continue); this
        one is unchanged. The graph is shared, not grown: the appended rows are ranked exactly
        beside every graph search's candidates (and by every exact search), which costs a product
        per added row and query, while inserting them would cost ~14 ms a row at 993 dims on a
        loaded 2-core machine (0.71 s for 50 rows into ml-latest-small's graph) on every catalogue
        change. The next training run puts them in the graph."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not np.isfinite(vectors).all():
            raise ValueError("added item vectors have non-finite values")
        return type(self)(self.graph, np.concatenate([self._rows, vectors]), dataclasses.replace(self.config),
                          mapped=self.mapped, space=self.space)

    def save(self, path: str | Path) -> None:
        """Write the usearch file (graph and vectors)."""
        if len(self._pending):
            raise ValueError(f"an extended index ({len(self._pending)} rows outside the graph) is not saved: build one")
        self.graph.get().save(str(path))

    @classmethod
    def load(
        cls,
        path: str | Path,
        vectors: np.ndarray,
        mmap: bool = True,
        config: IndexConfig | None = None,
        space: GraphSpace | None = None,
    ) -> FusedIndex:
        """Open a saved index; ``mmap`` views the file instead of reading it into memory. The
        header is checked now, the graph restored on the first search that needs it (``Graph``).

        ``vectors``: the float32 fused vectors the graph was built from (e.g. a memory-mapped npy),
        which rank its candidates exactly: the graph holds them in ``Graph.dtype`` (``GRAPH_DTYPE``;
        bundles published before it was f16, and vectors beyond its range, hold f32).
        ValueError when their shape is not the graph's (or, with ``space``, the space's).
        """
        graph = Graph.file(path, view=mmap)
        dim = graph.ndim if space is None else space.dim
        if np.shape(vectors) != (graph.count, dim):
            raise ValueError(f"vectors have shape {np.shape(vectors)}, the graph holds {graph.count} x {dim}")
        return cls(graph, vectors, config, mapped=mmap, space=space)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def dim(self) -> int:
        """The fused width (queries and item vectors)."""
        return int(self._rows.shape[1])

    # -- search ------------------------------------------------------------------------------
    def search(
        self,
        query: np.ndarray,
        k: int,
        exclude: ExcludeLike | Sequence[ExcludeLike] | sp.csr_matrix = None,
        allowed: np.ndarray | Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item rows and fused scores, best first (ties: lower row first).

        query: (dim,) -> 1-d arrays with at most k entries (fewer when fewer items are eligible);
        (m, dim) -> (m, k) arrays padded with -1 / -inf. exclude: item rows to leave out (for a
        batch: one array for every query, a sequence of arrays or a CSR with a row per query).
        allowed: a boolean mask over item rows or an array of allowed rows (shared by the batch).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = np.asarray(query, dtype=np.float32)
        single = q.ndim == 1
        q = np.atleast_2d(q)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query has shape {np.shape(query)}, expected (..., {self.dim})")
        if not np.isfinite(q).all():
            raise ValueError("query has non-finite values")
        allowed_mask = self._allowed_mask(allowed)
        excludes = self._excludes(exclude, len(q), single)

        rows = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        n_allowed = len(self) if allowed_mask is None else int(allowed_mask.sum())
        share = n_allowed / max(len(self), 1)
        fetch = np.zeros(len(q), dtype=np.int64)
        exact: list[int] = []
        active = (q != 0) @ self.energy
        lost = np.zeros(len(q)) if self.space is None else self.space.loss(q)
        for j, ex in enumerate(excludes):
            n_ex = len(ex) if allowed_mask is None else int(allowed_mask[ex].sum())
            eligible = n_allowed - n_ex
            if eligible <= 0:
                continue
            small = eligible <= k or eligible < max(self.config.exact_share * len(self), self.config.exact_count)
            if small or active[j] < self.config.min_active_share or lost[j] > self.config.graph_max_loss:
                exact.append(j)
                continue
            # a filter keeping a share p of items pushes the wanted items ~1/p deeper in the
            # unfiltered ranking: search that much deeper (ef included) to keep the same recall
            want = max(self.config.overfetch * k + n_ex, self.config.expansion_search) / max(share, 1e-12)
            fetch[j] = min(len(self), math.ceil(want))

        deep = fetch > len(self) // 4  # so deep into the ranking that brute force is cheaper
        exact.extend(np.flatnonzero(deep).tolist())
        fetch[deep] = 0
        for growth in range(self.config.max_growth + 1):
            todo = np.flatnonzero(fetch > 0)
            if len(todo) == 0:
                break
            # one usearch batch per power-of-two fetch size, so one deep query does not slow all
            sizes = 2 ** np.ceil(np.log2(fetch[todo])).astype(np.int64)
            for size in np.unique(sizes):
                group = todo[sizes == size]
                keys, counts = self._hnsw(q[group], int(min(size, self.graph.count)))
                for pos, j in enumerate(group):
                    cand = keys[pos, : counts[pos]].astype(np.int64)
                    if len(self._pending):
                        cand = np.concatenate([cand, self._pending])
                    cand = cand[self._eligible(cand, allowed_mask, excludes[j])]
                    if len(cand) >= k:
                        rows[j], scores[j] = self._rank(q[j], cand, k)
                        fetch[j] = 0
                        self.stats["hnsw"] += 1
                    elif growth < self.config.max_growth and 2 * fetch[j] <= len(self) // 4:
                        fetch[j] = 2 * fetch[j]
                        self.stats["grown"] += 1
                    else:
                        fetch[j] = 0
                        exact.append(j)
        exact.extend(np.flatnonzero(fetch > 0).tolist())

        if exact:  # one screen pass for all of them
            rows[exact], scores[exact] = self.screen.top_k(q[exact], k, [excludes[j] for j in exact], allowed_mask)
            self.stats["exact"] += len(exact)
        if single:
            keep = rows[0] >= 0
            return rows[0][keep], scores[0][keep]
        return rows, scores

    def exact_search(
        self, query: np.ndarray, k: int, exclude: ExcludeLike = None, allowed: np.ndarray | Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Brute-force top-k of one query (the reference the HNSW path is tested against)."""
        q = np.asarray(query, dtype=np.float32)
        mask = self._allowed_mask(allowed)
        base = np.arange(len(self)) if mask is None else np.flatnonzero(mask)
        ex = self._excludes(exclude, 1, True)[0]
        cand = base[~np.isin(base, ex)]
        rows, scores = self._rank(q, cand, k)
        keep = rows >= 0
        return rows[keep], scores[keep]

    def item_vectors(self, item_rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """The fused vectors of given items, float32 (a copy)."""
        return np.asarray(self._rows[np.asarray(item_rows, dtype=np.int64)], dtype=np.float32)

    def cosines(self, row: int, dims: slice) -> np.ndarray:
        """Cosine of item ``row`` with every item over the fused coordinates ``dims``, float32 (0
        where either part is all zero).

        A signal's part of the fused vectors is its item vectors times a positive scale, so over
        ``Fusion.slices[s]`` these are the cosines of signal s's own item vectors: similar items
        read them here, in the vectors the exact ranking reads anyway, instead of holding a unit
        copy of every signal's item vectors (37 MiB of anonymous memory per worker on the
        six-signal ml-latest-small bundle) or reading the signals' factor files (36 MiB more).
        The strided product costs ~0.2 ms more per fused query on one core than products over
        contiguous unit copies (2.7-2.9 against 2.6-2.7 ms, 9,742 x 993, one run of 4 interleaved
        rounds, load 0.6).
        """
        if not 0 <= int(row) < len(self):
            raise ValueError(f"row {row} is outside [0, {len(self)})")
        part = self.columns(dims)
        inverse = self._inverse_norm(self._span(dims))
        return (part @ part[row]) * (inverse * inverse[row])

    def columns(self, dims: slice) -> np.ndarray:
        """Every item's fused coordinates ``dims`` (a non-empty contiguous slice) as a view, not a
        copy, the same view for the same span: over ``Fusion.slices[s]``, signal s's item vectors
        times its scale c_s > 0. A served bundle's models read their item vectors here
        (``FactorModel.read_items_from``), where the ranking reads them anyway."""
        key = self._span(dims)
        if key not in self._columns:
            self._columns[key] = self._rows[:, key[0] : key[1]]
        return self._columns[key]

    def _span(self, dims: slice) -> tuple[int, int]:
        """(start, stop) of a non-empty contiguous slice of the fused coordinates (ValueError otherwise)."""
        span = range(self.dim)[dims]
        if span.step != 1 or len(span) == 0:
            raise ValueError(f"dims must be a non-empty contiguous slice of [0, {self.dim}), got {dims}")
        return span.start, span.stop

    def _inverse_norm(self, key: tuple[int, int]) -> np.ndarray:
        """1 / the length of every row's coordinates key[0]:key[1] (0 for an all-zero part), cached."""
        if key not in self._inverse_norms:
            norms = np.empty(len(self), dtype=np.float32)
            for start in range(0, len(self), 4096):  # in blocks: small float64 temporaries
                block = np.asarray(self._rows[start : start + 4096, key[0] : key[1]], dtype=np.float64)
                norms[start : start + 4096] = np.sqrt(np.einsum("ij,ij->i", block, block))
            with np.errstate(divide="ignore"):
                self._inverse_norms[key] = np.where(norms > 0, 1.0 / norms, 0.0).astype(np.float32)
        return self._inverse_norms[key]

    def scores(self, query: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """Exact fused scores of given items for one query (float32, summed in float64)."""
        q = np.asarray(query, dtype=np.float32)
        if q.shape != (self.dim,):
            raise ValueError(f"query has shape {q.shape}, expected ({self.dim},)")
        return exact_scores(self._rows, self._check_rows(np.asarray(item_rows), "item_rows"), q)

    # -- helpers ---------------------------------------------------------------------------------
    def _hnsw(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Candidate keys (m, count) and how many are valid per row."""
        graph = self.graph.get()
        graph.expansion_search = self.config.expansion_search  # the effective ef is max(this, count)
        matches = graph.search(queries if self.space is None else self.space.queries(queries), count)
        if hasattr(matches, "counts"):
            return np.asarray(matches.keys), np.asarray(matches.counts)
        # usearch answers a one-row batch with a single Matches
        return np.asarray(matches.keys)[None, :], np.array([len(matches.keys)])

    def _rank(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return ranked(self._rows, q, cand, k)

    @staticmethod
    def _eligible(cand: np.ndarray, allowed: np.ndarray | None, exclude: np.ndarray) -> np.ndarray:
        keep = np.ones(len(cand), dtype=bool) if allowed is None else allowed[cand]
        if len(exclude):
            hit = np.zeros(max(int(cand.max(initial=0)), int(exclude.max())) + 1, dtype=bool)
            hit[exclude] = True
            keep &= ~hit[cand]
        return keep

    def _allowed_mask(self, allowed: Any) -> np.ndarray | None:
        if allowed is None:
            return None
        arr = np.asarray(allowed)
        if arr.dtype == bool:
            if arr.shape != (len(self),):
                raise ValueError(f"allowed mask has shape {arr.shape}, expected ({len(self)},)")
            return arr
        rows = self._check_rows(arr, "allowed")
        mask = np.zeros(len(self), dtype=bool)
        mask[rows] = True
        return mask

    def _excludes(self, exclude: Any, m: int, single: bool) -> list[np.ndarray]:
        empty = np.zeros(0, dtype=np.int64)
        if exclude is None:
            return [empty] * m
        if sp.issparse(exclude):
            csr = sp.csr_matrix(exclude)
            if csr.shape[0] != m:
                raise ValueError(f"exclude has {csr.shape[0]} rows for {m} queries")
            return [self._check_rows(csr.indices[csr.indptr[j] : csr.indptr[j + 1]], "exclude") for j in range(m)]
        if isinstance(exclude, np.ndarray) and exclude.dtype != object:
            return [np.unique(self._check_rows(exclude, "exclude"))] * m
        seq = list(exclude)
        if not single and seq and all(np.ndim(e) == 1 or isinstance(e, (list, tuple)) for e in seq):
            if len(seq) != m:
                raise ValueError(f"exclude has {len(seq)} entries for {m} queries")
            return [np.unique(self._check_rows(np.asarray(e), "exclude")) for e in seq]
        return [np.unique(self._check_rows(np.asarray(seq), "exclude"))] * m

    def _check_rows(self, rows: np.ndarray, what: str) -> np.ndarray:
        rows = np.asarray(rows).ravel()
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"{what} must hold integer item rows, got dtype {rows.dtype}")
        rows = rows.astype(np.int64)
        bad = rows[(rows < 0) | (rows >= len(self))]
        if bad.size:
            raise ValueError(f"{what} has item rows outside [0, {len(self)}): {bad[:5].tolist()}")
        return rows


# -- filters ------------------------------------------------------------------------------------
class ItemCatalog:
    """Item metadata arranged for fast filtering (built once per bundle)."""

    def __init__(self, items_table: ItemTable) -> None:
        self.n_items = len(items_table)
        self.year = items_table.year
        self.mean_rating = items_table.mean_rating
        self.count = items_table.count
        self._genre_rows: dict[str, list[int]] = {}
        self.genre_names: dict[str, str] = {}
        for row, genres in enumerate(items_table.genres):
            for g in genres:
                key = g.casefold()
                self.genre_names.setdefault(key, g)
                self._genre_rows.setdefault(key, []).append(row)
        self._genre_masks: dict[str, np.ndarray] = {}

    def genre_mask(self, genre: str) -> np.ndarray:
        """Items carrying a genre (case-insensitive); an unknown genre matches nothing."""
        key = genre.casefold()
        if key not in self._genre_masks:
            mask = np.zeros(self.n_items, dtype=bool)
            mask[self._genre_rows.get(key, [])] = True
            self._genre_masks[key] = mask
        return self._genre_masks[key]


@dataclass(frozen=True)
class ItemFilter:
    """Which items may be recommended; unset fields do not filter.

    An item whose year / mean rating is unknown fails a filter on that field.
    """

    genres: tuple[str, ...] | None = None
    """Any of these genres (case-insensitive)."""
    year_min: int | None = None
    """Earliest release year, inclusive."""
    year_max: int | None = None
    """Latest release year, inclusive."""
    min_mean_rating: float | None = None
    """Lowest mean rating, inclusive."""
    min_count: int | None = None
    """Fewest interactions (popularity), inclusive."""

    def __post_init__(self) -> None:
        if self.genres is not None:
            if isinstance(self.genres, str):
                object.__setattr__(self, "genres", (self.genres,))
            else:
                object.__setattr__(self, "genres", tuple(str(g) for g in self.genres))
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError(f"ItemFilter.year_min ({self.year_min}) is after year_max ({self.year_max})")
        if self.min_count is not None and self.min_count < 0:
            raise ValueError(f"ItemFilter.min_count must be >= 0, got {self.min_count}")
        if self.min_mean_rating is not None and not math.isfinite(self.min_mean_rating):
            raise ValueError(f"ItemFilter.min_mean_rating must be finite, got {self.min_mean_rating}")

    @property
    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())

    def mask(self, items: ItemCatalog | ItemTable) -> np.ndarray:
        """Boolean mask over item rows of the items that pass."""
        cat = items if isinstance(items, ItemCatalog) else ItemCatalog(items)
        mask = np.ones(cat.n_items, dtype=bool)
        if self.genres is not None:
            any_genre = np.zeros(cat.n_items, dtype=bool)
            for g in self.genres:
                any_genre |= cat.genre_mask(g)
            mask &= any_genre
        with np.errstate(invalid="ignore"):
            if self.year_min is not None:
                mask &= cat.year >= self.year_min
            if self.year_max is not None:
                mask &= cat.year <= self.year_max
            if self.min_mean_rating is not None:
                mask &= cat.mean_rating >= self.min_mean_rating
        if self.min_count is not None:
            mask &= cat.count >= self.min_count
        return mask
