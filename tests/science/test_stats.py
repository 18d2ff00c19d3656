"""arprobe.science.stats on small arrays whose answers are worked out by hand in the comments.

Student-t quantiles are checked against printed tables (4 decimals), so the interval ends carry
that table's rounding: 1e-4 relative. Means and stds of a handful of exact decimals are exact to
float64 rounding (1e-12)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from arprobe.science.stats import (
    equivalence_test,
    mean_interval,
    paired_difference,
    per_seed_slopes,
    seeds_needed,
    slope_interval,
    t_quantile,
)


def test_t_quantiles_match_the_printed_tables():
    for df, table in [(2, 4.3027), (4, 2.7764), (19, 2.0930), (16, 2.1199), (17, 2.1098)]:
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-4)
    assert t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-4)  # the 90% interval TOST uses
    assert t_quantile(0.975, 1e9) == pytest.approx(1.9600, abs=1e-4)  # df → ∞: the normal's 1.960
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)


def test_paired_difference_by_hand():
    # b − a = [1, 2, 2]: mean 5/3; deviations −2/3, 1/3, 1/3, squares sum 6/9, / (n − 1) = 1/3,
    # sd = √(1/3) = 0.57735; half-width t_{.975,2} · sd / √3 = 4.3027 · 0.33333 = 1.43423.
    d = paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 5.0])
    assert d.n == 3
    assert d.mean == pytest.approx(5 / 3, rel=1e-12)
    assert d.std == pytest.approx(math.sqrt(1 / 3), rel=1e-12)
    assert d.low == pytest.approx(5 / 3 - 1.43423, rel=1e-4)
    assert d.high == pytest.approx(5 / 3 + 1.43423, rel=1e-4)
    assert d.sign() == 1  # [0.232, 3.101] is above 0
    # A NaN on either side drops that pair: two pairs left, [1, 2] → mean 1.5, sd √0.5.
    d = paired_difference([1.0, 2.0, np.nan], [2.0, 4.0, 5.0])
    assert (d.n, d.mean, d.std) == (2, 1.5, pytest.approx(math.sqrt(0.5), rel=1e-12))


def test_interval_of_fewer_than_two_values_is_undefined():
    one = mean_interval([0.3])
    assert one.n == 1 and one.mean == 0.3
    assert math.isnan(one.low) and math.isnan(one.high) and one.sign() == 0
    none = mean_interval([np.nan, np.nan])
    assert none.n == 0 and math.isnan(none.mean)


def test_per_seed_slopes_on_rank_and_on_value():
    # On the rank 0, 1, 2 (centred −1, 0, 1; Σ(x − x̄)² = 2): [0, 1, 2] → (2 − 0)/2 = 1,
    # [1, 1, 1] → 0, [2, 1, 0] → −1; a NaN anywhere makes that seed's slope NaN.
    slopes = per_seed_slopes([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 1.0, 0.0], [0.0, np.nan, 1.0]])
    assert slopes[:3] == pytest.approx([1.0, 0.0, -1.0], abs=1e-12)
    assert math.isnan(slopes[3])
    # On the values x = [1, 2, 4] (x̄ = 7/3), y = 2x − 1 = [1, 3, 7] lies on a line of slope 2.
    assert per_seed_slopes([[1.0, 3.0, 7.0]], x=[1.0, 2.0, 4.0]) == pytest.approx([2.0], rel=1e-12)


def test_slope_interval_by_hand():
    # Seeds with slopes 1, 2, 3 per step: mean 2, sd 1, half-width 4.3027 / √3 = 2.48417,
    # interval [−0.484, 4.484]: it holds 0, so the trend is not established at n = 3.
    values = [[0.0, 1.0, 2.0], [0.0, 2.0, 4.0], [0.0, 3.0, 6.0]]
    s = slope_interval(values)
    assert (s.n, s.mean, s.std) == (3, pytest.approx(2.0, rel=1e-12), pytest.approx(1.0, rel=1e-12))
    assert s.low == pytest.approx(2 - 2.48417, rel=1e-4)
    assert s.high == pytest.approx(2 + 2.48417, rel=1e-4)
    assert s.sign() == 0


def test_equivalence_test_by_hand():
    # Differences [0.01, −0.01, 0.02, 0, −0.02]: mean 0, sd √((1 + 1 + 4 + 0 + 4)e-4 / 4) = 0.0158114;
    # the 90% interval is ± t_{.95,4} · sd / √5 = 2.1318 · 0.00707107 = ± 0.0150741.
    a = np.zeros(5)
    b = np.array([0.01, -0.01, 0.02, 0.0, -0.02])
    e = equivalence_test(a, b, margin=0.05)
    assert e.interval.confidence == pytest.approx(0.90)
    assert e.interval.high == pytest.approx(0.0150741, rel=1e-4)
    assert e.interval.low == pytest.approx(-0.0150741, rel=1e-4)
    assert e.equivalent and not e.different and e.margin == 0.05
    # A margin of 0.01 lies inside the interval: neither equivalent nor shown different.
    narrow = equivalence_test(a, b, margin=0.01)
    assert not narrow.equivalent and not narrow.different
    # Shifted by 0.2, the whole interval [0.185, 0.215] is beyond the 0.05 margin.
    far = equivalence_test(a, b + 0.2, margin=0.05)
    assert far.different and not far.equivalent


def test_seeds_needed_by_hand():
    # mean 1, sd 1: t_{.975,n−1}/√n is 8.98, 2.48, 1.59, 1.24, 1.05 for n = 2..6 and
    # 2.4469 / √7 = 0.925 < 1 at n = 7.
    assert seeds_needed(1.0, 1.0) == 7
    assert seeds_needed(-1.0, 1.0) == 7  # the sign of the effect does not matter
    # mean 0.5, sd 1: at n = 17, 2.1199 / √17 = 0.514 ≥ 0.5; at n = 18, 2.1098 / √18 = 0.497.
    assert seeds_needed(0.5, 1.0) == 18
    assert seeds_needed(0.0, 1.0) is None
    assert seeds_needed(float("nan"), 1.0) is None
    assert seeds_needed(1e-6, 1.0, most=100) is None  # would need ~4e12 seeds
