"""relearning: savings counted by hand on small trajectories, and replays on a tiny real run with its
matched shuffled control."""

import json

import numpy as np
import pytest

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.relearning import Relearning, relearning_curve
from arprobe.science.relearning import bootstrap_mean_interval, savings, steps_to_reach, turns_around
from arprobe.storage import RunStore
from arprobe.testing import cyclic, make_store
from tests.conftest import tiny_config

# T = 3, E = 2, cyclic: document d is trained in episodes d + 1 and d + 4.
LOSS = np.array(
    [
        [5, 5, 5],
        [1, 6, 6],
        [2, 1, 6],
        [3, 2, 1],
        [1, 3, 4],
        [5, 1, 2],
        [4, 6, 1],
    ],
    dtype=np.float32,
)


# --- the science, by hand ---------------------------------------------------------------------------


def test_steps_to_reach_counts_the_first_step_at_or_below_the_target():
    loss = [5.0, 4.0, 3.0, 2.0]  # before any step, then after steps 1, 2, 3
    assert steps_to_reach(loss, 3.0, cap=3) == (2, False)
    assert steps_to_reach(loss, 4.0, cap=3) == (1, False)  # equal to the target counts as reached
    assert steps_to_reach(loss, 5.0, cap=3) == (0, False)  # already there: anticipatory recovery
    assert steps_to_reach(loss, 9.0, cap=3) == (0, False)
    assert steps_to_reach(loss, 1.0, cap=3) == (3, True)  # never reached: censored at the cap
    assert steps_to_reach(loss, 2.0, cap=2) == (2, True)  # reached only after the cap
    with pytest.raises(AssertionError, match="cannot show 5 steps missed"):
        steps_to_reach(loss, 1.0, cap=5)  # a trajectory cut short before the cap is a bug


def test_turns_around_a_checkpoint_by_hand():
    doc, _ = cyclic(3, 2)
    # after episode 3: x_1 last trained in 1 (next 4), x_2 in 2 (next 5); x_3 was trained in 3 itself
    turns = turns_around(LOSS, doc, 3)
    np.testing.assert_array_equal(turns.doc, [0, 1])
    np.testing.assert_array_equal(turns.previous, [1, 2])
    np.testing.assert_array_equal(turns.next, [4, 5])
    np.testing.assert_array_equal(turns.target, [LOSS[1, 0], LOSS[2, 1]])  # 1 and 1
    # mid-epoch, after episode 4: x_1 was just trained; x_2 (2 -> 5) and x_3 (3 -> 6)
    turns = turns_around(LOSS, doc, 4)
    np.testing.assert_array_equal(turns.doc, [1, 2])
    np.testing.assert_array_equal(turns.previous, [2, 3])
    np.testing.assert_array_equal(turns.target, [1.0, 1.0])
    assert len(turns_around(LOSS, doc, 6).doc) == 0  # nothing is trained after the last episode


def test_savings_ratio_mean_and_censoring_by_hand():
    curves = [[5.0, 4.0, 3.0], [2.0], [5.0, 5.0, 5.0, 5.0, 5.0]]
    result = savings(curves, targets=[3.0, 2.0, 1.0], first_steps=[2, 2, 2], cap=4, bootstrap=0)
    np.testing.assert_array_equal(result.steps, [2, 0, 4])
    np.testing.assert_array_equal(result.censored, [False, False, True])
    np.testing.assert_allclose(result.ratio, [1.0, 0.0, 2.0])
    assert result.mean_ratio == pytest.approx(1.0)  # (1 + 0 + 2) / 3, a lower bound: one is censored
    assert result.already_there == 1
    assert np.isnan(result.interval[0]) and np.isnan(result.interval[1])  # bootstrap = 0: none
    # a document without first-learning steps (NaN) has no ratio and stays out of the mean
    partial = savings(curves, [3.0, 2.0, 1.0], [4, np.nan, 4], cap=4, bootstrap=0)
    assert partial.mean_ratio == pytest.approx((0.5 + 1.0) / 2)


def test_bootstrap_interval_by_hand():
    assert bootstrap_mean_interval([1.0, 1.0, 1.0], 100, seed=0) == (1.0, 1.0)
    # two values 0 and 2: a resample's mean is 0, 1 or 2 with chances 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% quantiles of many resamples are 0 and 2
    assert bootstrap_mean_interval([0.0, 2.0], 4000, seed=1) == (0.0, 2.0)
    assert all(np.isnan(bootstrap_mean_interval([1.0], 100, seed=0)))  # one value: no interval


# --- errors a user can cause -------------------------------------------------------------------------


def test_missing_checkpoints_and_one_epoch_are_one_sentence(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "two", loss_eval=LOSS, schedule_doc=doc, schedule_epoch=epoch)
    with RunStore(run) as store:
        with pytest.raises(MissingDataError, match=r"Run 'two' has no checkpoints; .*record.checkpoints"):
            Relearning().run(store, tmp_path)
        with pytest.raises(UserError, match="relearning.first must be one of turn, replay, not 'both'"):
            Relearning().run(store, tmp_path, first="both")
    doc, epoch = cyclic(3, 1)
    one = make_store(tmp_path / "one", loss_eval=LOSS[:4], schedule_doc=doc, schedule_epoch=epoch)
    with RunStore(one) as store:
        with pytest.raises(MissingDataError, match="'one' has trained only one epoch; .*at least 2 epochs"):
            Relearning().run(store, tmp_path)


# --- a tiny real run and its control ---------------------------------------------------------------


@pytest.fixture(scope="module")
def run_with_epoch_checkpoints(tmp_path_factory):
    """A tiny cyclic run (T=5, M=3, E=3) with a checkpoint at every epoch end (5, 10, 15) and its
    matched shuffled control."""
    from arprobe.trainer.control import run_with_control

    out = tmp_path_factory.mktemp("relearning")
    both = run_with_control(tiny_config(out, control="shuffle", checkpoints="epoch"), progress=False)
    assert both.run.status == "complete" and both.control.status == "complete"
    return both.run.path.parent


@pytest.fixture(scope="module")
def measured(run_with_epoch_checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    probe = Relearning()
    probe.progress = False
    with RunStore(run_with_epoch_checkpoints) as store:
        return probe.run(store, out, bootstrap=200), out


def test_on_a_real_run_every_checkpoint_between_turns(run_with_epoch_checkpoints, measured):
    result, out = measured
    T, M = 5, 3
    # the checkpoint at 15 ends the run: no document comes back after it
    assert [c["checkpoint_episode"] for c in result["by_checkpoint"]] == [5, 10]
    assert [c["n_measured"] for c in result["by_checkpoint"]] == [T - 1, T - 1]  # x_5 was just trained
    assert result["checkpoint_episode"] == 10 and result["checkpoint_epoch"] == 2
    assert result["max_steps"] == 4 * M and result["steps_per_doc"] == M
    np.testing.assert_array_equal(result["docs"], [0, 1, 2, 3])
    # x_d was trained last in episode T + d + 1 of epoch 2 and comes back in 2T + d + 1
    np.testing.assert_array_equal(result["previous_turn"], [6, 7, 8, 9])
    np.testing.assert_array_equal(result["next_turn"], [11, 12, 13, 14])
    with RunStore(run_with_epoch_checkpoints) as store:
        loss_eval = store.eval_matrix().astype(np.float64)
    np.testing.assert_array_equal(result["target"], [loss_eval[6 + d, d] for d in range(4)])
    np.testing.assert_array_equal(result["loss_before_next_turn"], [loss_eval[10 + d, d] for d in range(4)])
    # the replay starts where the run was: the checkpoint's eval row (float32, the same forward)
    assert result["replay_start_difference"] < 1e-5
    steps, curves = result["relearn_steps"], result["curves"]
    assert np.all((steps >= 0) & (steps <= 4 * M))
    for s, censored, curve, target in zip(steps, result["censored"], curves, result["target"]):
        assert len(curve) == s + 1  # stopped at the first step at or below the target, or at the cap
        assert (curve[-1] <= target) != censored
        assert np.all(np.asarray(curve[:-1]) > target)
    np.testing.assert_allclose(result["savings_ratio"], steps / M)
    assert result["mean_savings_ratio"] == pytest.approx(np.mean(steps / M))
    low, high = result["savings_interval"]
    assert min(steps / M) <= low <= result["mean_savings_ratio"] <= high <= max(steps / M)
    assert result["n_censored"] == int(np.sum(result["censored"]))


def test_on_a_real_run_the_control_is_measured_beside_it(measured):
    result, out = measured
    control = np.asarray(result["control_savings_ratio"])
    assert control.shape == (4,)  # every document but the one trained in episode 10
    assert len(set(result["control_docs"])) == 4
    assert np.all((control >= 0) & (control <= 4))
    mean, cmean = result["mean_savings_ratio"], result["control_mean_savings_ratio"]
    assert cmean == pytest.approx(control.mean())
    assert result["verdict"] == (
        f"mean savings ratio {mean:.3f} vs {cmean:.3f} in the matched shuffled control ({mean - cmean:+.3f})."
    )
    for name in ("relearning.png", "relearning.svg", "relearning.csv", "relearning_curves.csv"):
        assert (out / name).stat().st_size > 0
    # the figure's columns are matched by document over those either run measured; a document one
    # of them does not measure (the one it trained in the checkpoint's episode) is empty there
    written = np.genfromtxt(out / "relearning.csv", delimiter=",", names=True)
    docs = sorted(set(result["docs"]) | set(result["control_docs"]))
    np.testing.assert_array_equal(written["doc"], np.array(docs) + 1)
    for column, measured_docs, values in [
        ("savings_ratio", result["docs"], result["savings_ratio"]),
        ("control_savings_ratio", result["control_docs"], control),
    ]:
        by_doc = dict(zip(measured_docs, values))
        np.testing.assert_allclose(written[column], [by_doc.get(d, np.nan) for d in docs])


def test_one_step_at_a_time_trains_as_the_run_does(run_with_epoch_checkpoints, one_thread):
    """M single steps at the run's schedule positions, optimizer reset where the run resets it, give
    the same model as one M-step episode of the run's own step."""
    from arprobe.trainer.api import Replay

    with RunStore(run_with_epoch_checkpoints) as store:
        episode = Replay(store, 10)
        episode.train_episode(2)
        expected = episode.evaluate()[2]
        single = Relearning.replay(store, 10, data_seed=0, device="cpu")
        curve = relearning_curve(single, doc=2, target=-np.inf, cap=3, steps_per_doc=3)
    assert len(curve) == 4
    assert curve[-1] == pytest.approx(float(expected), rel=1e-5)


def test_a_cap_and_a_chosen_checkpoint(run_with_epoch_checkpoints, tmp_path, one_thread):
    probe = Relearning()
    probe.progress = False
    with RunStore(run_with_epoch_checkpoints) as store:
        result = probe.run(store, tmp_path, episode=5, max_steps=1, bootstrap=0)
        assert [c["checkpoint_episode"] for c in result["by_checkpoint"]] == [5]
        assert np.all(result["relearn_steps"] <= 1)
        for curve, censored, target in zip(result["curves"], result["censored"], result["target"]):
            assert censored == (curve[-1] > target) and len(curve) <= 2
        with pytest.raises(MissingDataError, match=r"no checkpoint at episode 7 \(have: 5, 10, 15\)"):
            probe.run(store, tmp_path, episode=7)
        with pytest.raises(UserError, match="trained both before and after the checkpoint at episode 15"):
            probe.run(store, tmp_path, episode=15)
        with pytest.raises(MissingDataError, match="no checkpoint before any measured document's first turn"):
            probe.run(store, tmp_path, first="replay")
    json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float, str))})


def test_first_learning_replayed_from_a_checkpoint_before_the_first_turn(tmp_path, one_thread):
    """Checkpoints every 2 episodes (T=5): the one at 2 comes before the first turns of x_3 (episode 3)
    and x_4 (4); x_1 and x_2 have none before theirs, so they get no first-learning count."""
    from arprobe.trainer.loop import run

    result = run(tiny_config(tmp_path, checkpoints="2"), progress=False)
    probe = Relearning()
    probe.progress = False
    with RunStore(result.path.parent) as store:
        assert list(store.checkpoint_episodes()[:2]) == [2, 4]
        measured = probe.run(store, tmp_path, episode=10, first="replay", bootstrap=0)
    np.testing.assert_array_equal(measured["docs"], [0, 1, 2, 3])
    first = measured["first_steps"]
    assert np.isnan(first[:2]).all() and np.all((first[2:] >= 0) & (first[2:] <= 12))
    ratio = measured["savings_ratio"]
    assert np.isnan(ratio[:2]).all()
    np.testing.assert_allclose(ratio[2:], measured["relearn_steps"][2:] / first[2:])
    assert measured["n_measured"] == 2
    assert measured["mean_savings_ratio"] == pytest.approx(np.mean(ratio[2:]))
    assert "before the document's first turn" in measured["first_learning"]
