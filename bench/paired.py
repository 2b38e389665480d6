"""The ratio of two things measured in one interleaved run, as the machine drifts under them.

On a shared machine the speed of both sides moves together from minute to minute (one run of
bench/api_load.py --against saw the same server at 1.44 and 1.77 ms of CPU per request), so the
ratio of each adjacent pair of runs (A B, then B A, ...) is steadier than the ratio of the two
sides' medians. ``paired_ratio`` gives the median of the pair ratios with a distribution-free
confidence interval for it (order statistics of the binomial sign test): a claim such as "within
2%" holds when the interval lies within 0.98-1.02, not when one median happens to.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PairedRatio:
    pairs: tuple[float, ...]
    """first[k] / second[k], in run order."""
    median: float
    low: float | None
    """The confidence interval of the median; None with too few pairs for that confidence."""
    high: float | None
    confidence: float
    """The interval's actual coverage (order statistics give a discrete set; at least the one asked for)."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pairs": list(self.pairs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedRatio:
        return cls(**{**data, "pairs": tuple(data["pairs"])})

    def describe(self) -> str:
        """'1.013x (96.1% interval 0.981-1.044, 12 pairs)'."""
        if self.low is None:
            return f"{self.median:.3f}x ({len(self.pairs)} pairs, too few for an interval)"
        return (f"{self.median:.3f}x ({self.confidence:.1%} interval {self.low:.3f}-{self.high:.3f}, "
                f"{len(self.pairs)} pairs)")


def paired_ratio(first: Sequence[float], second: Sequence[float], confidence: float = 0.95) -> PairedRatio:
    """Median of first[k] / second[k] and an interval [x_(j), x_(n+1-j)] of the sorted ratios that
    holds the true median with probability >= ``confidence``: the largest j with
    P(Binomial(n, 1/2) < j) <= (1 - confidence) / 2. Needs 6 pairs for 95%.

    ValueError for sides of different lengths, no pairs, or a value that is not positive.
    """
    if len(first) != len(second) or not first:
        raise ValueError(f"paired_ratio needs two equal, non-empty sides, got {len(first)} and {len(second)}")
    if not all(math.isfinite(v) and v > 0 for v in (*first, *second)):
        raise ValueError("paired_ratio needs finite, positive values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    pairs = tuple(a / b for a, b in zip(first, second))
    n = len(pairs)
    tail = (1 - confidence) / 2
    below, j = 0.0, 0  # invariant: below == P(Binomial(n, 1/2) < j)
    while j < n:
        step = math.comb(n, j) / 2 ** n
        if below + step > tail:
            break
        below += step
        j += 1
    ordered = sorted(pairs)
    if j == 0:
        return PairedRatio(pairs, statistics.median(pairs), None, None, confidence)
    return PairedRatio(pairs, statistics.median(pairs), ordered[j - 1], ordered[n - j], 1 - 2 * below)
