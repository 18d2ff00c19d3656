"""The paper table's verdicts, on small synthetic sweep summaries (the shape of sweep.json).

Every verdict comes from seed-paired statistics (arprobe.science.stats, tested by hand in
test_stats.py); these tests check which comparison each claim gets and what it concludes."""

from __future__ import annotations

import pytest

from benchmarks.paper_table import control_of, in_factor_order, verdict


def point(label: str, options: dict, values: list, seeds=None, control: str | None = None) -> dict:
    seeds = list(range(len(values))) if seeds is None else seeds
    entry = {
        "label": label,
        "options": options,
        "n": len(values),
        "seeds": seeds,
        "final_recovery_score": {"epoch": 4, "n": len(values), "per_seed": values},
    }
    return {**entry, "control": control} if control else entry


def width_sweep(rows: list[list[float]]) -> dict:
    return {
        "points": [point(f"d_model={d}", {"model.d_model": d}, v) for d, v in zip([64, 128, 256, 512], rows)]
    }


# Fig. 3a as kept from the 3-seed twin (benchmarks/results/twins/fig3a_width-cpu.json, RS(3)).
FIG3A = [
    [0.29686, 0.28547, 0.23858],
    [0.35850, 0.33070, 0.33620],
    [0.41480, 0.34420, 0.37170],
    [0.30840, 0.29120, 0.33600],
]


def test_fig3a_kept_numbers_are_inconclusive_not_yes():
    # The old rule read "yes" from last mean 0.312 > first 0.274. Per seed, the slope on the rank
    # (centred −1.5, −0.5, 0.5, 1.5; Σc² = 5) is 0.04546/5 = 0.00909, 0.01535/5 = 0.00307 and
    # 0.16398/5 = 0.03280: mean 0.01499, sd 0.01572, half-width 4.3027 · 0.01572 / √3 = 0.0390,
    # so [−0.024, 0.054] holds 0. At that spread t_{.975,6} · 0.01572 / √7 = 0.0145 < 0.0150: 7 seeds.
    text = verdict(width_sweep(FIG3A), "increasing")
    assert text.startswith(
        "inconclusive: per-seed slope of RS on the factor's rank 0.015/step [-0.024, 0.054] (n=3)"
    )
    assert "about 7 seeds would decide it at this spread" in text


def test_a_clear_rise_is_yes_and_a_step_against_it_is_partly():
    rising = [[0.1, 0.11, 0.09], [0.2, 0.21, 0.19], [0.3, 0.31, 0.29], [0.4, 0.41, 0.39]]
    assert verdict(width_sweep(rising), "increasing").startswith("yes: per-seed slope of RS")
    assert verdict(width_sweep(rising), "decreasing").startswith("no: ")
    # 0.1 → 0.3 → 0.25 → 0.5: rises overall, but the step 128 → 256 falls by 0.05 in every seed
    dip = [[0.1, 0.11, 0.09], [0.3, 0.31, 0.29], [0.25, 0.26, 0.24], [0.5, 0.51, 0.49]]
    text = verdict(width_sweep(dip), "increasing")
    assert text.startswith("partly: ") and "but against it: d_model=128 → d_model=256 -0.050 [" in text


def test_model_names_are_judged_in_size_order_not_grid_order():
    # Fig. 2b's grid lists pythia-31m before tiny; by non-embedding parameters 12·d²·L, pythia-14m
    # 1.2M < tiny 3.1M < pythia-31m 4.7M < pythia-70m 18.9M.
    names = ["pythia-14m", "pythia-31m", "tiny", "pythia-70m"]
    rs = {"pythia-14m": 0.1, "tiny": 0.2, "pythia-31m": 0.3, "pythia-70m": 0.4}
    points = [point(f"name={n}", {"model.name": n}, [rs[n] + e for e in (0.0, 0.01, -0.01)]) for n in names]
    ordered = in_factor_order(points)
    assert [p["label"] for p in ordered] == [
        "name=pythia-14m",
        "name=tiny",
        "name=pythia-31m",
        "name=pythia-70m",
    ]
    assert verdict({"points": points}, "increasing").startswith("yes: ")  # in grid order: partly
    ladder = ["~/.cache/arprobe/ladders/default/17m", "~/.cache/arprobe/ladders/default/700k"]
    points = [point(n, {"model.name": n}, [0.1]) for n in ladder]
    assert [p["label"] for p in in_factor_order(points)] == ladder[::-1]


def shifted(values: list[float], by: float) -> list[float]:
    return [v + by for v in values]


def test_recovery_at_every_point_is_judged_against_the_matched_control_not_rs_above_zero():
    base = [0.30, 0.32, 0.28]
    # RS of 0.3 everywhere but no control: RS ≥ 0 by construction, so nothing is concluded.
    alone = {"points": [point(f"n_docs={t}", {"data.n_docs": t}, base) for t in (5, 10, 20)]}
    assert verdict(alone, "positive").startswith("inconclusive: no matched shuffled control")
    # With `control = "shuffle"`: ΔRS = 0.3 − 0.1 in every seed at T=5 and 10 → above 0; at T=20 the
    # control recovers as much (ΔRS −0.01, 0.02, −0.01: mean 0, interval holds 0).
    points = []
    for t, control in ((5, shifted(base, -0.2)), (10, shifted(base, -0.2)), (20, [0.31, 0.30, 0.29])):
        points.append(point(f"n_docs={t}", {"data.n_docs": t}, base))
        points.append(point(f"n_docs={t} (shuffle control)", {"data.n_docs": t}, control, control="shuffle"))
    summary = {"points": points}
    assert control_of(summary, points[0]) is points[1]
    text = verdict(summary, "positive")
    assert text.startswith(
        "inconclusive: vs the matched shuffled control, n_docs=5: ΔRS 0.200 [0.200, 0.200] (n=3)"
    )
    assert "n_docs=20: ΔRS -0.000 [" in text or "n_docs=20: ΔRS 0.000 [" in text
    points[5]["final_recovery_score"]["per_seed"] = shifted(base, 0.1)  # the control recovers more
    assert verdict(summary, "positive").startswith("no: ")
    points[5]["final_recovery_score"]["per_seed"] = [0.1, 0.15, 0.05]
    assert verdict(summary, "positive").startswith("yes: ")


def test_a_grid_shuffle_point_is_the_control_of_the_others():
    # App. B.1 as in the paper: x_1's RS at N < T against the shuffled order (the grid's last point).
    schedules = [{"schedule.order": "partial-shuffle", "schedule.shuffle_until": n} for n in (3, 6, 9)]
    points = [
        point(f"N={s['schedule.shuffle_until']}", {"schedule": s}, [0.3, 0.35, 0.32]) for s in schedules
    ]
    points.append(point("shuffle", {"schedule": {"schedule.order": "shuffle"}}, [0.05, 0.1, 0.07]))
    for p in points:
        p["first_doc_recovery_score"] = p.pop("final_recovery_score")
    summary = {"points": points}
    assert control_of(summary, points[0]) is points[3]
    text = verdict(summary, "positive", metric="first_doc_recovery_score")
    assert text.startswith("yes: vs the matched shuffled control, N=3: ΔRS 0.250 [0.250, 0.250] (n=3)")


def test_pairs_use_only_the_seeds_both_sides_have():
    cyclic = point("order=cyclic", {"schedule.order": "cyclic"}, [0.5, 0.6, 0.4], seeds=[0, 1, 2])
    shuffle = point("order=shuffle", {"schedule.order": "shuffle"}, [0.1, 0.2], seeds=[1, 2])
    # pairs (seed 1: 0.6 − 0.1, seed 2: 0.4 − 0.2) = [0.5, 0.2]: mean 0.35, n = 2
    text = verdict({"points": [cyclic, shuffle]}, "rs_first_above_rest")
    assert "order=cyclic − order=shuffle 0.350 [" in text and "(n=2)" in text


def test_matters_little_is_an_equivalence_test_with_its_margin():
    flat = [[0.30, 0.32, 0.28], [0.31, 0.33, 0.29], [0.30, 0.31, 0.29]]
    points = [point(f"n_heads={h}", {"model.n_heads": h}, v) for h, v in zip((1, 2, 4), flat)]
    text = verdict({"points": points}, "flat")
    assert text.startswith("yes: equivalence (TOST) within ±0.05 RS: n_heads=2 − n_heads=1 90% 0.010 [")
    points[2]["final_recovery_score"]["per_seed"] = [0.40, 0.42, 0.38]  # +0.1 in every seed
    assert verdict({"points": points}, "flat").startswith("no: ")


@pytest.mark.parametrize(
    "low, high, word", [(0.1, 0.3, "yes"), (-0.1, 0.3, "inconclusive"), (-0.3, -0.1, "no")]
)
def test_table1_reads_the_paired_interval(low, high, word):
    row = {
        "label": "",
        "differences": {"shuffle": {"mean": (low + high) / 2, "ci_low": low, "ci_high": high, "n": 10}},
    }
    summary = {"points": [], "table1": {"rows": [row]}}
    assert verdict(summary, "online_cyclic_lower").startswith(f"{word}: shuffle − cyclic online loss")
