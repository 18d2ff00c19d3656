"""Statistics over seeds (arprobe.science.aggregate), on numbers worked out by hand."""

import math
from pathlib import Path

import numpy as np
import pytest

from arprobe.science.aggregate import paired_difference, summarize, summarize_columns, t_cdf, t_quantile


def test_summarize_mean_and_sample_std_leave_out_nan():
    s = summarize([1.0, 2.0, float("nan"), 4.0])
    assert s.n == 3
    assert s.mean == pytest.approx(7 / 3)
    # deviations 1-7/3, 2-7/3, 4-7/3 -> squares 16/9, 1/9, 25/9 = 42/9; / (3-1) = 7/3
    assert s.std == pytest.approx(math.sqrt(7 / 3))
    assert len(s.values) == 4 and math.isnan(s.values[2])


def test_summarize_one_or_no_value():
    one = summarize([5.0])
    assert (one.n, one.mean) == (1, 5.0) and math.isnan(one.std)
    none = summarize([float("nan")])
    assert none.n == 0 and math.isnan(none.mean)


def test_summarize_columns_per_epoch():
    mean, std, n = summarize_columns([[1.0, float("nan")], [3.0, 4.0], [5.0, 6.0]])
    assert mean.tolist() == [3.0, 5.0]
    assert std[0] == pytest.approx(2.0)  # 1, 3, 5
    assert std[1] == pytest.approx(math.sqrt(2.0))  # 4, 6
    assert n.tolist() == [3, 2]


def test_t_quantiles_match_the_tables():
    # Student t, two-sided 95% (p = 0.975), from any statistics table.
    for df, t in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452)]:
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    assert t_quantile(0.5, 3) == 0.0
    assert t_quantile(0.025, 2) == pytest.approx(-4.3027, abs=1e-4)
    assert t_cdf(0.0, 7) == pytest.approx(0.5)
    # df = 1 is the Cauchy distribution: P(T <= 1) = 1/2 + atan(1)/pi = 3/4
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)


def test_paired_difference_by_hand():
    cyclic = [1.0, 2.0, 3.0]
    shuffle = [2.0, 4.0, 6.0]  # differences 1, 2, 3: mean 2, sd 1
    d = paired_difference(cyclic, shuffle)
    half = 4.302652729749 * 1.0 / math.sqrt(3)
    assert (d.n, d.mean, d.std) == (3, 2.0, 1.0)
    assert d.low == pytest.approx(2.0 - half) and d.high == pytest.approx(2.0 + half)
    assert d.confidence == 0.95


def test_paired_difference_drops_incomplete_pairs_and_needs_two():
    d = paired_difference([1.0, np.nan, 3.0], [2.0, 5.0, 5.0])  # pairs (1, 2) and (3, 5): diffs 1, 2
    assert d.n == 2 and d.mean == 1.5
    assert d.std == pytest.approx(math.sqrt(0.5))
    assert d.high - d.mean == pytest.approx(12.7062 * math.sqrt(0.5) / math.sqrt(2), abs=1e-3)
    single = paired_difference([1.0], [3.0])
    assert single.n == 1 and single.mean == 2.0 and math.isnan(single.low)


def run_numbers(name: str, seed: int, online_x, curve, first_rs: float):
    from arprobe.sweep.report import RunNumbers

    online_x = np.asarray(online_x, dtype=float)
    return RunNumbers(
        name,
        Path(name),
        seed,
        "complete",
        len(online_x),
        recovery=np.array([0.2, 0.3]),
        online=4.0 + seed,
        epochs=3,
        curve_x=np.arange(len(curve)) / 2.0,
        curve=np.asarray(curve, dtype=float),
        online_x=online_x,
        online_curve=np.full(len(online_x), 4.0),
        first_recovery=np.array([0.1, first_rs]),
        first_curve=np.asarray(curve, dtype=float) + 1.0,
    )


def test_curves_of_seeds_whose_epochs_differ_are_not_averaged():
    from arprobe.sweep.report import Group, aggregate_group

    group = Group({"schedule.order": "insert"}, [])
    # Epochs of 2 then 3 episodes in seed 0, 3 then 2 in seed 1 (insert order): episode 3 is the
    # start of epoch 2 in one seed and the middle of epoch 1 in the other.
    a = run_numbers("a", 0, [0.0, 0.5, 1.0, 1 + 1 / 3, 1 + 2 / 3], [5.0, 4.0, 6.0], 0.4)
    b = run_numbers("b", 1, [0.0, 1 / 3, 2 / 3, 1.0, 1.5], [5.0, 4.5, 6.5], 0.6)
    entry = aggregate_group(group, ["schedule.order"], [a, b])
    assert "shift_averaged_curve" not in entry and "online_loss_curve" not in entry
    assert entry["curves_not_averaged"] == "the seeds' epochs have different lengths (insert order)"
    # the per-seed numbers that do not depend on alignment are still summarised
    assert entry["final_recovery_score"]["per_seed"] == [0.3, 0.3]
    assert entry["first_doc_recovery_score"]["per_seed"] == [0.4, 0.6]
    assert entry["first_doc_recovery_score"]["mean"] == pytest.approx(0.5, rel=1e-12)
    # aligned epochs (cyclic): averaged, x_1's curve too: (5 + 5)/2 + 1, (4 + 4.5)/2 + 1, ...
    b.online_x = a.online_x
    entry = aggregate_group(group, ["schedule.order"], [a, b])
    assert entry["shift_averaged_curve"]["mean"] == pytest.approx([5.0, 4.25, 6.25], rel=1e-12)
    assert entry["first_doc_curve"]["mean"] == pytest.approx([6.0, 5.25, 7.25], rel=1e-12)
