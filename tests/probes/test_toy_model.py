"""The toy_model probe: the toy trained on a run's own schedule, a run that is the toy, the helix
statistic of the toy in both orders, and the toy without a run (`arprobe analyze --probe toy_model`)."""

import json

import numpy as np
import pytest

from arprobe.cli.main import main
from tests.helpers import INSERT_DOC, INSERT_EPOCH, insert_loss, random_eval_store, run_one
from tests.store_factory import helix, make_store


def test_toy_model_trains_on_the_runs_insert_schedule(tmp_path):
    run = make_store(
        tmp_path / "ins",
        loss_eval=insert_loss(),
        schedule_doc=INSERT_DOC,
        schedule_epoch=INSERT_EPOCH,
        config={"schedule": {"order": "insert"}},
    )
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


def test_toy_model_helix_separates_orders_and_names_its_nulls(tmp_path):
    T, E = 10, 4
    w = helix(T, E, dim=40, drift=30.0).astype(np.float32)
    run = random_eval_store(tmp_path / "run", T, E, weights={"all": (np.arange(T * E + 1), w)})
    r = run_one("toy_model", run, tmp_path / "report")["result"]
    assert r["run_helix_cosine"] == pytest.approx(1.0, abs=1e-4)  # an ideal helix, float32
    null = r["null"]
    assert null["control"] is None and set(null["random_walk"]) == {"run", "identity", "target"}
    assert set(null["step_permutation"]) == {"run", "identity", "target"}
    for kind in ("identity", "target"):
        shuffled = null["toy_shuffled"][kind]
        # The toy's w comes back one cycle later on the cyclic schedule, not with each epoch shuffled:
        # above the random walks' 97.5th percentile on one, below it on the other.
        assert r["toy_helix_cosine"][kind] > null["random_walk"][kind]["q975"] > shuffled["helix_cosine"]
        assert len(shuffled["recovery_score"]) == E - 1
    assert r["helix_verdict"].startswith("run 1.00 (helix-like: random walks ≤ ")
    assert r["helix_verdict"].count("with each epoch shuffled") == 2


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
