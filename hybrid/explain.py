"""Why an item was recommended: exact signal contributions, then evidence for each.

1. Contributions: w_s * c_s * score_s for every signal; by the fused identity they add up to the
   item's score exactly (../shared/DESIGN.md), so shares of the score are honest.
2. Drivers: the history items that pull the item up, by <i_j, i_item> on the item factors of the
   signal that matters most (ALS for a collaborative recommendation, LightGCN for a graph one,
   content for a content one; ALS when popularity leads).
3. Shared genres and tags between the item and the user's history, most frequent first.
4. A shortest path in the user-item graph (networkx over the user's 2-hop neighbourhood in the
   training interactions): you -> an item you saw -> another user who saw it -> this item.
5. One sentence a person can read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from hybrid.index import as_list

if TYPE_CHECKING:
    from hybrid.bundle import Bundle

__all__ = ["Driver", "PathStep", "Explanation", "explain_pair", "SIGNAL_LABELS"]

SIGNAL_LABELS: dict[str, str] = {
    "als": "collaborative",
    "lightgcn": "graph",
    "content": "content",
    "popularity": "popularity",
}
_DRIVER_SIGNALS = ("als", "lightgcn", "content")


@dataclass(frozen=True)
class Driver:
    """A history item and how strongly it points at the recommended item."""

    item_id: str
    title: str
    similarity: float
    """<i_j, i_item> on the driver signal's item factors."""


@dataclass(frozen=True)
class PathStep:
    kind: str
    """'user' or 'item'."""
    id: str
    """External id ('you' for the user asking when it has no id in the bundle)."""
    label: str


@dataclass(frozen=True)
class Explanation:
    user_id: str
    item_id: str
    title: str
    score: float
    contributions: dict[str, float]
    """Per-signal parts of the score; they add up to ``score``."""
    shares: dict[str, float]
    """Each signal's share of the positive contributions (sums to 1 when any is positive)."""
    main_signal: str | None
    drivers: list[Driver] = field(default_factory=list)
    driver_signal: str | None = None
    shared_genres: list[str] = field(default_factory=list)
    shared_tags: list[str] = field(default_factory=list)
    graph_path: list[PathStep] | None = None
    sentence: str = ""


def explain_pair(
    bundle: Bundle,
    *,
    user_id: str,
    user_row: int | None,
    history: np.ndarray,
    query: np.ndarray,
    item_row: int,
    max_drivers: int = 3,
    max_neighbours: int = 50,
) -> Explanation:
    """Explain one (user, item) pair.

    ``query`` is the fused query the item was ranked with, ``history`` the user's item rows (the
    trained ones, or the override the request used), ``user_row`` the user's row in the training
    graph (None for a user unknown to the bundle).
    """
    history = np.unique(np.asarray(history, dtype=np.int64))
    vec = np.asarray(bundle.index.vectors[item_row], dtype=np.float32)[None, :]
    contrib = {s: float(v[0]) for s, v in bundle.fusion.contributions(np.asarray(query, np.float32), vec).items()}
    score = float(sum(contrib.values()))
    positive = {s: max(v, 0.0) for s, v in contrib.items()}
    total = sum(positive.values())
    shares = {s: (v / total if total > 0 else 0.0) for s, v in positive.items()}
    main = max(contrib, key=lambda s: contrib[s]) if total > 0 else None

    driver_signal = main if main in _DRIVER_SIGNALS else next((s for s in _DRIVER_SIGNALS if s in bundle.signals), None)
    drivers = _drivers(bundle, driver_signal, history, item_row, max_drivers) if driver_signal else []
    genres, tags = _shared_metadata(bundle, history, item_row)
    path = _graph_path(bundle, user_id, user_row, history, item_row, drivers, max_neighbours)

    title = _title(bundle, item_row)
    expl = Explanation(
        user_id=str(user_id),
        item_id=str(bundle.items.ids[item_row]),
        title=title,
        score=score,
        contributions=contrib,
        shares=shares,
        main_signal=main,
        drivers=drivers,
        driver_signal=driver_signal,
        shared_genres=genres,
        shared_tags=tags,
        graph_path=path,
    )
    return _with_sentence(expl, bundle, item_row)


# -- evidence ------------------------------------------------------------------------------------
def _drivers(bundle: Bundle, signal: str, history: np.ndarray, item_row: int, k: int) -> list[Driver]:
    history = history[history != item_row]
    if len(history) == 0:
        return []
    factors = bundle.fusion.models[signal].item_factors_
    hist = np.asarray(factors[history], dtype=np.float32)
    target = np.asarray(factors[item_row], dtype=np.float32)
    sims = hist @ target
    # only items that point at the target at all (cosine above rounding noise)
    floor = 1e-6 * float(np.linalg.norm(target)) * float(np.linalg.norm(hist, axis=1).max(initial=0.0))
    order = np.lexsort((history, -sims))
    return [
        Driver(str(bundle.items.ids[history[j]]), _title(bundle, int(history[j])), float(sims[j]))
        for j in order[:k]
        if sims[j] > floor
    ]


def _shared_metadata(bundle: Bundle, history: np.ndarray, item_row: int) -> tuple[list[str], list[str]]:
    table = bundle.items_table
    out = []
    for column in ("genres", "tags"):
        if column not in table.columns:
            out.append([])
            continue
        cells = table[column].to_numpy()
        mine = {g.casefold(): g for g in as_list(cells[item_row])}
        counts = Counter(g.casefold() for h in history if h != item_row for g in set(as_list(cells[h])))
        shared = [k for k in mine if counts[k] > 0]
        # most frequent in the history first, then the item's own order
        shared.sort(key=lambda k: -counts[k])
        out.append([mine[k] for k in shared])
    return out[0], out[1]


def _graph_path(
    bundle: Bundle,
    user_id: str,
    user_row: int | None,
    history: np.ndarray,
    item_row: int,
    drivers: list[Driver],
    max_neighbours: int,
) -> list[PathStep] | None:
    """Shortest path user -> seen item -> co-user -> target over the user's 2-hop neighbourhood.

    History items that are stronger drivers are preferred among equally short paths.
    """
    if len(history) == 0:
        return None
    by_item = bundle.seen_by_item
    you = ("user", -1 if user_row is None else int(user_row))
    target = ("item", int(item_row))
    graph = nx.Graph()
    graph.add_node(you)
    graph.add_node(target)
    driver_rank = {bundle.items.row(d.item_id): r for r, d in enumerate(drivers)}
    ranked = sorted(history.tolist(), key=lambda h: (driver_rank.get(h, len(driver_rank)), h))
    watchers = by_item.indices[by_item.indptr[item_row] : by_item.indptr[item_row + 1]]
    watchers = np.setdiff1d(watchers, [you[1]])
    for rank, h in enumerate(ranked[:max_neighbours]):
        node = ("item", int(h))
        graph.add_edge(you, node, weight=1.0 + 1e-3 * rank)
        if h == item_row:
            continue
        co = by_item.indices[by_item.indptr[h] : by_item.indptr[h + 1]]
        for u in np.intersect1d(co, watchers, assume_unique=True)[:max_neighbours].tolist():
            graph.add_edge(node, ("user", u), weight=1.0)
            graph.add_edge(("user", u), target, weight=1.0)
    try:
        nodes = nx.shortest_path(graph, you, target, weight="weight")
    except nx.NetworkXNoPath:
        return None
    steps = []
    for node in nodes:
        kind, row = node
        if node == you:
            steps.append(PathStep("user", str(user_id), "you"))
        elif kind == "user":
            uid = str(bundle.users.ids[row])
            steps.append(PathStep("user", uid, f"user {uid}"))
        else:
            steps.append(PathStep("item", str(bundle.items.ids[row]), _title(bundle, row)))
    return steps


# -- words ---------------------------------------------------------------------------------------
def _title(bundle: Bundle, row: int) -> str:
    table = bundle.items_table
    if "title" in table.columns:
        title = table["title"].iloc[row]
        if isinstance(title, str) and title:
            return title
    return str(bundle.items.ids[row])


def _short(title: str) -> str:
    """'Toy Story (1995)' -> 'Toy Story'."""
    return re.sub(r"\s*\(\d{4}\)\s*$", "", title) or title


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _with_sentence(expl: Explanation, bundle: Bundle, item_row: int) -> Explanation:
    main = expl.main_signal
    if main is None:
        head = "Recommended as the best remaining match (no signal scores it positively)"
    else:
        share = expl.shares[main]
        label = SIGNAL_LABELS.get(main, main)
        qualifier = "mostly " if share < 0.995 else ""
        head = f"Recommended {qualifier}for its {label} signal ({share:.0%})"
    reason = _reason(expl, bundle, item_row)
    sentence = head + (f": {reason}" if reason else "")
    if expl.shared_genres:
        sentence += f"; shares {', '.join(expl.shared_genres[:3])} with your history"
    return replace(expl, sentence=sentence + ".")


def _reason(expl: Explanation, bundle: Bundle, item_row: int) -> str:
    names = [_short(d.title) for d in expl.drivers]
    main = expl.main_signal
    if main == "als" and names:
        return f"people who watched {_join(names[:2])} also watched this"
    if main == "lightgcn" and expl.graph_path and len(expl.graph_path) >= 4:
        seen = _short(expl.graph_path[1].label)
        return f"it is close to you in the viewing graph: others who watched {seen}, as you did, watched this"
    if main == "lightgcn" and names:
        return f"viewers connected to {_join(names[:2])} in the viewing graph watched this"
    if main == "content" and names:
        return f"it is similar in content to {_join(names[:2])}"
    if main == "popularity":
        count = _count(bundle, item_row)
        return f"it is popular ({count} people watched it)" if count is not None else "it is popular"
    return ""


def _count(bundle: Bundle, item_row: int) -> int | None:
    if "count" not in bundle.items_table.columns:
        return None
    value: Any = bundle.items_table["count"].iloc[item_row]
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
