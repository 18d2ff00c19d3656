"""Every built-in probe on the session's tiny real run (T=5, E=3, M=3): each runs, draws its figures into
the report, and shows numbers checked against the store itself or against the paper's claims (none of
these holds by construction). One parametrised test, one case per probe."""

import json
from pathlib import Path

import numpy as np
import pytest

from arprobe.cli.main import main
from arprobe.storage import RunStore
from tests.helpers import BUILTINS


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


T, E = 5, 3  # the session's tiny run


def check_recovery_score(out, store, tiny_run):
    rs = result_of(out, "recovery_score")
    assert len(rs["recovery_score"]) == E - 1
    assert rs["recovery_score"][-1] > 0.1  # anticipatory recovery in a cyclic run (Sec. 3.1)


def check_loss_curves(out, store, tiny_run):
    curves = result_of(out, "loss_curves")
    # training on document 1 lowers its loss, at each of its E trainings
    assert len(curves["doc_loss_before_training"]) == E
    assert np.all(np.array(curves["doc_loss_after_training"]) < np.array(curves["doc_loss_before_training"]))
    loss_eval = store.eval_matrix()
    np.testing.assert_allclose(curves["doc_loss_before_training"], loss_eval[[0, T, 2 * T], 0], rtol=1e-6)


def check_gradient_similarity(out, store, tiny_run):
    g = result_of(out, "gradient_similarity")
    # the end of the next-to-last epoch, the checkpoint pairwise_recovery reads (Fig. 8a beside 8b)
    assert g["episode"] == T * (E - 1) and g["cycle_order"] == list(range(T))
    assert g["last_trained_doc"] == T - 1
    grad_episodes, grads = store.grads(store.recorded("grads")[0])
    assert list(grad_episodes[-2:]) == [T * (E - 1), T * E]
    read = grads[-2].astype(np.float64)  # [T, D] at that episode, cosines by hand
    unit = read / np.linalg.norm(read, axis=1, keepdims=True)
    np.testing.assert_allclose(g["similarity"], unit @ unit.T, atol=1e-5)


def check_pairwise_recovery(out, store, tiny_run):
    pair = result_of(out, "pairwise_recovery")
    assert pair["checkpoint_episode"] == T * (E - 1)  # end of the second-to-last epoch
    assert np.all(np.diag(np.array(pair["recovery"])) > 0)  # training on x_i lowers the loss on x_i


def check_pca_weights(out, store, tiny_run):
    pca = result_of(out, "pca_weights")
    assert pca["weights"] == "unembed"  # Fig. 9 is drawn from the output embedding
    assert pca["winding_epochs"] == [2]  # the one-cycle window (T = 5) leaves half of epochs 1 and 3 out
    assert abs(abs(pca["winding_revolutions"][0]) - 1) < 0.2  # one revolution per epoch (Fig. 9)


def check_weight_residual_similarity(out, store, tiny_run):
    wrs = result_of(out, "weight_residual_similarity")
    all_sketch = store.sketch_info("weights", "all")
    assert wrs["weights"] == "all" and all_sketch is not None  # the run records all weights, sketched
    assert wrs["weights_are"] == (
        f"all weights (weights/all, a count-sketch of {all_sketch['full_dim']:,} values "
        f"into {all_sketch['dim']:,})"
    )
    assert wrs["window_episodes"] == T and wrs["episodes"][0] == T + 1
    assert wrs["stripe_period_episodes"] == T and wrs["similarity_at_lag_T"] > 0.3  # Fig. 8c's stripes


def check_activation_drift(out, store, tiny_run):
    drift = result_of(out, "activation_drift")
    assert np.array(drift["similarity"]).shape == (T * E + 1, T * E + 1)  # recorded every episode
    assert drift["weights"] == "all" and len(drift["weight_change"]) == T * E
    assert drift["doc_training_change_ratio"] > 1.2  # the document's own training moves it most (Fig. 22a)


def check_toy_model(out, store, tiny_run):
    toy = result_of(out, "toy_model")
    rs = result_of(out, "recovery_score")
    assert toy["run"] == str(tiny_run) and toy["toy_schedule"].endswith(
        "cyclic, T = 5, E = 3, K = 15 episodes"
    )
    assert toy["run_rs"][-1] == pytest.approx(rs["recovery_score"][-1])
    assert [len(v) for v in toy["toy_rs"].values()] == [E - 1, E - 1]
    assert toy["run_winding_revolutions"] is not None and len(toy["run_winding_revolutions"]) == 1
    assert "toy_vs_run.png" in json.loads((out / "toy_model/result.json").read_text())["figures"]


def check_online_loss(out, store, tiny_run):
    online = result_of(out, "online_loss")["groups"][0]
    assert online["label"] == "cyclic" and online["episodes_aligned"]
    # the online loss is the eval matrix just before each episode
    loss_eval, schedule = store.eval_matrix(), store.schedule()
    np.testing.assert_allclose(
        online["per_episode_mean"], loss_eval[np.arange(T * E), schedule.doc], rtol=1e-6
    )


def check_learning_dynamics(out, store, tiny_run):
    dyn = result_of(out, "learning_dynamics")
    pair = result_of(out, "pairwise_recovery")
    # the checkpoint pairwise_recovery replays from, and that replay's matrix as the target
    assert dyn["checkpoint_episode"] == pair["checkpoint_episode"] == T * (E - 1)
    at = dyn["per_checkpoint"][0]
    np.testing.assert_allclose(at["replayed"], pair["recovery"], atol=1e-5)
    predicted, replayed = np.array(at["predicted"]), np.array(at["replayed"])
    assert predicted.shape == replayed.shape == (T, T)
    off = ~np.eye(T, dtype=bool)
    # the headline is the Pearson correlation of the off-diagonal entries, recomputed here
    assert dyn["pearson"] == pytest.approx(np.corrcoef(predicted[off], replayed[off])[0, 1], abs=1e-9)
    assert dyn["spearman"] > 0.5  # first order explains the tiny run's pairwise structure (measured 0.92)


def check_relearning(out, store, tiny_run):
    rel = result_of(out, "relearning")
    loss_eval = store.eval_matrix()
    k = rel["checkpoint_episode"]
    assert k == T * (E - 1)
    docs = rel["docs"]
    # the documents trained after the checkpoint's own episode, each back to its loss right after
    # its previous turn, starting from the checkpoint's eval row
    assert docs == list(range(T - 1)) and rel["next_turn"] == [k + 1 + d for d in docs]
    np.testing.assert_allclose(rel["target"], loss_eval[rel["previous_turn"], docs], rtol=1e-6)
    np.testing.assert_allclose(rel["start_loss"], loss_eval[k, docs], rtol=1e-5)
    steps, first = np.array(rel["relearn_steps"], dtype=float), np.array(rel["first_steps"])
    np.testing.assert_allclose(rel["savings_ratio"], steps / first)
    assert 1 <= steps.min() and steps.max() <= rel["max_steps"] == 4 * 3


CHECKS = {
    "activation_drift": check_activation_drift,
    "gradient_similarity": check_gradient_similarity,
    "learning_dynamics": check_learning_dynamics,
    "loss_curves": check_loss_curves,
    "online_loss": check_online_loss,
    "pairwise_recovery": check_pairwise_recovery,
    "pca_weights": check_pca_weights,
    "recovery_score": check_recovery_score,
    "relearning": check_relearning,
    "toy_model": check_toy_model,
    "weight_residual_similarity": check_weight_residual_similarity,
}


@pytest.mark.parametrize("name", BUILTINS)
def test_real_run(real_report, tiny_run, name):
    code, out = real_report
    assert code == 0
    record = json.loads((out / name / "result.json").read_text())
    assert record["status"] == "ok", (name, record.get("reason"))
    assert record["figures"], name
    index = (out / "index.html").read_text()
    for fig in record["figures"]:
        assert f"{name}/{fig}" in index
    with RunStore(tiny_run) as store:
        CHECKS[name](out, store, tiny_run)
