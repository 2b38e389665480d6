"""Online experiments: named variants, a traffic split, and the file that holds them beside the bundles.

An experiment names its arms (variants: a bundle variant such as ``tuned`` or ``als``, explicit
blend weights, or the tuned weights restricted to a subset of signals) and the share of users each
gets. Users are assigned by ``Variants.assign`` (sha256 of the experiment's salt and the user id),
so a user keeps the same arm on every replica and restart; the salt defaults to the experiment's
name, so a new experiment reshuffles users.

The experiments live in one JSON file in the bundle root, ``experiments.json``, written whole and
atomically (a temporary file renamed over it on a local disk, one put on an object store), so
every replica reading the root sees the same file, and a change needs no retraining: the API polls
the file as it polls the ``latest`` pointer (graphql_api.runtime) and serves the new split from
its next request. At most one experiment runs at a time; stopping it returns every user to the
bundle's own assignment (``tuned``).

An exposure is one list of items shown to a user under an experiment's arm. Its id is a hash of
(experiment, its start, user, variant, bundle version, the items shown, in order), so the same list
shown again (a cached answer, a repeated request) carries the same id, and a cached answer body is
right for every request that it answers (see ``exposure_id``).

Serving code imports this module; the analysis (graphql_api-free, with scipy and matplotlib) is
hybrid.experiment_report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from etl.file_lock import exclusive
from hybrid.variants import TUNED, Variant, Variants

__all__ = [
    "EXPERIMENTS_FILE", "DEFAULT_CONVERSION_VALUE", "ArmSpec", "Experiment", "ExperimentBook", "ActiveExperiment",
    "exposure_id", "read_book", "write_book", "create_experiment", "stop_experiment",
]

EXPERIMENTS_FILE = "experiments.json"
FORMAT = 1
DEFAULT_CONVERSION_VALUE = 4.0
"""An outcome converts when its interaction value is at least this (a rating of 4 of 5; a view
counts 1 and never converts unless the experiment lowers the threshold)."""
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ArmSpec:
    """How an experiment arm that the bundle does not define blends the signals."""

    weights: Mapping[str, float] | None = None
    """Explicit blend weights (signals left out weigh 0)."""
    signals: tuple[str, ...] | None = None
    """The tuned weights on these signals only (the others set to 0)."""
    description: str = ""
    cold_start: str = "popularity"

    def __post_init__(self) -> None:
        if (self.weights is None) == (self.signals is None):
            raise ValueError("an arm needs either weights or signals, not both or neither")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.description, "cold_start": self.cold_start}
        if self.weights is not None:
            out["weights"] = {s: float(w) for s, w in self.weights.items()}
        else:
            out["signals"] = list(self.signals or ())
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ArmSpec:
        unknown = sorted(set(raw) - {"weights", "signals", "description", "cold_start"})
        if unknown:
            raise ValueError(f"unknown arm field(s) {unknown}")
        signals = raw.get("signals")
        return cls(dict(raw["weights"]) if raw.get("weights") is not None else None,
                   tuple(signals) if signals is not None else None,
                   str(raw.get("description", "")), str(raw.get("cold_start", "popularity")))

    def variant_spec(self, tuned: Mapping[str, float]) -> dict[str, Any]:
        """The ``Variants`` spec of this arm for a bundle with tuned weights ``tuned``."""
        if self.weights is not None:
            weights = dict(self.weights)
        else:
            unknown = sorted(set(self.signals or ()) - set(tuned))
            if unknown:
                raise ValueError(f"signals {unknown} are not in the bundle (it has {', '.join(tuned)})")
            weights = {s: (w if s in (self.signals or ()) else 0.0) for s, w in tuned.items()}
        return {"weights": weights, "description": self.description, "cold_start": self.cold_start}


@dataclass(frozen=True)
class Experiment:
    """One experiment: its arms, their traffic shares, and when it ran."""

    name: str
    traffic: Mapping[str, float]
    """Share of users per arm (normalised to sum 1)."""
    arms: Mapping[str, ArmSpec] = field(default_factory=dict)
    """Arms the bundle does not define (arms such as 'tuned' or 'als' need no entry)."""
    control: str = TUNED
    """The arm every other one is compared with."""
    salt: str = ""
    """Assignment salt (default: the name, so that every experiment shuffles users afresh)."""
    conversion_value: float = DEFAULT_CONVERSION_VALUE
    description: str = ""
    status: str = "running"
    """'running' or 'stopped'."""
    started_at: float = 0.0
    stopped_at: float | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad experiment name {self.name!r}: use 1-64 letters, digits, '-' and '_'")
        if not self.traffic:
            raise ValueError(f"experiment {self.name!r} needs traffic shares for at least two arms")
        shares = {str(k): float(v) for k, v in self.traffic.items()}
        bad = {k: v for k, v in shares.items() if not math.isfinite(v) or v <= 0}
        if bad:
            raise ValueError(f"experiment {self.name!r}: traffic shares must be finite and > 0, got {bad}")
        if len(shares) < 2:
            raise ValueError(f"experiment {self.name!r} needs at least two arms, got {sorted(shares)}")
        total = sum(shares.values())
        object.__setattr__(self, "traffic", {k: v / total for k, v in shares.items()})
        for arm in self.arms:
            if arm not in shares:
                raise ValueError(f"experiment {self.name!r}: arm {arm!r} is defined but has no traffic share")
        if self.control not in shares:
            raise ValueError(f"experiment {self.name!r}: control {self.control!r} has no traffic share "
                             f"(arms: {', '.join(shares)})")
        if not (math.isfinite(self.conversion_value) and self.conversion_value > 0):
            raise ValueError(f"conversion value must be finite and > 0, got {self.conversion_value}")
        if self.status not in ("running", "stopped"):
            raise ValueError(f"experiment status must be 'running' or 'stopped', got {self.status!r}")
        if not self.salt:
            object.__setattr__(self, "salt", self.name)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def compile(self, signals: Sequence[str], tuned: Mapping[str, float],
                bundle_variants: Variants | None = None) -> Variants:
        """The variants of this experiment for a bundle: its arms beside the bundle's own, its split
        and its salt (ValueError when an arm does not fit the bundle, e.g. names a missing signal)."""
        extra: dict[str, Any] = {}
        if bundle_variants is not None:
            extra.update({v.name: v for v in bundle_variants if not v.generated})
        for name, arm in self.arms.items():
            try:
                extra[name] = arm.variant_spec(tuned)
            except ValueError as err:
                raise ValueError(f"experiment {self.name!r}, arm {name!r}: {err}") from err
        try:
            return Variants(tuple(signals), tuned, extra, self.traffic, self.salt)
        except ValueError as err:
            raise ValueError(f"experiment {self.name!r}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "traffic": dict(self.traffic), "arms": {n: a.to_dict() for n, a in self.arms.items()},
                "control": self.control, "salt": self.salt, "conversion_value": self.conversion_value,
                "description": self.description, "status": self.status, "started_at": self.started_at,
                "stopped_at": self.stopped_at}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Experiment:
        return cls(name=str(raw["name"]), traffic=dict(raw["traffic"]),
                   arms={str(n): ArmSpec.from_dict(a) for n, a in dict(raw.get("arms", {})).items()},
                   control=str(raw.get("control", TUNED)), salt=str(raw.get("salt", "")),
                   conversion_value=float(raw.get("conversion_value", DEFAULT_CONVERSION_VALUE)),
                   description=str(raw.get("description", "")), status=str(raw.get("status", "running")),
                   started_at=float(raw.get("started_at", 0.0)),
                   stopped_at=None if raw.get("stopped_at") is None else float(raw["stopped_at"]))


@dataclass(frozen=True)
class ExperimentBook:
    """Every experiment of a bundle root (running and stopped), in the order they were created."""

    experiments: tuple[Experiment, ...] = ()
    revision: int = 0
    """Incremented by every write: a server compares it to know the file changed."""

    def __post_init__(self) -> None:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names repeat in {names}")
        running = [e.name for e in self.experiments if e.running]
        if len(running) > 1:
            raise ValueError(f"only one experiment may run at a time; running: {running}")

    @property
    def running(self) -> Experiment | None:
        return next((e for e in self.experiments if e.running), None)

    def get(self, name: str) -> Experiment:
        for e in self.experiments:
            if e.name == name:
                return e
        known = ", ".join(e.name for e in self.experiments) or "none"
        raise ValueError(f"no experiment {name!r}; known: {known}")

    def conversion_value(self, name: str) -> float:
        """The experiment's conversion threshold (the default for a name the book does not hold)."""
        return next((e.conversion_value for e in self.experiments if e.name == name), DEFAULT_CONVERSION_VALUE)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "revision": self.revision,
                           "experiments": [e.to_dict() for e in self.experiments]}, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ExperimentBook:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"not an experiments file of format {FORMAT}")
        return cls(tuple(Experiment.from_dict(e) for e in raw.get("experiments", [])), int(raw.get("revision", 0)))


@dataclass(frozen=True)
class ActiveExperiment:
    """The running experiment compiled for one served bundle."""

    experiment: Experiment
    variants: Variants
    bundle_version: str
    revision: int

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def token(self) -> str:
        """Names this split for the answer cache: an answer cached under another split is not reused."""
        return f"{self.name}@{self.revision}"

    def assign(self, user_id: str) -> Variant:
        return self.variants.get(self.variants.assign(user_id))

    @classmethod
    def compile(cls, book: ExperimentBook, version: str, signals: Sequence[str], tuned: Mapping[str, float],
                bundle_variants: Variants | None = None) -> ActiveExperiment | None:
        running = book.running
        if running is None:
            return None
        return cls(running, running.compile(signals, tuned, bundle_variants), version, book.revision)


def exposure_id(experiment: Experiment, user_id: str, variant: str, bundle_version: str,
                item_ids: Sequence[str]) -> str:
    """The id of one shown list: the same list shown to the same user under the same arm and bundle
    gets the same id (so a cached answer's id is right), any other gets another."""
    parts = [experiment.name, repr(experiment.started_at), user_id, variant, bundle_version, *item_ids]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


# -- the file in the bundle root -------------------------------------------------------------------

def _location(root: str | Path) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(str(root))
    return fs, f"{path.rstrip('/')}/{EXPERIMENTS_FILE}"


def read_book(root: str | Path) -> ExperimentBook:
    """The root's experiments (an empty book when there is no file); ValueError when it is unreadable."""
    fs, path = _location(root)
    try:
        text = fs.cat_file(path)
    except FileNotFoundError:
        return ExperimentBook()
    try:
        return ExperimentBook.from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{EXPERIMENTS_FILE} in {root} is invalid: {err}") from err


@contextlib.contextmanager
def _write_lock(root: str | Path) -> Iterator[None]:
    """Exclusive between writers on one host (a local root); object stores get last-writer-wins."""
    fs, path = _location(root)
    if not isinstance(fs, LocalFileSystem):
        yield
        return
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / ".experiments.lock"):
        yield


def write_book(root: str | Path, book: ExperimentBook) -> None:
    """Replace the root's experiments file whole: readers see the old file or the new, never a mix."""
    fs, path = _location(root)
    data = book.to_json().encode()
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return
    target = Path(path)
    tmp = target.with_name(f".{EXPERIMENTS_FILE}.{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_experiment(root: str | Path, experiment: Experiment, check: Any = None) -> ExperimentBook:
    """Add a running experiment to the root's book (ValueError while another runs or the name is
    taken). ``check(experiment)`` may raise ValueError first (e.g. compile it for the latest bundle)."""
    with _write_lock(root):
        book = read_book(root)
        if book.running is not None:
            raise ValueError(f"experiment {book.running.name!r} is running; stop it first "
                             f"(hybridrec experiment stop {book.running.name})")
        if any(e.name == experiment.name for e in book.experiments):
            raise ValueError(f"an experiment named {experiment.name!r} exists already; pick another name")
        experiment = replace(experiment, status="running", started_at=time.time(), stopped_at=None)
        if check is not None:
            check(experiment)
        book = ExperimentBook((*book.experiments, experiment), book.revision + 1)
        write_book(root, book)
    return book


def stop_experiment(root: str | Path, name: str | None = None) -> Experiment:
    """Stop the running experiment (``name``, when given, must be it); every user is back on the
    bundle's own assignment from the servers' next poll."""
    with _write_lock(root):
        book = read_book(root)
        running = book.running
        if running is None:
            raise ValueError("no experiment is running")
        if name is not None and name != running.name:
            book.get(name)  # an unknown name says so
            raise ValueError(f"experiment {name!r} is not running (running: {running.name!r})")
        stopped = replace(running, status="stopped", stopped_at=time.time())
        book = ExperimentBook(tuple(stopped if e.name == running.name else e for e in book.experiments),
                              book.revision + 1)
        write_book(root, book)
    return stopped
