"""The one registry of signals: every list of signal names in the project derives from it.

A signal is one part of the hybrid's score, produced by one model kind. Adding a signal is one
entry here (and its model module): the model loader, the fused layout, the pipeline's defaults,
the explanations' labels, the variants and the GraphQL schema (the ``Signal`` enum and the
``BlendWeightsInput`` fields) all read this table. No imports beyond the standard library: the
API process reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SIGNALS", "SignalSpec", "driver_signals", "signal", "signal_names"]


@dataclass(frozen=True)
class SignalSpec:
    """What the project knows about one signal."""

    name: str
    """The signal's name in bundles, weights and variants, e.g. 'als'."""
    kind: str
    """The model kind that produces it (``FactorModel.kind``)."""
    module: str
    """The module defining that model, imported on first use (models.base.model_class)."""
    label: str
    """A human label, used by explanations ('collaborative')."""
    graphql: str
    """Its GraphQL enum value ('COLLABORATIVE'); lower-cased, its ``BlendWeightsInput`` field."""
    description: str
    """What the variant that uses this signal alone is (hybrid/variants.py)."""
    fixed_place: bool = False
    """Its place in the fused vector is fixed: ahead of the others, in this table's order. A
    signal without one follows in the order its model is given (the bundle's manifest records
    that order, so published bundles keep their layout)."""
    similarity: bool = False
    """Offered by the API's similarItems as a SimilaritySignal (besides FUSED)."""
    mapped_from_content: bool = False
    """Its item vectors for items added while serving are mapped from content (hybrid/item_maps.py)."""
    driver_rank: int | None = None
    """Set when its model's fold-in splits by history item (``FactorModel.history_terms`` gives
    rows): explanations then show the history items that drive its score. When a recommendation is
    led by a signal without drivers (popularity), the bundle's driver signal of lowest rank gives
    them. None: no drivers."""


SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec("als", "als", "models.als", "collaborative", "COLLABORATIVE",
               "collaborative signal only (implicit ALS)",
               fixed_place=True, similarity=True, mapped_from_content=True, driver_rank=0),
    SignalSpec("content", "content", "models.content", "content", "CONTENT",
               "content signal only (TF-IDF of genres and tags)",
               fixed_place=True, similarity=True, driver_rank=2),
    SignalSpec("lightgcn", "lightgcn", "models.lightgcn", "graph", "GRAPH",
               "graph signal only (LightGCN)",
               fixed_place=True, similarity=True, mapped_from_content=True, driver_rank=1),
    SignalSpec("popularity", "popularity", "models.popularity", "popularity", "POPULARITY",
               "popularity only",
               fixed_place=True),
    SignalSpec("svd", "svd", "models.svd", "item-item", "SPECTRAL",
               "item-item signal only (low-rank ridge of co-occurrence)",
               mapped_from_content=True, driver_rank=3),
    SignalSpec("sequence", "sequence", "models.sequence", "what-comes-next", "SEQUENTIAL",
               "sequential signal only (what users watched next)",
               mapped_from_content=True, driver_rank=4),
)
"""Every signal, in the order the GraphQL schema lists them."""

_BY_NAME = {s.name: s for s in SIGNALS}


def signal(name: str) -> SignalSpec:
    """The registry entry of a signal name; ValueError naming the known ones for any other."""
    spec = _BY_NAME.get(name)
    if spec is None:
        raise ValueError(f"unknown signal {name!r}; known: {', '.join(_BY_NAME)}")
    return spec


def signal_names() -> tuple[str, ...]:
    """Every signal's name, in registry order."""
    return tuple(_BY_NAME)


def driver_signals() -> tuple[str, ...]:
    """The names of the signals whose explanations show history-item drivers, by ``driver_rank``."""
    ranked = sorted((s for s in SIGNALS if s.driver_rank is not None), key=lambda s: s.driver_rank or 0)
    return tuple(s.name for s in ranked)
