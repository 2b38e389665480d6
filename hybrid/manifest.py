"""A bundle's manifest.json as typed, frozen records: what ``hybrid.bundle.publish`` writes and every
reader reads (loading, listing, the retrainer, the API, the CLI).

``Manifest.to_dict`` is the JSON form; ``Manifest.from_dict`` checks a parsed manifest and raises a
BundleError naming the offending field. The format is ``hybridrec-bundle/1`` throughout: what was
added to it later is optional on reading (``training``; ``dataset.events`` and its ``read_at`` and
``count``), so a bundle published before still loads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from etl.errors import BundleError
from hybrid.index import GRAPH_DTYPE, IndexConfig
from hybrid.variants import Variants

__all__ = ["FORMAT", "DatasetFacts", "EventsFacts", "IndexEntry", "Manifest", "SignalEntry", "TrainingFacts"]

FORMAT = "hybridrec-bundle/1"


@dataclass(frozen=True)
class SignalEntry:
    """One signal of the fused vector."""

    kind: str
    """Its model kind (``FactorModel.kind``)."""
    dim: int
    """Its width in the fused vector."""
    scale: float
    """Its normalisation scalar (``Fusion.scales``)."""
    config: dict[str, Any]
    """Its model's config, as JSON."""
    params: dict[str, Any]
    """The training parameters recorded for it."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "scale": self.scale, "config": self.config, "params": self.params}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SignalEntry:
        r = _Reader(data, where)
        # positive: the fused vectors hold c_s * i_s, read back over c_s (FactorModel.read_items_from)
        return cls(r.text("kind"), r.integer("dim"), r.positive("scale"), r.mapping("config"), r.mapping("params"))


@dataclass(frozen=True)
class EventsFacts:
    """Which of the API's accepted events the training data holds (cluster.event_intake), on the
    API's clock: those accepted up to ``cutoff``."""

    cutoff: float
    """The newest ``accepted_at`` learned (serving folds in only later events)."""
    read_at: float | None
    """When training read the deletions; None in a bundle from before this was recorded."""
    count: int | None
    """The accepted events the data holds; None in a bundle from before this was recorded."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> EventsFacts:
        r = _Reader(data, where)
        return cls(r.number("cutoff"), r.optional_number("read_at"), r.optional_integer("count"))


@dataclass(frozen=True)
class DatasetFacts:
    """The dataset the bundle was trained from (from its own manifest, etl.dataset)."""

    path: str
    content_hash: str | None
    source: str | None
    users: int
    items: int
    interactions: int | None
    splits: dict[str, int] | None
    """Interactions per stored split ('fit', 'validation', 'test')."""
    events: EventsFacts | None
    """None when training read no API events (every online event is then new)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # events (a dataclass too) as its own dict

    @classmethod
    def from_dict(cls, data: Any, where: str) -> DatasetFacts:
        r = _Reader(data, where)
        splits = r.optional_mapping("splits")
        if splits is not None:
            splits = {k: _Reader(splits, f"{where}.splits").integer(k) for k in splits}
        events = r.data.get("events")
        return cls(
            r.text("path"), r.optional_text("content_hash"), r.optional_text("source"), r.integer("users"),
            r.integer("items"), r.optional_integer("interactions"), splits,
            None if events is None else EventsFacts.from_dict(events, f"{where}.events"),
        )


@dataclass(frozen=True)
class TrainingFacts:
    """What every signal of the bundle was fit on: one split of the dataset, whose interactions
    history.npz holds (and records again in its own metadata)."""

    split: str
    """The dataset split ('train' for a final fit, 'fit' for the tuning one)."""
    interactions: int
    """How many interactions that split holds."""
    cutoff: int
    """The timestamp of the newest interaction fitted (the interactions' own clock; the API
    events learned are ``DatasetFacts.events``, on the API's clock)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> TrainingFacts:
        r = _Reader(data, where)
        return cls(r.text("split"), r.integer("interactions"), r.integer("cutoff"))


@dataclass(frozen=True)
class IndexEntry:
    """The usearch index file and the settings it was built and is searched with."""

    config: IndexConfig
    file: str = "index.usearch"
    metric: str = "ip"
    dtype: str = GRAPH_DTYPE
    """The graph's scalar kind as built (``hybrid.index.Graph.dtype``; bundles published before
    GRAPH_DTYPE was f16 say f32; usearch reads it from the file either way)."""
    space_file: str | None = None
    """The graph space's file (hybrid/graph_space.py); None: the graph holds the fused vectors as
    they are (every bundle published before graph spaces, and ``IndexConfig.graph_share`` None)."""
    build_seconds: float | None = None
    """How long the index took to build (the space's fit included) when it was published."""

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "metric": self.metric, "dtype": self.dtype, "space_file": self.space_file,
                "build_seconds": self.build_seconds, **asdict(self.config)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> IndexEntry:
        r = _Reader(data, where)
        known = {f.name for f in fields(IndexConfig)}  # settings a later version added get their defaults
        try:
            config = IndexConfig(**{k: v for k, v in r.data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise BundleError(f"manifest.json field {where!r} is invalid: {exc}") from exc
        return cls(config, r.text("file"), r.text("metric"), r.text("dtype"), r.optional_text("space_file"),
                   r.optional_number("build_seconds"))


@dataclass(frozen=True)
class Manifest:
    """What a bundle version is (format ``FORMAT``): written once by publish, read by everything
    that uses the bundle."""

    version: str
    created_at: datetime
    dataset: DatasetFacts
    signals: dict[str, SignalEntry]
    """Every signal, in the order of the fused vector."""
    dim: int
    """The fused vector's width (the signals' dims summed)."""
    n_users: int
    n_items: int
    weights: dict[str, float]
    """The tuned blend weights (variant 'tuned')."""
    variants: Variants
    metrics: dict[str, Any]
    """The test (and validation) figures recorded at publishing."""
    params: dict[str, Any]
    """Training parameters that belong to no one signal."""
    index: IndexEntry
    training: TrainingFacts | None
    """None in a bundle from before this was recorded."""

    @property
    def signal_order(self) -> tuple[str, ...]:
        return tuple(self.signals)

    @property
    def events_cutoff(self) -> float:
        """The API clock time up to which this bundle learned the API's accepted events (their
        ``accepted_at``); -inf for a bundle trained without them (every online event is then new)."""
        return float("-inf") if self.dataset.events is None else self.dataset.events.cutoff

    @property
    def deletions_read_at(self) -> float:
        """When training read the deletions: a user deleted later is still in this bundle. A bundle
        from before this was recorded: its creation time."""
        events = self.dataset.events
        if events is not None and events.read_at is not None:
            return events.read_at
        return self.created_at.timestamp()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written as manifest.json (``training`` only when recorded)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "dataset": self.dataset.to_dict(),
            "signals": {s: e.to_dict() for s, e in self.signals.items()},
            "signal_order": list(self.signals),
            "dim": self.dim,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "weights": dict(self.weights),
            "variants": self.variants.to_dict(),
            "metrics": self.metrics,
            "params": self.params,
            "index": self.index.to_dict(),
        }
        if self.training is not None:
            out["training"] = self.training.to_dict()
        return out

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """A manifest.json's text, parsed and checked (``from_dict``)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"manifest.json is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """A parsed manifest.json, checked: BundleError naming the offending field."""
        r = _Reader(data, "")
        if data.get("format") != FORMAT:
            raise BundleError(f"manifest.json: unsupported bundle format {data.get('format')!r}, expected {FORMAT!r}")
        order = r.names("signal_order")
        entries = r.mapping("signals")
        if sorted(entries) != sorted(order) or len(set(order)) != len(order):
            raise BundleError(f"manifest.json field 'signals' holds {sorted(entries)}, 'signal_order' {order}")
        signals = {s: SignalEntry.from_dict(entries[s], f"signals.{s}") for s in order}
        weights = r.mapping("weights")
        if set(weights) != set(order):
            raise BundleError(f"manifest.json field 'weights' is for {sorted(weights)}, the signals are {order}")
        weights = {s: _Reader(weights, "weights").number(s) for s in order}
        try:
            variants = Variants.from_dict(r.mapping("variants"))
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"manifest.json field 'variants' is invalid: {exc}") from exc
        if list(variants.signals) != order:
            raise BundleError(f"manifest.json field 'variants' is for signals {list(variants.signals)}, not {order}")
        try:
            created_at = datetime.fromisoformat(r.text("created_at"))
        except ValueError as exc:
            raise BundleError(f"manifest.json field 'created_at' is not an ISO time: {exc}") from exc
        training = r.data.get("training")
        return cls(
            version=r.text("version"),
            created_at=created_at,
            dataset=DatasetFacts.from_dict(r.get("dataset"), "dataset"),
            signals=signals,
            dim=r.integer("dim"),
            n_users=r.integer("n_users"),
            n_items=r.integer("n_items"),
            weights=weights,
            variants=variants,
            metrics=r.mapping("metrics"),
            params=r.mapping("params"),
            index=IndexEntry.from_dict(r.get("index"), "index"),
            training=None if training is None else TrainingFacts.from_dict(training, "training"),
        )


class _Reader:
    """Typed reads of one JSON object of the manifest; errors name the field by its dotted path."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise BundleError(f"manifest.json field {where or 'the top level'!r} is not an object: {data!r:.80}")
        self.data, self.where = data, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise BundleError(f"manifest.json lacks {self._name(key)!r}")
        return self.data[key]

    def _bad(self, key: str, expected: str) -> BundleError:
        return BundleError(f"manifest.json field {self._name(key)!r} must be {expected}, got {self.data[key]!r:.80}")

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def integer(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(key, "an integer")
        return value

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._bad(key, "a finite number")
        return float(value)

    def positive(self, key: str) -> float:
        value = self.number(key)
        if not value > 0:
            raise self._bad(key, "a positive number")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.get(key)
        if not isinstance(value, Mapping):
            raise self._bad(key, "an object")
        return dict(value)

    def names(self, key: str) -> list[str]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of names")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.data.get(key) is None else self.text(key)

    def optional_integer(self, key: str) -> int | None:
        return None if self.data.get(key) is None else self.integer(key)

    def optional_number(self, key: str) -> float | None:
        return None if self.data.get(key) is None else self.number(key)

    def optional_mapping(self, key: str) -> dict[str, Any] | None:
        return None if self.data.get(key) is None else self.mapping(key)
