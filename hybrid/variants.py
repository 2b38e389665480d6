"""Named blend variants, a traffic split with sticky assignment, and per-request weights.

A variant is a set of blend weights (one per signal) with a description and a cold-start policy.
Every bundle has ``tuned`` (the tuner's weights) and one single-signal variant per signal it holds
(``als``, ``content``, ``lightgcn``, ``popularity``); operators add their own in a JSON or TOML
file::

    salt = "spring-test"            # optional: changing it reshuffles every assignment
    [traffic]                       # optional: shares per variant (default: all on 'tuned')
    tuned = 0.9
    als_heavy = 0.1
    [variants.als_heavy]
    description = "twice the collaborative weight"
    weights = { als = 2.0, content = 0.5, lightgcn = 1.0, popularity = 0.2 }
    cold_start = "popularity"       # optional: 'popularity' (default) or 'content'

(``variants`` may also be left out, with the variants at the top level beside ``traffic`` and
``salt``.) Because one index serves any weights (../shared/DESIGN.md), a variant costs nothing at
serving time. A user without a requested variant is assigned one by a stable hash of the user id
(sha256, never Python's salted ``hash``), so the same user sees the same variant on every server
and every restart.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybrid.fusion import check_weights
from models.signals import SIGNALS

__all__ = ["Variant", "Variants", "CUSTOM", "TUNED", "COLD_START_POLICIES"]

TUNED = "tuned"
CUSTOM = "custom"
"""The variant name reported for per-request weights."""
COLD_START_POLICIES = ("popularity", "content")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DESCRIPTIONS = {TUNED: "blend weights tuned on the validation split", **{s.name: s.description for s in SIGNALS}}


@dataclass(frozen=True)
class Variant:
    """A named blend."""

    name: str
    weights: Mapping[str, float]
    """Weight per signal (validated: known signals, finite, >= 0, not all zero)."""
    description: str = ""
    cold_start: str = "popularity"
    """What a user with no interactions gets: 'popularity' (the most popular items, filtered) or
    'content' (the content signal against a profile of the most popular allowed items)."""
    generated: bool = field(default=False, compare=False)
    """True for 'tuned' and the single-signal variants (not written back by operators)."""

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "description": self.description, "cold_start": self.cold_start}


class Variants:
    """The variants of one bundle and how traffic is split between them."""

    def __init__(
        self,
        signals: tuple[str, ...] | list[str],
        tuned: Mapping[str, float],
        extra: Mapping[str, Variant | Mapping[str, Any]] | None = None,
        traffic: Mapping[str, float] | None = None,
        salt: str = "hybridrec",
    ) -> None:
        self.signals = tuple(signals)
        if not self.signals:
            raise ValueError("Variants needs at least one signal")
        self.salt = str(salt)
        variants: dict[str, Variant] = {
            TUNED: Variant(TUNED, check_weights(tuned, self.signals), _DESCRIPTIONS[TUNED], generated=True)
        }
        for s in self.signals:
            weights = {t: (1.0 if t == s else 0.0) for t in self.signals}
            policy = "content" if s == "content" else "popularity"
            variants[s] = Variant(s, weights, _DESCRIPTIONS.get(s, f"{s} signal only"), policy, generated=True)
        for name, spec in (extra or {}).items():
            variants[name] = self._operator_variant(name, spec, variants)
        self._variants = variants
        self.traffic = self._check_traffic(traffic if traffic is not None else {TUNED: 1.0})

    # -- construction ------------------------------------------------------------------------
    def _operator_variant(self, name: str, spec: Any, existing: Mapping[str, Variant]) -> Variant:
        if not isinstance(name, str) or name == CUSTOM or not _NAME_RE.match(name):
            raise ValueError(f"bad variant name {name!r}: use letters, digits, '-' and '_' (and not {CUSTOM!r})")
        if name in existing:
            raise ValueError(f"variant {name!r} is generated from the bundle and cannot be redefined")
        if isinstance(spec, Variant):
            spec = spec.to_dict()
        if not isinstance(spec, Mapping) or "weights" not in spec:
            raise ValueError(f"variant {name!r} needs a 'weights' table, got {spec!r}")
        unknown = sorted(set(spec) - {"weights", "description", "cold_start"})
        if unknown:
            raise ValueError(f"variant {name!r} has unknown field(s) {unknown}")
        try:
            weights = check_weights(dict(spec["weights"]), self.signals)
        except ValueError as exc:
            raise ValueError(f"variant {name!r}: {exc}") from exc
        policy = spec.get("cold_start", "popularity")
        if policy not in COLD_START_POLICIES:
            raise ValueError(f"variant {name!r}: cold_start must be one of {COLD_START_POLICIES}, got {policy!r}")
        return Variant(name, weights, str(spec.get("description", "")), policy)

    def _check_traffic(self, traffic: Mapping[str, float]) -> dict[str, float]:
        for name in traffic:
            self.get(name)
        shares = {name: float(v) for name, v in traffic.items()}
        bad = {n: v for n, v in shares.items() if not math.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"traffic shares must be finite and >= 0, got {bad}")
        total = sum(shares.values())
        if total <= 0:
            raise ValueError("traffic shares are all zero: at least one variant needs a positive share")
        return {n: v / total for n, v in sorted(shares.items()) if v > 0}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], signals: tuple[str, ...], tuned: Mapping[str, float]) -> Variants:
        """Variants from a parsed operator file (see the module docstring)."""
        config = dict(config)
        traffic = config.pop("traffic", None)
        salt = config.pop("salt", "hybridrec")
        if "variants" in config:
            extra = config.pop("variants")
            if config:
                raise ValueError(f"unknown top-level key(s) in variants file: {sorted(config)}")
        else:
            extra = config
        return cls(signals, tuned, extra, traffic, salt)

    @classmethod
    def from_file(cls, path: str | Path, signals: tuple[str, ...], tuned: Mapping[str, float]) -> Variants:
        """Read an operator file: ``.toml`` as TOML, anything else as JSON."""
        path = Path(path)
        if not path.exists():
            raise ValueError(f"variants file {path} does not exist")
        text = path.read_text()
        try:
            config = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
            raise ValueError(f"variants file {path} is not valid {kind}: {exc}") from exc
        return cls.from_config(config, signals, tuned)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the bundle manifest (every variant, generated ones included)."""
        return {
            "signals": list(self.signals),
            "salt": self.salt,
            "traffic": dict(self.traffic),
            "variants": {n: v.to_dict() for n, v in self._variants.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Variants:
        """Inverse of to_dict."""
        signals = tuple(data["signals"])
        variants = dict(data["variants"])
        tuned = variants.pop(TUNED)["weights"]
        extra = {n: v for n, v in variants.items() if n not in signals}
        return cls(signals, tuned, extra, data.get("traffic"), data.get("salt", "hybridrec"))

    # -- lookup ------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._variants)

    def __iter__(self) -> Iterator[Variant]:
        return iter(self._variants.values())

    def __len__(self) -> int:
        return len(self._variants)

    def __contains__(self, name: object) -> bool:
        return name in self._variants

    def get(self, name: str) -> Variant:
        """The variant called ``name``; ValueError listing the known ones otherwise."""
        if name not in self._variants:
            raise ValueError(f"unknown variant {name!r}; known: {', '.join(self._variants)}")
        return self._variants[name]

    __getitem__ = get

    # -- assignment --------------------------------------------------------------------------
    def bucket(self, user_id: str) -> float:
        """A stable number in [0, 1) for a user id (sha256 of salt and id)."""
        digest = hashlib.sha256(f"{self.salt}\x00{user_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def assign(self, user_id: str) -> str:
        """The variant a user gets by the traffic split; the same for the same id, always."""
        b = self.bucket(user_id)
        acc = 0.0
        names = list(self.traffic)
        for name in names:
            acc += self.traffic[name]
            if b < acc:
                return name
        return names[-1]

    def weights_for(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Validated per-request weights (every signal present, missing ones 0)."""
        return check_weights(weights, self.signals)

    def resolve(
        self, user_id: str, variant: str | None = None, weights: Mapping[str, float] | None = None
    ) -> Variant:
        """The blend for a request: explicit weights (variant 'custom'), a named variant, or the
        user's sticky assignment."""
        if weights is not None and variant is not None:
            raise ValueError("give either a variant or explicit weights, not both")
        if weights is not None:
            return Variant(CUSTOM, self.weights_for(weights), "per-request weights")
        return self.get(variant if variant is not None else self.assign(user_id))
