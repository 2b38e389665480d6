"""bench/paired.py: the median of pair ratios and its sign-test interval."""

from __future__ import annotations

import math

import pytest

from bench.paired import PairedRatio, paired_ratio


def test_pairs_are_taken_in_run_order_and_their_median_is_reported():
    r = paired_ratio([2.0, 3.0, 4.0], [1.0, 3.0, 8.0])
    assert r.pairs == (2.0, 1.0, 0.5) and r.median == 1.0


def test_a_drift_shared_by_both_sides_cancels_pair_by_pair():
    """Both sides slow down together over the run; the first is 3% dearer throughout. The ratio of
    the medians is off by the drift's ordering; every pair ratio is 1.03."""
    drift = [1.0, 1.3, 0.9, 1.5, 1.1, 1.2, 0.8, 1.4]
    r = paired_ratio([1.03 * d for d in drift], drift)
    assert r.median == pytest.approx(1.03) and r.low == pytest.approx(1.03) and r.high == pytest.approx(1.03)


def test_the_interval_is_the_sign_tests_order_statistics():
    values = [1.0 + k / 100 for k in range(20)]  # pair ratios 1.00 .. 1.19
    r = paired_ratio(values, [1.0] * 20)
    # n = 20: P(Bin(20, 1/2) <= 5) = 0.0207 <= 0.025 < P(<= 6) = 0.0577, so j = 6: x_(6) and x_(15)
    assert (r.low, r.high) == (pytest.approx(1.05), pytest.approx(1.14))
    assert r.confidence == pytest.approx(1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2 ** 20)
    assert r.confidence >= 0.95
    assert r.describe() == "1.095x (95.9% interval 1.050-1.140, 20 pairs)"


def test_too_few_pairs_give_no_interval():
    """With 5 pairs the widest interval (min to max) covers the median with 1 - 2/32 = 93.75%."""
    r = paired_ratio([1.0, 2.0, 3.0, 4.0, 5.0], [1.0] * 5)
    assert r.low is None and r.high is None and "too few" in r.describe()
    six = paired_ratio([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [1.0] * 6)
    assert (six.low, six.high) == (1.0, 6.0) and six.confidence == pytest.approx(1 - 2 / 64)
    assert PairedRatio.from_dict(six.to_dict()) == six


@pytest.mark.parametrize("first, second", [([], []), ([1.0], [1.0, 2.0]), ([1.0, 0.0], [1.0, 1.0]),
                                           ([1.0], [-1.0]), ([float("nan")], [1.0]), ([1.0], [float("inf")])])
def test_bad_sides_are_refused(first, second):
    with pytest.raises(ValueError, match="paired_ratio"):
        paired_ratio(first, second)
