"""learning_dynamics: the recovery matrix predicted from gradients, worked by hand, and on tiny real runs."""

import json

import numpy as np
import pytest
import torch

from arprobe.errors import MissingDataError, UserError
from arprobe.models.naming import bridge_names
from arprobe.probes.learning_dynamics import LearningDynamics
from arprobe.probes.runner import run_probe
from arprobe.science.learning_dynamics import (
    adam_direction,
    additive_residual,
    agreement,
    average_ranks,
    offdiagonal,
    predicted_recovery,
    rank_correlation,
    sgd_direction,
)
from arprobe.science.order_decoding import rankdata, spearman
from arprobe.storage import RunStore
from arprobe.testing import cyclic, make_store
from arprobe.trainer.api import Replay
from arprobe.trainer.control import run_with_control
from tests.conftest import tiny_config

G = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])  # three documents' gradients, D = 2


# --- the science, by hand -------------------------------------------------------------------------


def test_gradient_descent_prediction_by_hand():
    lrs = [0.1, 0.1]  # M = 2 steps at η = 0.1: U_i = 0.2 g_i
    # g_j·g_i: [[1, 1, 0], [1, 2, 2], [0, 2, 4]]
    np.testing.assert_allclose(
        predicted_recovery(sgd_direction(G, lrs), G), 0.2 * np.array([[1, 1, 0], [1, 2, 2], [0, 2, 4]])
    )
    # L2 decay λ = 0.5 at θ = (2, 0): every step's gradient is g_i + (1, 0),
    # so A[i, j] = 0.2 (g_i + (1, 0))·g_j
    decayed = predicted_recovery(sgd_direction(G, lrs, 0.5, [2.0, 0.0]), G)
    np.testing.assert_allclose(decayed, 0.2 * np.array([[2, 2, 0], [2, 3, 2], [1, 3, 4]]))


def test_fresh_adam_is_the_sign_of_the_gradient_by_hand():
    g = np.array([[2.0, -0.5]])
    # a fresh Adam's every step on a frozen gradient is η g / (|g| + ε): bias correction undoes (1 − β)
    np.testing.assert_allclose(adam_direction(g, [0.1] * 3, eps=0.0), [[0.3, -0.3]])
    np.testing.assert_allclose(adam_direction(g, [0.1] * 3, eps=0.5), [[0.3 * 2 / 2.5, -0.3 * 0.5 / 1.0]])
    # A[i, j] = Σ_t η_t Σ_k g_jk sign(g_ik):
    # row 0 = 0.2·(1, 0)·g_j, row 1 = 0.2·(1, 1)·g_j, row 2 = 0.2·(0, 1)·g_j
    A = predicted_recovery(adam_direction(G, [0.1, 0.1], eps=1e-12), G)  # ε > 0: a zero gradient stays 0
    np.testing.assert_allclose(A, 0.2 * np.array([[1, 1, 0], [1, 2, 2], [0, 1, 2]]))


def test_adam_from_a_kept_state_by_hand():
    # one step from m_0 = 1, v_0 = 1 after s = 1 steps, β = (0.5, 0.5), g = 3, η = 1, ε = 0:
    # m = 0.5 + 1.5 = 2, m̂ = 2 / (1 − 0.5²) = 8/3; v = 0.5 + 4.5 = 5, v̂ = 5 / 0.75 = 20/3
    u = adam_direction([[3.0]], [1.0], betas=(0.5, 0.5), eps=0.0, exp_avg=[1.0], exp_avg_sq=[1.0], step=1)
    np.testing.assert_allclose(u, [[(8 / 3) / np.sqrt(20 / 3)]])
    # decoupled weight decay (AdamW) adds η λ θ per step
    decayed = adam_direction([[3.0]], [1.0], betas=(0.5, 0.5), eps=0.0, exp_avg=[1.0], exp_avg_sq=[1.0],
                             step=1, weight_decay=0.1, params=[2.0])  # fmt: skip
    np.testing.assert_allclose(decayed, u + 0.2)


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_adam_direction_is_torch_adam_on_a_frozen_gradient(decay):
    """The rule above against torch's own Adam/AdamW, stepped on a constant gradient from a kept state."""
    rng = np.random.default_rng(0)
    theta0, first, frozen = (rng.normal(size=6) for _ in range(3))
    p = torch.nn.Parameter(torch.tensor(theta0))
    opt = (torch.optim.AdamW if decay else torch.optim.Adam)([p], lr=0.01, weight_decay=decay, eps=1e-8)
    p.grad = torch.tensor(first)
    opt.step()  # a kept state: m, v and step = 1 from another document
    state = {k: v.clone() for k, v in opt.state[p].items()}
    start = p.detach().clone()
    lrs = [0.01, 0.02, 0.03]
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        p.grad = torch.tensor(frozen)
        opt.step()
    m0, v0 = state["exp_avg"].numpy(), state["exp_avg_sq"].numpy()
    u = adam_direction(frozen[None], lrs, exp_avg=m0, exp_avg_sq=v0, step=int(state["step"]),
                       weight_decay=decay, params=start.numpy())  # fmt: skip
    # frozen θ in the decay term is the one approximation: it is second order in η (λ·η·Δθ)
    np.testing.assert_allclose(-u[0], (p.detach() - start).numpy(), rtol=1e-3, atol=1e-9)


def test_offdiagonal_and_the_pair_specific_part():
    m = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(offdiagonal(m), [1, 2, 3, 5, 6, 7])
    i, j = np.indices((4, 4))
    additive = 0.5 + np.array([1.0, -2, 3, 0])[i] + np.array([0.0, 4, -1, 2])[j]  # μ + r_i + c_j
    np.testing.assert_allclose(additive_residual(additive), 0, atol=1e-12)
    bump = additive.copy()
    bump[0, 1] += 1.0  # one pair above its row and column: the residual is not zero there
    assert np.argmax(additive_residual(bump)) == 0


def test_ranks_match_the_slow_reference():
    rng = np.random.default_rng(1)
    np.testing.assert_allclose(average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    for _ in range(50):
        a, b = rng.integers(0, 4, size=10).astype(float), rng.normal(size=10)
        np.testing.assert_allclose(average_ranks(a), rankdata(a))
        assert rank_correlation(a, b) == pytest.approx(spearman(a, b))


def test_agreement_by_hand():
    predicted = np.array([[9.0, 1, 2], [3, 9, 5], [6, 7, 9]])  # off-diagonal 1, 2, 3, 5, 6, 7
    exact = agreement(predicted, 2 * predicted + 1, bootstrap=0, permutations=0)
    assert (exact.spearman, exact.pearson, exact.r2, exact.n_pairs) == (
        1.0,
        pytest.approx(1.0),
        pytest.approx(1.0),
        6,
    )
    assert exact.slope == pytest.approx(2.0) and exact.intercept == pytest.approx(1.0)
    replayed = np.array([[0.0, 1, 3], [2, 0, 5], [7, 6, 0]])  # off-diagonal 1, 3, 2, 5, 7, 6
    # two swaps of neighbouring ranks: Σd² = 4, ρ = 1 − 6·4 / (6·35)
    assert agreement(predicted, replayed, bootstrap=0, permutations=0).spearman == pytest.approx(1 - 24 / 210)


def test_the_interval_and_the_mantel_p():
    rng = np.random.default_rng(0)
    T = 8
    gram = rng.normal(size=(T, 4)) @ rng.normal(size=(4, T))
    close = agreement(gram, gram + 0.01 * rng.normal(size=(T, T)), bootstrap=300, permutations=300)
    low, high = close.spearman_interval
    assert 0.9 < low <= close.spearman <= high <= 1.0
    assert close.mantel_p == pytest.approx(1 / 301)  # no relabelling of 8 documents reaches ρ ≈ 1
    reversed_ = agreement(gram, -gram, bootstrap=0, permutations=300)  # ρ = −1: every relabelling reaches it
    assert (
        reversed_.spearman == -1.0
        and reversed_.mantel_p == 1.0
        and reversed_.spearman_interval == [None, None]
    )


# --- the probe on a tiny real run -----------------------------------------------------------------

SKETCH = 2048  # the 16,640 values of blocks.1.attn are stored as a count-sketch of 2,048


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory):
    """A tiny cyclic run (T = 5, M = 3, E = 2) with plain gradient descent at a small rate and its
    matched shuffled control; checkpoints and gradients at both epoch ends (episodes 5 and 10)."""
    out = tmp_path_factory.mktemp("learning-dynamics")
    lean = {"weights_every": 0, "activations_every": 0, "all_weights_dim": 0}
    sgd = {"optim.name": "sgd", "optim.lr": 0.01}
    recorded = {"checkpoints": "epoch", "grads_at": "epoch", "sketch_dim": SKETCH}
    cfg = tiny_config(out, epochs=2, control="shuffle", **recorded, **lean, **sgd)
    result = run_with_control(cfg, progress=False)
    assert result.control is not None and result.control.status == "complete"
    return result.run.path.parent


def test_sgd_prediction_matches_the_replay(sgd_run, tmp_path, one_thread):
    """At η = 0.01 and M = 3 the weights move little, so the first-order prediction should hold:
    measured on this run Spearman 0.98, R² 0.993 and slope 0.96 (replayed per predicted), its control
    0.99 and 0.993. The thresholds leave room for another CPU's rounding."""
    with RunStore(sgd_run) as store:
        result = LearningDynamics().run(store, tmp_path, bootstrap=200, permutations=200)
        T = store.n_docs
    assert result["source"] == "checkpoint" and result["optimizer"] == "sgd"
    assert result["checkpoint_episode"] == 5 and result["checkpoints"] == [
        5
    ]  # pairwise_recovery's checkpoint
    assert result["spearman"] > 0.9 and result["r2"] > 0.9
    assert 0.8 < result["slope"] < 1.2  # first order gets the scale right, not only the order
    low, high = result["spearman_interval"]
    assert low <= result["spearman"] <= high
    assert result["control_spearman"] > 0.9 and result["control_r2"] > 0.9
    assert result["verdict"].startswith("rank correlation of predicted and replayed recovery ")
    assert "in the matched shuffled control" in result["verdict"]
    head = result["per_checkpoint"][0]
    assert head["predicted"].shape == head["replayed"].shape == (T, T)
    assert np.all(np.diag(head["replayed"]) > 0) and np.all(np.diag(head["predicted"]) > 0)
    np.testing.assert_allclose(head["lrs"], [0.01] * 3)
    # the recorded layer is a sketch, read beside the exact gradients with the plain inner product
    assert result["layer"] == "blocks.1.attn" and result["layer_sketch"]["dim"] == SKETCH
    assert "count-sketch of 16,640 values into 2,048" in result["source_note"]
    assert np.isfinite(result["sketch_spearman"])
    header = (tmp_path / "learning_dynamics.csv").read_text().splitlines()[0].split(",")
    assert {"predicted", "replayed", "control_predicted", "control_replayed"} <= set(header)
    assert (tmp_path / "learning_dynamics.png").stat().st_size > 10_000


def test_sketch_only_and_every_checkpoint(sgd_run, tmp_path, one_thread):
    """Through the report's runner (options as the command line gives them, result.json written)."""
    probe = LearningDynamics()
    probe.progress = False
    options = {
        "source": "sketch",
        "episodes": "all",
        "control": "false",
        "bootstrap": "0",
        "permutations": "50",
    }
    with RunStore(sgd_run) as store:
        outcome = run_probe(probe, [store], tmp_path, options)
    assert outcome.status == "ok", outcome.reason
    assert outcome.figures == ["learning_dynamics.png"]
    result = json.loads((tmp_path / "learning_dynamics" / "result.json").read_text())["result"]
    assert result["source"] == "sketch" and result["checkpoints"] == [5, 10]
    assert result["per_checkpoint"][0]["exact"] is None and result["control_spearman"] is None
    assert result["spearman"] == result["sketch_spearman"]
    assert "no elementwise preconditioner survives a sketch" in result["source_note"]
    assert np.array(result["per_checkpoint"][1]["replayed"]).shape == (5, 5)


def test_what_the_sketch_does_to_the_inner_products(sgd_run, one_thread):
    """The stored count-sketch (k = 2,048 of D = 16,640) against exact gradients of the same layer
    recomputed at the same weights: each inner product within a few √(2/k)·|g_i||g_j| (the sketch's
    standard deviation; measured at most 1.3 of them), and the off-diagonal Gram entries nearly perfectly
    correlated (measured 0.993)."""
    with RunStore(sgd_run) as store:
        episodes, sketched = store.grads("blocks.1.attn")
        replay = Replay(store, 5)
    names = bridge_names(replay.model, None, "")
    module = replay.model.get_submodule(names.module_path("blocks.1.attn"))
    params = {f"{names.module_path('blocks.1.attn')}.{n}": p for n, p in module.named_parameters()}
    parts = list(replay.task.per_document_grads(replay.model, params, chunk=5, method="loop"))
    exact = (
        torch.cat([torch.cat([g.reshape(g.shape[0], -1) for g in part], 1) for part in parts])
        .double()
        .numpy()
    )
    assert exact.shape == (5, 16640)
    s = sketched[list(episodes).index(5)].astype(np.float64)
    gram_exact, gram_sketch = exact @ exact.T, s @ s.T
    norms = np.linalg.norm(exact, axis=1)
    sd = np.sqrt(2 / SKETCH) * np.outer(norms, norms)
    assert np.all(np.abs(gram_sketch - gram_exact) <= 4 * sd + 1e-4 * np.abs(gram_exact))
    assert np.corrcoef(offdiagonal(gram_sketch), offdiagonal(gram_exact))[0, 1] > 0.95


def test_adam_on_the_session_run(tiny_run, tmp_path, one_thread):
    """The default optimizer (Adam, reset every episode): the prediction goes through a fresh Adam's
    sign rule. Measured on a twin of this run (same training, lean recording): Spearman 0.92, slope 0.65
    (first order overshoots: Adam's steps are large); the threshold keeps well clear of it."""
    with RunStore(tiny_run) as store:
        result = LearningDynamics().run(store, tmp_path, bootstrap=100, permutations=100)
    assert result["optimizer"] == "adam" and result["prediction"].startswith("Adam from a fresh state")
    assert result["spearman"] > 0.6
    assert result["control_spearman"] is None and "no matched shuffled control" in result["verdict"]


# --- errors --------------------------------------------------------------------------------------


def test_missing_checkpoints_gradients_and_bad_options(tmp_path, sgd_run):
    doc, epoch = cyclic(3, 2)
    grads = {"blocks.0.attn": (np.array([3]), np.ones((1, 3, 4), np.float32))}
    bare = make_store(tmp_path / "bare", loss_eval=np.ones((7, 3)), schedule_doc=doc, schedule_epoch=epoch,
                      grads=grads)  # fmt: skip
    with RunStore(bare) as store:
        with pytest.raises(
            MissingDataError, match="Run 'bare' has no checkpoints; record them with record.checkpoints"
        ):
            LearningDynamics().run(store, tmp_path)
        with pytest.raises(MissingDataError, match=r"no gradients of 'blocks.0.attn' at checkpoint episode 6 "
                           r"\(recorded at: 3\); record.grads_at = epoch"):  # fmt: skip
            LearningDynamics.pick_layer(store, "sketch", "", [6])
    with RunStore(sgd_run) as store:
        with pytest.raises(
            UserError, match="learning_dynamics.source must be one of auto, checkpoint, sketch"
        ):
            LearningDynamics().run(store, tmp_path, source="exact")
        with pytest.raises(MissingDataError, match=r"no checkpoint at episode 7 \(have: 5, 10\)"):
            LearningDynamics().run(store, tmp_path, episodes="7")
        with pytest.raises(UserError, match="learning_dynamics.episodes must be default, all or"):
            LearningDynamics().run(store, tmp_path, episodes="last")
        with pytest.raises(MissingDataError, match=r"has no per-document gradients of 'blocks.0.mlp'"):
            LearningDynamics().run(store, tmp_path, source="sketch", layer="blocks.0.mlp")
