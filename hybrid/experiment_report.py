"""The analysis of an experiment: per-arm rates with confidence intervals, the lift over control,
ranking quality of what users did against what they were shown, and a sample-ratio-mismatch check.

The unit is the user (assignment is per user, sticky), so rates are shares of exposed users:

- **click**: an interaction that names an exposure (``recordInteraction(exposureId:)``) and whose
  item was in that exposure's list; a user *clicked* after at least one such interaction;
- **conversion**: a click whose value is at least the experiment's ``conversion_value`` (default 4:
  a rating of 4 of 5; a view, value 1, does not convert unless the threshold is lowered);
- **NDCG@k / hit rate of later interactions**: per exposure that received any joined interaction,
  the relevant items are those interactions' items; NDCG@k with binary gains and the ideal DCG over
  min(|relevant|, k) (the evaluation protocol's definition, k = the list's length), hit = at least
  one relevant item in the list; averaged over those exposures.

Intervals (level ``1 - alpha``, 95% by default): Wilson score intervals for each arm's rates (scipy),
Newcombe's hybrid score interval (his method 10, built from the two Wilson intervals) for the
difference of an arm's rate and control's, and a t interval for the NDCG and hit-rate means. The
sample-ratio-mismatch check is a chi-square goodness-of-fit test of the users per arm against the
configured shares; p < 0.001 flags the experiment (assignment or logging is broken somewhere, and
the figures cannot be trusted).

This module is for the command line and notebooks; the API never imports it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from etl.events_log import Exposure
from hybrid.experiments import Experiment

__all__ = ["Outcome", "Rate", "ArmReport", "ExperimentReport", "analyse", "wilson", "newcombe", "format_report",
           "plot_report", "SRM_ALPHA"]

SRM_ALPHA = 0.001
"""A sample-ratio mismatch is flagged below this p-value."""


@dataclass(frozen=True)
class Outcome:
    """An interaction joined to an exposure."""

    exposure_id: str
    user_id: str
    item_id: str
    value: float


@dataclass(frozen=True)
class Rate:
    """A proportion (or a mean) with its interval."""

    value: float
    low: float
    high: float
    n: int
    """The denominator (users, or exposures for the ranking means)."""

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"


@dataclass(frozen=True)
class ArmReport:
    name: str
    share: float
    """Configured traffic share."""
    users: int
    exposures: int
    outcomes: int
    click_rate: Rate
    conversion_rate: Rate
    ndcg: Rate
    hit_rate: Rate
    click_lift: Rate | None
    """Click rate minus control's, with Newcombe's interval (None for control)."""
    conversion_lift: Rate | None


@dataclass(frozen=True)
class ExperimentReport:
    experiment: Experiment
    arms: tuple[ArmReport, ...]
    srm_chi2: float
    srm_p: float
    alpha: float

    @property
    def srm(self) -> bool:
        """True when the users per arm do not fit the configured shares (p < SRM_ALPHA)."""
        return self.srm_p < SRM_ALPHA

    def arm(self, name: str) -> ArmReport:
        return next(a for a in self.arms if a.name == name)


# -- intervals ----------------------------------------------------------------------------------------

def wilson(successes: int, n: int, alpha: float = 0.05) -> Rate:
    """Wilson score interval of a proportion (scipy.stats.binomtest)."""
    if n == 0:
        return Rate(float("nan"), float("nan"), float("nan"), 0)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return Rate(successes / n, float(ci.low), float(ci.high), n)


def newcombe(arm: Rate, control: Rate) -> Rate:
    """Newcombe's hybrid score interval of ``arm - control`` from their Wilson intervals (at their level)."""
    d = arm.value - control.value
    low = d - math.sqrt((arm.value - arm.low) ** 2 + (control.high - control.value) ** 2)
    high = d + math.sqrt((arm.high - arm.value) ** 2 + (control.value - control.low) ** 2)
    return Rate(d, low, high, min(arm.n, control.n))


def _mean(values: Sequence[float], alpha: float) -> Rate:
    n = len(values)
    if n == 0:
        return Rate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(np.mean(values))
    if n == 1:
        return Rate(mean, float("nan"), float("nan"), 1)
    half = float(stats.t.ppf(1 - alpha / 2, n - 1) * stats.sem(values))
    return Rate(mean, mean - half, mean + half, n)


def ndcg(shown: Sequence[str], relevant: set[str]) -> float:
    """NDCG@len(shown) with binary gains, ideal DCG over min(|relevant|, len(shown))."""
    if not shown or not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(k + 2) for k, item in enumerate(shown) if item in relevant)
    ideal = sum(1.0 / math.log2(k + 2) for k in range(min(len(relevant), len(shown))))
    return dcg / ideal


# -- the analysis -------------------------------------------------------------------------------------

def analyse(experiment: Experiment, exposures: Iterable[Exposure], outcomes: Iterable[Outcome],
            alpha: float = 0.05) -> ExperimentReport:
    """Per-arm figures of ``experiment`` from its exposures and the interactions joined to them
    (exposures of other experiments and outcomes of unknown exposures are ignored)."""
    shown: dict[str, Exposure] = {}
    arm_of_user: dict[str, str] = {}
    for x in sorted(exposures, key=lambda x: (x.shown_at, x.exposure_id)):
        if x.experiment != experiment.name or x.exposure_id in shown:
            continue
        shown[x.exposure_id] = x
        arm_of_user.setdefault(x.user_id, x.variant)  # a user counts in the arm first shown
    relevant: dict[str, set[str]] = defaultdict(set)
    clicked: set[str] = set()
    converted: set[str] = set()
    n_outcomes: dict[str, int] = defaultdict(int)
    for o in outcomes:
        x = shown.get(o.exposure_id)
        if x is None or x.user_id != o.user_id:
            continue
        relevant[o.exposure_id].add(o.item_id)
        n_outcomes[x.variant] += 1
        if o.item_id in x.items:
            clicked.add(x.user_id)
            if o.value >= experiment.conversion_value:
                converted.add(x.user_id)
    users: dict[str, list[str]] = defaultdict(list)
    for user, arm in arm_of_user.items():
        users[arm].append(user)
    exposures_of: dict[str, list[Exposure]] = defaultdict(list)
    for x in shown.values():
        exposures_of[x.variant].append(x)

    names = [experiment.control, *[n for n in experiment.traffic if n != experiment.control]]
    names += sorted(set(users) - set(names))  # arms no longer configured still show
    base: dict[str, tuple[Rate, Rate]] = {}
    arms: list[ArmReport] = []
    for name in names:
        members = users.get(name, [])
        clicks = wilson(sum(u in clicked for u in members), len(members), alpha)
        conversions = wilson(sum(u in converted for u in members), len(members), alpha)
        answered = [x for x in exposures_of.get(name, []) if x.exposure_id in relevant]
        gains = [ndcg(x.items, relevant[x.exposure_id]) for x in answered]
        hits = [float(bool(relevant[x.exposure_id] & set(x.items))) for x in answered]
        if name == experiment.control:
            base["rates"] = (clicks, conversions)
        control = base.get("rates")
        lifts = (None, None) if name == experiment.control or control is None or not members or control[0].n == 0 \
            else (newcombe(clicks, control[0]), newcombe(conversions, control[1]))
        arms.append(ArmReport(name, float(experiment.traffic.get(name, 0.0)), len(members),
                              len(exposures_of.get(name, [])), n_outcomes.get(name, 0), clicks, conversions,
                              _mean(gains, alpha), _mean(hits, alpha), *lifts))
    chi2, p = srm_test({a.name: a.users for a in arms}, experiment.traffic)
    return ExperimentReport(experiment, tuple(arms), chi2, p, alpha)


def srm_test(users: Mapping[str, int], shares: Mapping[str, float]) -> tuple[float, float]:
    """Chi-square goodness of fit of users per arm against the shares (users in an arm without a
    share count against it); (nan, 1.0) before anyone was exposed."""
    observed = np.array([users.get(n, 0) for n in shares] + [sum(v for n, v in users.items() if n not in shares)],
                        float)
    total = observed.sum()
    if total == 0:
        return float("nan"), 1.0
    expected = np.array([shares[n] for n in shares] + [0.0]) * total
    if observed[-1] > 0:  # users in an arm the split does not have: as mismatched as it gets
        return float("inf"), 0.0
    result = stats.chisquare(observed[:-1], expected[:-1])
    return float(result.statistic), float(result.pvalue)


# -- output ---------------------------------------------------------------------------------------------

def format_report(report: ExperimentReport) -> str:
    e = report.experiment
    level = f"{100 * (1 - report.alpha):g}%"
    lines = [
        f"experiment {e.name} ({e.status}); control {e.control}; conversion: a click with value >= {e.conversion_value:g}",
        f"rates are shares of exposed users with {level} Wilson intervals; lifts are differences from control "
        f"with {level} Newcombe intervals; NDCG and hit rate over exposures with joined interactions ({level} t)",
        "",
        f"{'arm':<16}{'share':>7}{'users':>8}{'exposures':>11}{'outcomes':>10}  "
        f"{'click rate':<28}{'conversion rate':<28}{'NDCG':<28}{'hit rate':<28}",
    ]
    for a in report.arms:
        lines.append(f"{a.name:<16}{a.share:>7.3f}{a.users:>8}{a.exposures:>11}{a.outcomes:>10}  "
                     f"{str(a.click_rate):<28}{str(a.conversion_rate):<28}{str(a.ndcg):<28}{str(a.hit_rate):<28}")
    lines.append("")
    for a in report.arms:
        if a.conversion_lift is not None and a.click_lift is not None:
            lines.append(f"lift of {a.name} over {e.control}: click rate {_signed(a.click_lift)}, "
                         f"conversion rate {_signed(a.conversion_lift)}")
    verdict = "MISMATCH: do not trust these figures" if report.srm else "ok"
    lines.append(f"sample ratio: chi2 {report.srm_chi2:.3f}, p {report.srm_p:.4g} against the configured shares "
                 f"({verdict}; flagged below p {SRM_ALPHA})")
    return "\n".join(lines)


def _signed(r: Rate) -> str:
    return f"{r.value:+.4f} [{r.low:+.4f}, {r.high:+.4f}]"


def plot_report(report: ExperimentReport, path: str | Path) -> Path:
    """A PNG of each arm's click and conversion rates with their intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    arms = report.arms
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, title, pick in ((axes[0], "click rate", lambda a: a.click_rate),
                            (axes[1], "conversion rate", lambda a: a.conversion_rate)):
        rates = [pick(a) for a in arms]
        x = np.arange(len(arms))
        values = np.array([r.value for r in rates])
        err = np.array([[r.value - r.low for r in rates], [r.high - r.value for r in rates]])
        ax.bar(x, values, yerr=err, capsize=6, color=["#888888", *["#3b75af"] * (len(arms) - 1)])
        ax.set_xticks(x, [f"{a.name}\n{a.users} users" for a in arms])
        ax.set_title(f"{title} ({100 * (1 - report.alpha):g}% Wilson)")
        ax.set_ylim(bottom=0)
    flag = "  SAMPLE RATIO MISMATCH" if report.srm else ""
    fig.suptitle(f"experiment {report.experiment.name}: srm p={report.srm_p:.3g}{flag}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report_from_logs(bundle_root: str | Path, name: str, *, events_dir: str | Path | None = None,
                     redis_url: str | None = None, prefix: str = "hybridrec", alpha: float = 0.05) -> ExperimentReport:
    """``analyse`` of the root's experiment ``name`` over the API's logs (the events folder and/or
    Redis; deleted users' exposures and interactions are left out, as training leaves them out)."""
    from graphql_api.events import read_exposures, read_outcomes
    from hybrid.experiments import read_book

    experiment = read_book(bundle_root).get(name)
    exposures = [x for x in read_exposures(events_dir, redis_url=redis_url, prefix=prefix) if x.experiment == name]
    outcomes = [Outcome(str(e.exposure_id), e.user_id, e.item_id, e.value)
                for e in read_outcomes(events_dir, redis_url=redis_url, prefix=prefix)]
    return analyse(experiment, exposures, outcomes, alpha)
