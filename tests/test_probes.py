"""Built-in probes, the report and `arprobe analyze` / `arprobe probes`: numbers on hand-made
stores whose answers are known, every probe on one tiny real run, and the error paths."""

import json
from pathlib import Path

import numpy as np
import pytest

from arprobe.cli.main import main
from arprobe.errors import UserError
from arprobe.probes.base import Probe
from arprobe.probes.registry import Registry
from arprobe.probes.runner import run_probe, write_report
from arprobe.storage import RunStore
from tests.store_factory import cyclic, helix, make_store

BUILTINS = [
    "activation_drift",
    "gradient_similarity",
    "loss_curves",
    "online_loss",
    "pairwise_recovery",
    "pca_weights",
    "recovery_score",
    "toy_model",
    "weight_residual_similarity",
]

# T = 3, E = 2, cyclic (same matrix as tests/test_recovery.py). Every document: right after its
# training 1, then 3 (the peak), then 2 just before the next: RS(1) = (3 − 2) / (3 − 1) = 0.5.
EVAL = np.array([[4.0, 4, 4], [1, 5, 5], [3, 1, 5], [2, 3, 1], [0.5, 2, 3], [1, 0.5, 2], [2, 1, 0.5]])


def probe(name: str) -> Probe:
    p = Registry().get(name)
    p.progress = False
    return p


def run_one(name: str, run_dir: Path, out: Path, **options) -> dict:
    """Run probe ``name`` on one store, return its result.json (asserting it ran)."""
    with RunStore(run_dir) as store:
        outcome = run_probe(probe(name), [store], out, options)
    record = json.loads((out / name / "result.json").read_text())
    assert outcome.status == "ok", outcome.reason
    assert record["status"] == "ok" and record["figures"] == outcome.figures
    for fig in record["figures"]:
        assert (out / name / fig).stat().st_size > 10_000  # a real PNG, not an empty canvas
    return record


# --- hand-made stores: numbers known by hand ----------------------------------------------------


def test_recovery_score_and_loss_curves_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    rs = run_one("recovery_score", run, tmp_path / "report")
    assert rs["result"]["recovery_score"] == [0.5]
    assert (rs["result"]["l_max"], rs["result"]["l_before"], rs["result"]["l_after"]) == ([3.0], [2.0], [1.0])
    # no control next to this run: the headline says RS alone is not evidence and how to get one
    assert rs["headline"] == {"recovery_score": [0.5], "verdict": rs["result"]["verdict"]}
    assert rs["result"]["verdict"].startswith("RS(1) 0.500; no matched shuffled control in this run")
    assert rs["figures"] == ["recovery_score.png"]

    lc = run_one("loss_curves", run, tmp_path / "report")["result"]
    assert lc["doc_trained_at_episodes"] == [1, 4]
    assert lc["doc_loss_before_training"] == [4.0, 2.0]  # rows 0 and 3: the red markers of Fig. 1a
    assert lc["doc_peak_position"] == [1] and lc["doc_recovered"] == [0.5]
    # shift-averaged: rows k_t − 1 .. of each column; offset 0 averages 4, 5, 5
    assert lc["shift_avg_mean"][0] == pytest.approx(14 / 3)
    assert lc["shift_avg_offset_epochs"][:2] == pytest.approx([0, 1 / 3])
    assert lc["shift_avg_recovered"] == [0.5]
    assert lc["epoch_boundaries_episodes"] == [3] and lc["shift_avg_training_offsets"] == [1, 4]


def test_recovery_score_needs_two_epochs(tmp_path):
    run = make_store(tmp_path / "one", loss_eval=EVAL[:4], schedule_doc=[0, 1, 2], schedule_epoch=[1, 1, 1])
    with RunStore(run) as store:
        outcome = run_probe(probe("recovery_score"), [store], tmp_path / "report")
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "Run 'one' trained no document twice, and the recovery score compares two trainings; "
        "run at least 2 epochs (schedule.epochs)."
    )


def test_online_loss_groups_runs_by_config_without_seed(tmp_path):
    doc, epoch = cyclic(3, 2)

    def online(values, name, seed, order):
        # the online loss of episode k is the eval matrix just before it: loss_eval[k − 1, doc(k)]
        eval_ = np.ones((7, 3))
        eval_[np.arange(6), doc] = values
        return make_store(
            tmp_path / name,
            loss_eval=eval_,
            schedule_doc=doc,
            schedule_epoch=epoch,
            seed=seed,
            config={"schedule": {"order": order}},
        )

    runs = [
        online([5, 5, 5, 1, 2, 3], "c0", 0, "cyclic"),
        online([5, 5, 5, 3, 4, 5], "c1", 1, "cyclic"),
        online([5, 5, 5, 6, 6, 6], "s0", 0, "shuffle"),
    ]
    stores = [RunStore(r) for r in runs]
    try:
        outcome = run_probe(probe("online_loss"), stores, tmp_path / "report")
    finally:
        for s in stores:
            s.close()
    assert outcome.status == "ok", outcome.reason
    result = json.loads((tmp_path / "report/online_loss/result.json").read_text())["result"]
    cyc, shuf = result["groups"]
    assert (cyc["label"], shuf["label"]) == ("cyclic", "shuffle")
    assert cyc["seeds"] == [0, 1] and len(shuf["runs"]) == 1
    # epochs 2..E means: run c0 2, run c1 4 -> 3 ± 1.414 (sample std); shuffle 6, no std from one run
    assert cyc["mean_after_first_epoch"] == pytest.approx(3.0)
    assert cyc["mean_after_first_epoch_std"] == pytest.approx(np.sqrt(2))
    assert cyc["per_episode_mean"] == pytest.approx([5, 5, 5, 2, 3, 4])
    assert shuf["mean_after_first_epoch"] == 6.0 and shuf["mean_after_first_epoch_std"] is None
    assert outcome.headline == {
        "cyclic: mean online loss, epochs 2..2": 3.0,
        "cyclic: std over 2 runs": pytest.approx(np.sqrt(2)),
        "shuffle: mean online loss, epochs 2..2": 6.0,
    }


def test_gradient_similarity_of_gradients_on_a_circle(tmp_path):
    # document i's gradient points at angle 2πi/T: cos(i, j) = cos(2π(i − j)/T)
    T = 6
    angle = 2 * np.pi * np.arange(T) / T
    rng = np.random.default_rng(0)
    plane = np.linalg.qr(rng.normal(size=(20, 2)))[0].T  # [2, D] orthonormal
    g = (np.stack([np.cos(angle), np.sin(angle)], axis=1) @ plane)[None]  # [G=1, T, D]
    doc, epoch = cyclic(T, 2)
    run = make_store(
        tmp_path / "g",
        loss_eval=np.ones((13, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        grads={"blocks.1.attn": (np.array([12]), g.astype(np.float32))},
    )
    r = run_one("gradient_similarity", run, tmp_path / "report")["result"]
    assert r["layer"] == "blocks.1.attn" and r["episode"] == 12 and r["epoch"] == 2
    assert np.array(r["similarity"]).shape == (T, T)
    np.testing.assert_allclose(r["by_distance"], [0.5, -0.5, -1.0], atol=1e-6)
    np.testing.assert_allclose(r["by_forward_offset"], [0.5, -0.5, -1.0, -0.5, 0.5], atol=1e-6)
    assert r["most_similar_distance"] == 1
    assert r["last_trained_doc"] == 5
    assert r["mean_offdiagonal"] == pytest.approx(-0.2, abs=1e-6)  # (2·0.5 + 2·(−0.5) − 1) / 5
    assert r["sketch"] is None


def test_weight_residual_stripes_repeat_every_T(tmp_path):
    T, E = 8, 4
    doc, epoch = cyclic(T, E)
    w = helix(T, E, drift=20.0).astype(np.float32)
    run = make_store(
        tmp_path / "w",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), w)},
    )
    r = run_one("weight_residual_similarity", run, tmp_path / "report")["result"]
    assert r["residual"] == "window" and r["window_episodes"] == 8
    assert r["stripe_period_episodes"] == T and r["stripe_period_epochs"] == 1.0
    assert r["similarity_at_lag_T"] == pytest.approx(1.0, abs=1e-3)  # the same point of the circle
    assert r["similarity_at_lag_half_T"] == pytest.approx(-1.0, abs=1e-3)  # the opposite point
    assert r["episodes"][0] == T + 1  # from_epoch 2: residuals of epoch 2 on
    assert r["similarity_same_doc"] == pytest.approx(1.0, abs=1e-3)  # cyclic: the next training is T later
    assert r["weights"] == "unembed" and r["weights_are"].startswith("the 'unembed' parameter group only")
    assert r["lag_T_note"] == ""

    initial = run_one("weight_residual_similarity", run, tmp_path / "report2", residual="initial")["result"]
    assert initial["residual"] == "initial" and initial["window_episodes"] is None


def test_pca_weights_finds_one_revolution_per_epoch_and_the_shrinking_radius(tmp_path):
    T, E = 10, 4
    doc, epoch = cyclic(T, E)
    w = helix(T, E, drift=30.0, radii=[4.0, 3.0, 2.0, 1.0]).astype(np.float32)
    run = make_store(
        tmp_path / "h",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), w)},
    )
    r = run_one("pca_weights", run, tmp_path / "report")["result"]
    assert r["detrend"] == "window"
    assert r["explained_variance"][0] > 0.9  # the drift dominates the raw PCs, as in small models
    assert r["pc_period_episodes"][1:] == [pytest.approx(10.0, abs=0.5)] * 2  # PC2, PC3 rotate once per epoch
    assert r["winding_epochs"] == [2, 3]  # the centred window leaves half of epochs 1 and 4 out
    np.testing.assert_allclose(np.abs(r["winding_revolutions"]), 1.0, atol=0.03)
    assert r["radius_per_epoch"][1] < r["radius_per_epoch"][0]
    assert r["radius_last_over_first"] < 0.8

    # Without the drift the raw PC1–PC2 plane is the circle: every epoch is complete.
    flat = helix(T, E, drift=0.0, radii=[4.0, 3.0, 2.0, 1.0]).astype(np.float32)
    run2 = make_store(
        tmp_path / "h2",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), flat)},
    )
    r2 = run_one("pca_weights", run2, tmp_path / "report", detrend="none")["result"]
    assert r2["winding_epochs"] == [1, 2, 3, 4]
    np.testing.assert_allclose(np.abs(r2["winding_revolutions"]), 1.0, atol=0.01)
    np.testing.assert_allclose(r2["radius_per_epoch"], [4, 3, 2, 1], rtol=0.02)
    assert r2["radius_last_over_first"] == pytest.approx(0.25, rel=0.02)


def test_activation_drift_by_hand(tmp_path):
    # document 0's activations rotate by θ_k: cos(a_i, a_j) = cos(θ_i − θ_j) and
    # ‖a_k − a_{k−1}‖ = 2 sin(|Δθ| / 2); weights move 1, 2, 3, ... along one axis
    T, E, C, d = 2, 2, 3, 2
    doc, epoch = cyclic(T, E)
    theta = np.array([0.0, 0.4, 0.5, 0.9, 1.0])  # big steps when document 0 is trained (episodes 1, 3)
    u, v = np.eye(C * d)[0], np.eye(C * d)[1]
    acts = (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * v).reshape(5, 1, C, d).astype(np.float32)
    weights = np.cumsum(np.arange(5.0))[:, None] * np.array([[1.0, 0.0]])  # steps 1, 2, 3, 4
    run = make_store(
        tmp_path / "a",
        loss_eval=np.ones((5, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        context_length=C,
        activations={"ln_final.hook_normalized": (np.arange(5), acts)},
        weights={"unembed": (np.arange(5), weights.astype(np.float32))},
    )
    r = run_one("activation_drift", run, tmp_path / "report")["result"]
    assert r["hook"] == "ln_final.hook_normalized" and r["doc"] == 0 and r["tokens_compared"] == C
    np.testing.assert_allclose(r["similarity"], np.cos(theta[:, None] - theta[None, :]), atol=1e-6)
    np.testing.assert_allclose(r["activation_change"], 2 * np.sin(np.abs(np.diff(theta)) / 2), atol=1e-6)
    assert r["doc_training_change_ratio"] == pytest.approx(np.sin(0.2) / np.sin(0.05), rel=1e-4)
    assert r["within_epoch_similarity"] == pytest.approx([np.cos(0.1)] * 2, abs=1e-6)
    assert r["weights"] == "unembed" and r["weight_change"] == pytest.approx([1, 2, 3, 4])
    assert r["weight_change_per_epoch"] == pytest.approx([1.5, 3.5])
    assert r["weights_are"] == (
        "the 'unembed' parameter group only (exact values); record weights/all to measure every weight"
    )

    # With weights/all recorded too, Fig. 22b's change is over all weights (steps 3, 4, 0, 5 here)
    every = np.array([[0.0, 0], [3, 0], [3, 4], [3, 4], [0, 0]])
    run = make_store(
        tmp_path / "a2",
        loss_eval=np.ones((5, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        context_length=C,
        activations={"ln_final.hook_normalized": (np.arange(5), acts)},
        weights={"unembed": (np.arange(5), weights.astype(np.float32)), "all": (np.arange(5), every)},
    )
    r = run_one("activation_drift", run, tmp_path / "report2")["result"]
    assert r["weights"] == "all" and r["weight_change"] == pytest.approx([3, 4, 0, 5])
    assert r["weight_change_per_epoch"] == pytest.approx([3.5, 2.5])
    assert r["weights_are"] == "all weights (weights/all, exact values)"


# --- orders other than cyclic: epochs, windows and summaries from the stored schedule -------------

# Insert order (App. B.7), T = 8: the block 0, 1, 2 every epoch, then 2, 1 and 2 one-off documents,
# so the epochs are 5, 4 and 5 episodes long (cycle length (5 + 4) / 2 = 4.5).
INSERT_DOC = [0, 1, 2, 3, 4, 0, 1, 2, 5, 0, 1, 2, 6, 7]
INSERT_EPOCH = [1] * 5 + [2] * 4 + [3] * 5


def insert_loss() -> np.ndarray:
    """[15, 8]: 6 before a document's first training; j episodes after its last training
    1, 3, 4 (the peak), 3.5, 3, 2.5 for j = 0..5."""
    after = [1, 3, 4, 3.5, 3, 2.5]
    loss = np.full((15, 8), 6.0)
    for t in range(8):
        trained = [k + 1 for k, d in enumerate(INSERT_DOC) if d == t]
        for row in range(15):
            last = [k for k in trained if k <= row]
            if last:
                loss[row, t] = after[min(row - last[-1], 5)]
    return loss


def insert_weights() -> np.ndarray:
    """[15, 3]: one anticlockwise revolution of radius 1 per stored epoch, evenly spaced in it."""
    bounds = np.array([0, 5, 9, 14])
    turns = np.interp(np.arange(15), bounds, np.arange(4))
    return np.stack([np.cos(2 * np.pi * turns), np.sin(2 * np.pi * turns), np.full(15, 3.0)], axis=1)


def test_insert_order_curves_and_windows_at_the_stored_boundaries(tmp_path):
    run = make_store(
        tmp_path / "ins",
        loss_eval=insert_loss(),
        schedule_doc=INSERT_DOC,
        schedule_epoch=INSERT_EPOCH,
        weights={"all": (np.arange(15), insert_weights().astype(np.float32))},
        config={"schedule": {"order": "insert"}},
    )
    lc = run_one("loss_curves", run, tmp_path / "report")["result"]
    assert lc["epoch_boundaries_episodes"] == [5, 9] and lc["cycle_length"] == 4.5
    # Over the repeating block (documents 0-2, first trained in episodes 1-3) the curve has
    # 15 − 2 = 13 offsets, 2.7 cycles; over all documents it would stop at 2 (doc 7 starts at row 13).
    assert lc["shift_avg_docs"] == [0, 1, 2]
    assert lc["shift_avg_mean"] == [6, 1, 3, 4, 3.5, 3, 1, 3, 4, 3.5, 1, 3, 4]
    assert lc["shift_avg_offset_epochs"][-1] == pytest.approx(12 / 4.5)
    assert lc["shift_avg_training_offsets"] == [1, 6, 10]  # the block returns after 5, then 4 episodes
    assert lc["shift_avg_recovered"] == pytest.approx([1 / 3, 1 / 6])  # (4 − 3)/(4 − 1), (4 − 3.5)/(4 − 1)
    assert lc["shift_avg_peak_position"] == [2, 2]

    rs = run_one("recovery_score", run, tmp_path / "report")["result"]
    assert rs["recovery_score"] == pytest.approx([1 / 3, 1 / 6]) and rs["undefined"] == []

    # detrend=none: one revolution in each stored epoch of 5, 4, 5 snapshots, radius 1
    pca = run_one("pca_weights", run, tmp_path / "report", detrend="none")["result"]
    assert pca["weights"] == "all"
    assert pca["snapshot_epoch"] == [0] + [1] * 5 + [2] * 4 + [3] * 5
    np.testing.assert_allclose(np.abs(pca["winding_revolutions"]), [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(pca["radius_per_epoch"], [1, 1, 1], atol=1e-6)
    # detrend=window: the window is one cycle, round(4.5) = 4 episodes, not T = 8
    assert run_one("pca_weights", run, tmp_path / "r2")["result"]["window_episodes"] == 4

    wrs = run_one("weight_residual_similarity", run, tmp_path / "report")["result"]
    assert wrs["window_episodes"] == 4 and wrs["cycle_length"] == 4.5
    # from_epoch 2 starts after the stored end of epoch 1 (episode 5), not after T = 8 episodes
    assert wrs["episodes"] == [6, 7, 8, 9, 10, 11, 12]
    assert wrs["weights_are"] == "all weights (weights/all, exact values)"
    assert wrs["lag_T_note"].startswith("Epochs differ in length in this order")


def test_heat_map_axes_mark_the_stored_epoch_ends():
    from arprobe.probes.base import epoch_extent, mark_epochs, new_figure
    from arprobe.science.schedule import Schedule

    schedule = Schedule(np.array(INSERT_DOC), np.array(INSERT_EPOCH), 8)
    fig, (ax,) = new_figure()
    mark_epochs(ax, schedule, -0.5, 14.5, axes="xy")
    assert ax.get_xticks().tolist() == [0, 5, 9, 14] and ax.get_yticks().tolist() == [0, 5, 9, 14]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    vertical = [line.get_xdata()[0] for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[1]]
    assert sorted(vertical) == [5, 9]  # lines between epochs; the run ends at 14
    # rows after episodes 5..9 (epoch 2, 4 episodes long): edges 4.5 and 9.5 in epochs 0.9 and 2.1
    assert epoch_extent(np.arange(5, 10), schedule) == pytest.approx((0.9, 2.1))


def test_insert_order_online_loss_axis_and_toy_comparison(tmp_path):
    loss = insert_loss()
    run = make_store(
        tmp_path / "ins",
        loss_eval=loss,
        schedule_doc=INSERT_DOC,
        schedule_epoch=INSERT_EPOCH,
        config={"schedule": {"order": "insert"}},
    )
    online = run_one("online_loss", run, tmp_path / "report")["result"]["groups"][0]
    # episode k starts k − 1 episodes in; epoch 1 has 5 episodes, epoch 2 has 4
    assert online["per_episode_epochs"][:7] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25])
    # the online loss is the loss just before: 6 for every first training, then 3 and 3.5 for the block
    assert online["per_episode_mean"] == [6] * 5 + [3, 3, 3, 6] + [3.5, 3.5, 3.5, 6, 6]

    # A second seed whose epochs are 4, 5 and 5 long: episode k is not the same point of training in
    # both, so the group keeps one curve per run on its own epoch axis instead of a mean.
    other = make_store(
        tmp_path / "ins1",
        loss_eval=loss,
        schedule_doc=[0, 1, 2, 3, 0, 1, 2, 4, 5, 0, 1, 2, 6, 7],
        schedule_epoch=[1] * 4 + [2] * 5 + [3] * 5,
        seed=1,
        config={"schedule": {"order": "insert"}},
    )
    stores = [RunStore(r) for r in (run, other)]
    try:
        outcome = run_probe(probe("online_loss"), stores, tmp_path / "both")
    finally:
        for s in stores:
            s.close()
    both = json.loads((tmp_path / "both/online_loss/result.json").read_text())["result"]["groups"]
    assert outcome.status == "ok" and len(both) == 1 and both[0]["seeds"] == [0, 1]
    assert not both[0]["episodes_aligned"] and both[0]["per_episode_mean"] is None
    assert [x[5] for x in both[0]["per_episode_epochs"]] == pytest.approx([1.0, 1.2])  # episode 6 in each

    toy = run_one("toy_model", run, tmp_path / "report", epochs=2)["result"]
    assert toy["toy_schedule"] == "the run's schedule: insert, T = 8, E = 3, K = 14 episodes"
    assert toy["run_rs"] == pytest.approx([1 / 3, 1 / 6])
    assert [len(toy["toy_rs"][k]) for k in ("identity", "target")] == [2, 2]  # the run's E, not epochs=2
    assert len(toy["target"]["task1_loss"]) == 15  # the toy trained the run's 14 episodes
    assert toy["curves"]["target"]["docs"] == [0, 1, 2] and len(toy["curves"]["target"]["offset"]) == 13
    assert -1 <= toy["curve_correlation"]["target"] <= 1
    assert toy["run_winding"] is None and toy["run_winding_of"] == "no weights recorded (record.weights)"


def test_toy_comparison_against_a_run_that_is_the_toy(tmp_path):
    """A 'run' whose eval matrix and weights are the toy's own, on an insert schedule: if the probe
    trains the toy on the run's schedule (T = 8, not 25; its order, not cyclic) every number matches."""
    from arprobe.science.schedule import Schedule
    from arprobe.science.toy import simulate_toy_model

    schedule = Schedule(np.array(INSERT_DOC), np.array(INSERT_EPOCH), 8)
    toy = simulate_toy_model("target", n_tasks=8, seed=3, schedule=schedule.doc, epoch=schedule.epoch)
    run = make_store(
        tmp_path / "toyrun",
        loss_eval=toy.loss,
        schedule_doc=INSERT_DOC,
        schedule_epoch=INSERT_EPOCH,
        weights={"all": (np.arange(15), toy.fast_weights.astype(np.float32))},
    )
    r = run_one("toy_model", run, tmp_path / "report", seed=3)["result"]
    np.testing.assert_allclose(r["run_rs"], r["toy_rs"]["target"], rtol=1e-5)
    assert r["curve_correlation"]["target"] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(
        r["run_winding"]["revolutions"], r["toy_winding"]["target"]["revolutions"], atol=1e-4
    )
    assert r["run_winding_of"] == "all weights (weights/all, exact values)"
    assert "toy_vs_run.png" in json.loads((tmp_path / "report/toy_model/result.json").read_text())["figures"]


# Shuffle (x_1 first, the rest re-shuffled every epoch), T = 3, E = 3: episodes train
# 0 1 2 | 0 2 1 | 0 1 2. Loss 5 before a document's first training, 1 right after each training,
# then +1 per episode, except document 1, which peaks at 4 (row 4) and recovers to 3 (row 5).
SHUFFLE_DOC = [0, 1, 2, 0, 2, 1, 0, 1, 2]
SHUFFLE_LOSS = np.array(
    [
        [5.0, 5, 5],
        [1, 5, 5],
        [2, 1, 5],
        [3, 2, 1],
        [1, 4, 2],
        [2, 3, 1],
        [3, 1, 2],
        [1, 2, 3],
        [2, 1, 4],
        [3, 2, 1],
    ]
)


def test_shuffled_order_by_hand(tmp_path):
    T = 3
    rng = np.random.default_rng(0)
    grads = rng.normal(size=(1, T, 6)).astype(np.float32)
    run = make_store(
        tmp_path / "shuf",
        loss_eval=SHUFFLE_LOSS,
        schedule_doc=SHUFFLE_DOC,
        schedule_epoch=np.repeat([1, 2, 3], 3),
        grads={"blocks.0.attn": (np.array([9]), grads)},
        config={"schedule": {"order": "shuffle"}},
    )
    # RS(1): l_max = (3 + 4 + 2)/3 = 3, l_before = (3 + 3 + 2)/3 = 8/3, l_after = 1 -> (1/3)/2 = 1/6.
    # RS(2): every document's loss only rises between trainings -> 0.
    rs = run_one("recovery_score", run, tmp_path / "report")["result"]
    assert rs["recovery_score"] == pytest.approx([1 / 6, 0.0])
    assert (rs["l_max"], rs["l_after"]) == (pytest.approx([3, 3]), pytest.approx([1, 1]))

    lc = run_one("loss_curves", run, tmp_path / "report")["result"]
    # doc 1 returns 4 episodes after its first training, doc 2 after 2: no common intervals
    assert lc["shift_avg_training_offsets"] is None and lc["shift_avg_recovered"] is None
    assert lc["shift_avg_note"].startswith("The documents return at different offsets in this order")
    # offsets 0..7 (10 rows − doc 2's start at row 2): (5+5+5)/3, (1+1+1)/3, (2+2+2)/3, (3+4+1)/3, ...
    assert lc["shift_avg_mean"][:5] == pytest.approx([5, 1, 2, 8 / 3, 6 / 3])
    assert lc["doc_trained_at_episodes"] == [1, 4, 7] and lc["doc_recovered"] == [0.0, 0.0]

    online = run_one("online_loss", run, tmp_path / "report")["result"]["groups"][0]
    # loss_eval[k − 1, doc(k)]: 5 5 5 | 3 2 3 | 3 2 4
    assert online["per_episode_mean"] == [5, 5, 5, 3, 2, 3, 3, 2, 4]
    assert online["per_epoch_mean"] == pytest.approx([5, 8 / 3, 3])
    assert online["mean_after_first_epoch"] == pytest.approx(17 / 6)

    g = run_one("gradient_similarity", run, tmp_path / "report")["result"]
    assert g["by_distance"] is None and g["most_similar_distance"] is None and g["cycle_order"] is None
    assert g["by_distance_note"] == (
        "No distance summaries: in the shuffle order the epochs do not all train the same documents "
        "in the same order, so two documents have no fixed distance in a cycle."
    )
    cos = grads[0] @ grads[0].T / np.outer(np.linalg.norm(grads[0], axis=1), np.linalg.norm(grads[0], axis=1))
    np.testing.assert_allclose(g["similarity"], cos, atol=1e-6)
    assert g["last_trained_doc"] == 2


def test_partial_shuffle_by_hand(tmp_path):
    # T = 4, documents 2..3 (positions 1, 2) re-shuffled: 0 1 2 3 | 0 2 1 3. Loss 5 before the first
    # training, 1 right after, +1 per episode; document 1 dips to 3 at row 6 before its return.
    doc = [0, 1, 2, 3, 0, 2, 1, 3]
    loss = np.array(
        [
            [5.0, 5, 5, 5],
            [1, 5, 5, 5],
            [2, 1, 5, 5],
            [3, 2, 1, 5],
            [4, 3, 2, 1],
            [1, 4, 3, 2],
            [2, 3, 1, 3],
            [3, 1, 2, 4],
            [4, 2, 3, 1],
        ]
    )
    run = make_store(
        tmp_path / "part",
        loss_eval=loss,
        schedule_doc=doc,
        schedule_epoch=np.repeat([1, 2], 4),
        config={"schedule": {"order": "partial-shuffle"}},
    )
    # RS(1): l_max (4 + 4 + 3 + 4)/4 = 15/4, l_before (4 + 3 + 3 + 4)/4 = 14/4, l_after 1 -> 1/11
    rs = run_one("recovery_score", run, tmp_path / "report")["result"]
    assert rs["recovery_score"] == pytest.approx([1 / 11])
    lc = run_one("loss_curves", run, tmp_path / "report")["result"]
    # all four documents repeat; 9 rows − doc 3's start at row 3 = 6 offsets
    assert lc["shift_avg_docs"] == [0, 1, 2, 3]
    assert lc["shift_avg_mean"] == pytest.approx([5, 1, 2, 3, 13 / 4, 7 / 4])
    assert lc["shift_avg_recovered"] is None  # docs 1 and 2 return after 5 and 3 episodes
    assert lc["epoch_boundaries_episodes"] == [4]


# --- skipping, failing, unknown names -----------------------------------------------------------


class Boom(Probe):
    name = "boom"
    description = "Always fails."

    def run(self, store, out):
        raise RuntimeError("boom went the probe")


def test_missing_data_skips_with_the_readers_sentence_and_a_failure_stops_nothing(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "bare", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    registry = Registry()
    registry.register("boom", Boom)
    names = [
        "boom",
        "gradient_similarity",
        "pca_weights",
        "pairwise_recovery",
        "activation_drift",
        "recovery_score",
    ]
    report = tmp_path / "report"
    with RunStore(run) as store:
        outcomes = {o.probe: o for o in write_report([store], report, [registry.get(n) for n in names])}
    assert outcomes["recovery_score"].status == "ok"  # ran after the failure
    assert (
        outcomes["boom"].status == "failed" and outcomes["boom"].reason == "RuntimeError: boom went the probe"
    )
    assert outcomes["gradient_similarity"].reason == (
        "Run 'bare' recorded no grads; record them with record.grads (with record.grads_at = epoch or end)."
    )
    assert outcomes["pca_weights"].reason == (
        "Run 'bare' recorded no weights; record them with record.weights (with record.weights_every > 0)."
    )
    assert outcomes["pairwise_recovery"].reason.startswith(
        "Run 'bare' has no checkpoints; record them with record.checkpoints"
    )
    assert outcomes["activation_drift"].status == "skipped"
    boom = json.loads((report / "boom/result.json").read_text())
    assert boom["status"] == "failed" and "Traceback" in boom["traceback"] and boom["result"] is None
    index = (report / "index.html").read_text()
    for name in names:
        assert f"id='{name}'" in index
    assert "record.grads (with record.grads_at = epoch or end)" in index
    assert "recovery_score/recovery_score.png" in index


def test_a_probe_needing_a_missing_recording_by_option_names_it(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(
        tmp_path / "w",
        loss_eval=EVAL,
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(7), np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32))},
    )
    with RunStore(run) as store:
        outcome = run_probe(probe("pca_weights"), [store], tmp_path / "report", {"weights": "blocks.0.attn"})
    assert outcome.status == "skipped"
    assert outcome.reason.startswith("Run 'w' has no weight snapshots of 'blocks.0.attn' (recorded: unembed)")


def test_unknown_probe_lists_the_available_ones():
    registry = Registry(discover=False)
    registry.register("pca_weights", "arprobe.probes.pca_weights:PcaWeights")
    registry.register("loss_curves", "arprobe.probes.loss_curves:LossCurves")
    with pytest.raises(UserError) as err:
        registry.load("pca_weight")
    assert (
        str(err.value)
        == "Unknown probe 'pca_weight'. Did you mean 'pca_weights'? Available: loss_curves, pca_weights."
    )


def test_registry_is_lazy_and_checks_the_base_class():
    registry = Registry(discover=False)
    registry.register("ghost", "arprobe_no_such_module_xyz:Ghost", source="ghost-dist")
    registry.register("notaprobe", "json:JSONDecoder", source="some-dist")
    registry.register("ok", "arprobe.probes.recovery_score:RecoveryScore")
    assert registry.names() == ["ghost", "notaprobe", "ok"]  # listing names imports nothing
    with pytest.raises(
        UserError,
        match=r"^Could not load probe plugin 'ghost' \(arprobe_no_such_module_xyz:Ghost, "
        r"from ghost-dist\): ModuleNotFoundError",
    ):
        registry.load("ghost")
    with pytest.raises(UserError, match="it is not a subclass of arprobe.probes.base.Probe"):
        registry.load("notaprobe")
    rows = {r["name"]: r for r in registry.describe()}  # the broken ones do not hide the good one
    assert rows["ok"]["error"] == "" and rows["ok"]["requires"] == ["eval"]
    assert "ModuleNotFoundError" in rows["ghost"]["error"] and rows["notaprobe"]["error"]


def test_builtins_come_from_the_entry_point_group():
    registry = Registry()
    assert set(BUILTINS) <= set(registry.names())
    assert registry.source("pca_weights") == "arprobe"


def test_option_parsing_and_coercion(tmp_path):
    from arprobe.cli.analyze import merge_options, parse_option_flags, read_option_file

    flags = parse_option_flags(
        ["pairwise_recovery.episode=20", "pca_weights.detrend=none", "toy_model.lr_target=0.02"]
    )
    assert flags == {
        "pairwise_recovery": {"episode": "20"},
        "pca_weights": {"detrend": "none"},
        "toy_model": {"lr_target": "0.02"},
    }
    assert probe("pairwise_recovery").resolve_options(flags["pairwise_recovery"])["episode"] == 20
    assert probe("toy_model").resolve_options({"lr_target": "0.02", "epochs": 4})["lr_target"] == 0.02
    config = tmp_path / "probes.toml"
    config.write_text(
        '[pca_weights]\ndetrend = "window"\nweights = "blocks.0.attn"\n[toy_model]\nepochs = 3\n'
    )
    merged = merge_options(read_option_file(str(config)), flags, Registry())
    assert merged["pca_weights"] == {"detrend": "none", "weights": "blocks.0.attn"}  # the flag wins
    assert merged["toy_model"]["epochs"] == 3

    with pytest.raises(UserError, match=r"^Option 'pca_weights' is not PROBE.KEY=VALUE"):
        parse_option_flags(["pca_weights"])
    with pytest.raises(
        UserError,
        match=r"^Probe 'pca_weights' has no option 'detrnd'. Did you mean 'detrend'\? "
        r"Its options: weights, detrend, null_walks.$",
    ):
        probe("pca_weights").resolve_options({"detrnd": "none"})
    with pytest.raises(UserError, match=r"^Option 'pairwise_recovery.episode' expects int, got 'last'.$"):
        probe("pairwise_recovery").resolve_options({"episode": "last"})
    with pytest.raises(UserError, match=r"^Unknown probe 'pca'"):
        merge_options({}, {"pca": {"x": "1"}}, Registry())
    config.write_text("detrend = 1\n")
    with pytest.raises(UserError, match="put 'detrend' under the section of its probe"):
        read_option_file(str(config))


# --- the CLI on hand-made stores ------------------------------------------------------------------


def test_analyze_cli_unknown_probe_is_one_line_exit_2(tmp_path, capsys):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    assert main(["analyze", str(run), "--probe", "pca_weight"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "arprobe analyze: error: Unknown probe 'pca_weight'. Did you mean 'pca_weights'? Available: "
    )
    assert len(err.splitlines()) == 1


def test_analyze_cli_bad_run_path_is_one_line_exit_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"arprobe analyze: error: No run store at '{tmp_path / 'nowhere'}'")
        and "\n" not in err
    )


def test_analyze_cli_explicit_probe_lacking_data_exits_1(tmp_path, capsys):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    assert main(["analyze", str(run), "--probe", "recovery_score,gradient_similarity", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "recovery_score" in out and "recovery_score: [0.5]" in out
    assert "gradient_similarity          skipped  Run 'r' recorded no grads" in out
    assert (run / "report/index.html").exists()
    # all probes by default: skipping what a run lacks is normal, exit 0
    assert (
        main(["analyze", str(run), "--no-progress", "--probe", "recovery_score,loss_curves,online_loss"]) == 0
    )


def test_analyze_cli_several_runs_compares_and_reports_each(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc, epoch = cyclic(3, 2)
    runs = [
        make_store(tmp_path / f"c{s}", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch, seed=s)
        for s in (0, 1)
    ]
    assert main(["analyze", *map(str, runs), "--probe", "online_loss,recovery_score", "--no-progress"]) == 0
    result = json.loads((tmp_path / "report/online_loss/result.json").read_text())
    assert [len(g["runs"]) for g in result["result"]["groups"]] == [2]  # two seeds, one group
    for run in runs:
        assert json.loads((run / "report/recovery_score/result.json").read_text())["status"] == "ok"
        assert not (run / "report/online_loss").exists()


def test_toy_model_runs_without_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "--probe", "toy_model", "--option", "toy_model.epochs=6"]) == 0
    record = json.loads((tmp_path / "report/toy_model/result.json").read_text())
    r = record["result"]
    assert record["options"]["epochs"] == 6 and record["runs"] == []
    assert len(r["identity"]["recovery_score"]) == 5 and len(r["target"]["recovery_score"]) == 5
    assert (
        r["identity"]["dim"] == 1000
        and r["target"]["dim"] == 100
        and r["lr"] == {"identity": 0.001, "target": 0.01}
    )
    assert sorted(record["figures"]) == ["toy_circle_identity.png", "toy_circle_target.png", "toy_loss.png"]
    assert "identity_rs_last" in capsys.readouterr().out
    # a probe that reads a run, asked for without one
    assert main(["analyze", "--probe", "pca_weights"]) == 2
    assert "Probe 'pca_weights' reads a run; give one" in capsys.readouterr().err


def test_probes_cli_lists_every_builtin(capsys):
    assert main(["probes"]) == 0
    out = capsys.readouterr().out
    for name in BUILTINS:
        assert f"\n{name} " in out
    assert "weights:*" in out and "grads:*" in out and "nothing (no run needed)" in out
    assert main(["probes", "pca_weights"]) == 0
    assert "detrend" in capsys.readouterr().out


# --- docs/probes.md: its numbers come from benchmarks/probe_docs.py --------------------------------


def test_probe_docs_rewrites_exactly_its_marked_blocks():
    from benchmarks.probe_docs import BLOCK, BLOCK_NAMES, replace_blocks

    text = (Path(__file__).parents[1] / "docs" / "probes.md").read_text()
    assert tuple(m.group("name") for m in BLOCK.finditer(text)) == BLOCK_NAMES
    new = replace_blocks(text, {name: f"generated {name}" for name in BLOCK_NAMES})
    assert BLOCK.sub("", new) == BLOCK.sub("", text)  # nothing outside the blocks changes
    assert (
        "<!-- probe-docs:begin toy-model -->\ngenerated toy-model\n<!-- probe-docs:end toy-model -->" in new
    )
    assert replace_blocks(new, {name: "again" for name in BLOCK_NAMES}).count("\nagain\n") == 4
    with pytest.raises(ValueError, match=r"missing \['extra'\], not generated \[\]"):
        replace_blocks(text, {**{name: "" for name in BLOCK_NAMES}, "extra": ""})
    with pytest.raises(ValueError, match=r"missing \[\], not generated \['toy-model'\]"):
        replace_blocks(text, {name: "" for name in BLOCK_NAMES[:-1]})


def test_probe_docs_number_formats():
    from benchmarks.probe_docs import fmt, fmt_list, mean_std

    assert mean_std([1.0, 3.0, None]) == "2.000 ± 1.414 (1 undefined)"  # sample std of 1 and 3
    assert mean_std([0.5]) == "0.500" and mean_std([None, None]) == "not defined"
    assert fmt(None) == "undefined" and fmt(float("nan")) == "undefined" and fmt(3) == "3"
    assert fmt_list([0.12345, None], 2) == "0.12, undefined" and fmt_list(None) == "none"


# --- one tiny real run, every probe --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_report(tiny_run, tmp_path_factory):
    """`arprobe analyze` of the session's tiny run (T=5, E=3, M=3), report written beside it."""
    out = tmp_path_factory.mktemp("real-report")
    code = main(["analyze", str(tiny_run), "--out", str(out), "--no-progress"])
    return code, out


def result_of(report: Path, name: str) -> dict:
    record = json.loads((report / name / "result.json").read_text())
    assert record["status"] == "ok", record.get("reason")
    return record["result"]


def test_real_run_every_probe_ok(real_report):
    code, out = real_report
    assert code == 0
    index = (out / "index.html").read_text()
    for name in BUILTINS:
        record = json.loads((out / name / "result.json").read_text())
        assert record["status"] == "ok", (name, record.get("reason"))
        assert record["figures"], name
        for fig in record["figures"]:
            assert f"{name}/{fig}" in index


def test_real_run_numbers(real_report, tiny_run):
    """What the tiny cyclic run (T=5, E=3, M=3) shows, checked against the store itself or against
    the paper's claims; none of these holds by construction."""
    _, out = real_report
    T, E = 5, 3
    with RunStore(tiny_run) as store:
        loss_eval, schedule = store.eval_matrix(), store.schedule()
        grad_layer = store.recorded("grads")[0]
        grad_episodes, grads = store.grads(grad_layer)
        all_sketch = store.sketch_info("weights", "all")

    rs = result_of(out, "recovery_score")
    assert len(rs["recovery_score"]) == E - 1
    assert rs["recovery_score"][-1] > 0.1  # anticipatory recovery in a cyclic run (Sec. 3.1)

    curves = result_of(out, "loss_curves")
    # training on document 1 lowers its loss, at each of its E trainings
    assert len(curves["doc_loss_before_training"]) == E
    assert np.all(np.array(curves["doc_loss_after_training"]) < np.array(curves["doc_loss_before_training"]))
    np.testing.assert_allclose(curves["doc_loss_before_training"], loss_eval[[0, T, 2 * T], 0], rtol=1e-6)

    g = result_of(out, "gradient_similarity")
    # the end of the next-to-last epoch, the checkpoint pairwise_recovery reads (Fig. 8a beside 8b)
    assert g["episode"] == T * (E - 1) and g["cycle_order"] == list(range(T))
    assert g["last_trained_doc"] == T - 1
    assert list(grad_episodes[-2:]) == [T * (E - 1), T * E]
    read = grads[-2].astype(np.float64)  # [T, D] at that episode, cosines by hand
    unit = read / np.linalg.norm(read, axis=1, keepdims=True)
    np.testing.assert_allclose(g["similarity"], unit @ unit.T, atol=1e-5)

    pair = result_of(out, "pairwise_recovery")
    assert pair["checkpoint_episode"] == T * (E - 1)  # end of the second-to-last epoch
    assert np.all(np.diag(np.array(pair["recovery"])) > 0)  # training on x_i lowers the loss on x_i

    pca = result_of(out, "pca_weights")
    assert pca["weights"] == "unembed"  # Fig. 9 is drawn from the output embedding
    assert pca["winding_epochs"] == [2]  # the one-cycle window (T = 5) leaves half of epochs 1 and 3 out
    assert abs(abs(pca["winding_revolutions"][0]) - 1) < 0.2  # one revolution per epoch (Fig. 9)

    wrs = result_of(out, "weight_residual_similarity")
    assert wrs["weights"] == "all" and all_sketch is not None  # the run records all weights, sketched
    assert wrs["weights_are"] == (
        f"all weights (weights/all, a count-sketch of {all_sketch['full_dim']:,} values "
        f"into {all_sketch['dim']:,})"
    )
    assert wrs["window_episodes"] == T and wrs["episodes"][0] == T + 1
    assert wrs["stripe_period_episodes"] == T and wrs["similarity_at_lag_T"] > 0.3  # Fig. 8c's stripes

    drift = result_of(out, "activation_drift")
    assert np.array(drift["similarity"]).shape == (T * E + 1, T * E + 1)  # recorded every episode
    assert drift["weights"] == "all" and len(drift["weight_change"]) == T * E
    assert drift["doc_training_change_ratio"] > 1.2  # the document's own training moves it most (Fig. 22a)

    toy = result_of(out, "toy_model")
    assert toy["run"] == str(tiny_run) and toy["toy_schedule"].endswith(
        "cyclic, T = 5, E = 3, K = 15 episodes"
    )
    assert toy["run_rs"][-1] == pytest.approx(rs["recovery_score"][-1])
    assert [len(v) for v in toy["toy_rs"].values()] == [E - 1, E - 1]
    assert toy["run_winding_revolutions"] is not None and len(toy["run_winding_revolutions"]) == 1
    assert "toy_vs_run.png" in json.loads((out / "toy_model/result.json").read_text())["figures"]

    online = result_of(out, "online_loss")["groups"][0]
    assert online["label"] == "cyclic" and online["episodes_aligned"]
    # the online loss is the eval matrix just before each episode
    np.testing.assert_allclose(
        online["per_episode_mean"], loss_eval[np.arange(T * E), schedule.doc], rtol=1e-6
    )
