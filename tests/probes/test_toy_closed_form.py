"""toy_closed_form: the toy and its linear-regression baseline (w frozen, Evron et al. 2022) without
training — against a direct simulation of the same updates, against the trained toy, on T = 2 cases
worked by hand, the convergence limit — and the toy_model probe's closed-form headline."""

import numpy as np
import pytest

from arprobe.errors import UserError
from arprobe.probes.toy_probe import ToyModel
from arprobe.science.toy import DEFAULT_LR, simulate_toy_model
from arprobe.science.toy_closed_form import (
    baseline_for_toy,
    cycle_matrix,
    cyclic_eval_matrix,
    draw_toy_model,
    episode_matrix,
    eval_matrix,
    initial_state,
    weight_map,
)
from arprobe.testing import cyclic, make_store
from tests.helpers import run_one


def simulate_regression(P, X, F, schedule, lr, steps):
    """[K+1, T] losses ½|P x_j − F_j|² of plain gradient descent on fixed targets, step by step;
    steps=None: each episode solves its task exactly (the minimum-change fit)."""
    P = P.copy()
    rows = [0.5 * np.sum((P @ X - F) ** 2, axis=0)]
    for i in schedule:
        x, f = X[:, i], F[:, i]
        if steps is None:
            P -= np.outer(P @ x - f, x) / (x @ x)
        else:
            for _ in range(steps):
                P -= lr * np.outer(P @ x - f, x)
        rows.append(0.5 * np.sum((P @ X - F) ** 2, axis=0))
    return np.array(rows)


def regression_state(P, X, F):
    """U0 = [P X − F | 0]: plain regression on targets F is the baseline with z = 0."""
    return np.column_stack([P @ X - F, np.zeros(len(F))]), X.T @ X


@pytest.mark.parametrize("steps", [1, 3, None])
def test_closed_form_equals_a_direct_simulation_of_the_updates(steps):
    rng = np.random.default_rng(0)
    M, N, T = 3, 6, 4
    P, X, F = rng.normal(size=(M, N)), rng.normal(size=(N, T)), rng.normal(size=(M, T))
    lr = 0.9 / np.max(np.sum(X * X, axis=0))  # below 2 / |x|², and away from a full solve
    schedule = rng.integers(0, T, size=13)  # any order, tasks repeating
    U0, gram = regression_state(P, X, F)
    expected = simulate_regression(P, X, F, schedule, lr, steps)
    np.testing.assert_allclose(eval_matrix(gram, U0, schedule, lr, steps), expected, rtol=1e-10, atol=1e-12)
    # a cyclic order, through the epoch's matrix power
    cyclic = np.tile(np.arange(T), 5)
    expected = simulate_regression(P, X, F, cyclic, lr, steps)
    np.testing.assert_allclose(cyclic_eval_matrix(gram, U0, 5, lr, steps), expected, rtol=1e-10, atol=1e-12)
    # tall U0 (M > T+1) is reduced by QR first; the losses do not change
    P, F = rng.normal(size=(9, N)), rng.normal(size=(9, T))
    U0, gram = regression_state(P, X, F)
    expected = simulate_regression(P, X, F, schedule, lr, steps)
    np.testing.assert_allclose(eval_matrix(gram, U0, schedule, lr, steps), expected, rtol=1e-10, atol=1e-12)


def test_orthogonal_inputs_by_hand_nothing_is_forgotten():
    # x1 = (1, 0), x2 = (0, 2), targets 1 and 3, P0 = 0, lr = 1/8, 2 steps per episode: task 1's residual
    # is multiplied by (1 − 1/8)² = 0.765625 per episode, task 2's by (1 − 4/8)² = 0.25; the other task's
    # loss never moves.
    X = np.array([[1.0, 0.0], [0.0, 2.0]])
    F = np.array([[1.0, 3.0]])
    U0, gram = regression_state(np.zeros((1, 2)), X, F)
    a, b = 0.5 * 0.765625**2, 0.5 * 9 * 0.25**2
    expected = [[0.5, 4.5], [a, 4.5], [a, b], [a * 0.765625**2, b], [a * 0.765625**2, b * 0.25**2]]
    np.testing.assert_allclose(eval_matrix(gram, U0, [0, 1, 0, 1], 0.125, 2), expected, rtol=1e-12)


def test_parallel_inputs_by_hand_each_task_overwrites_the_other():
    # x1 = (1, 0), x2 = (2, 0), targets 1 and 4: no P fits both. Trained to convergence, task 1 sets
    # P = (1, 0) (losses 0 and ½(2 − 4)² = 2), task 2 sets P = (2, 0) (losses ½(2 − 1)² = 0.5 and 0).
    X = np.array([[1.0, 2.0], [0.0, 0.0]])
    F = np.array([[1.0, 4.0]])
    U0, gram = regression_state(np.zeros((1, 2)), X, F)
    expected = [[0.5, 8.0], [0.0, 2.0], [0.5, 0.0], [0.0, 2.0], [0.5, 0.0]]
    np.testing.assert_allclose(eval_matrix(gram, U0, [0, 1, 0, 1], 0.1, None), expected, atol=1e-15)
    # one step of lr 1/4 on task 1: P = (1/4, 0), losses ½(1/4 − 1)² and ½(1/2 − 4)²
    np.testing.assert_allclose(eval_matrix(gram, U0, [0], 0.25, 1)[1], [0.28125, 6.125], rtol=1e-14)


def test_convergence_limit_is_the_projection():
    x = np.array([1.0, -2.0, 0.5])
    projection = np.eye(3) - np.outer(x, x) / (x @ x)
    lr = 0.5 / (x @ x)  # each step removes half of the residual along x
    np.testing.assert_allclose(weight_map(x, lr, None), projection, atol=1e-15)
    step = np.eye(3) - lr * np.outer(x, x)
    np.testing.assert_allclose(weight_map(x, lr, 5), np.linalg.matrix_power(step, 5), atol=1e-14)
    np.testing.assert_allclose(weight_map(x, lr, 200), projection, atol=1e-15)
    np.testing.assert_allclose(weight_map(x, lr, 200) @ x, 0.0, atol=1e-15)  # x's complement only
    # in residual space: many steps per episode give the converged eval matrix
    rng = np.random.default_rng(1)
    X, F, P = rng.normal(size=(5, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 5))
    U0, gram = regression_state(P, X, F)
    lr = 0.5 / np.max(np.diag(gram))
    np.testing.assert_allclose(
        eval_matrix(gram, U0, [0, 1, 2, 0], lr, 400),
        eval_matrix(gram, U0, [0, 1, 2, 0], lr, None),
        atol=1e-12,
    )


@pytest.mark.parametrize("kind", ["identity", "target"])
def test_the_toy_itself_in_closed_form_and_its_frozen_w_baseline(kind):
    T, dim, lr = 5, 12, 0.05
    order = np.array([0, 1, 2, 3, 4, 2, 0, 1, 4, 3, 3, 0])
    toy = simulate_toy_model(kind, n_tasks=T, dim=dim, lr=lr, seed=4, schedule=order, epoch=np.ones(12, int))
    P, X, w, Y = draw_toy_model(kind, T, dim, seed=4)
    baseline, exact = baseline_for_toy(kind, P, X, w, Y, order, lr)
    scale = toy.loss.max()
    np.testing.assert_allclose(exact, toy.loss, rtol=0, atol=1e-12 * scale)  # the toy, not trained
    # w frozen at w0: plain regression on the targets f_i(w0) = w0 ("identity") or y_i − w0 ("target")
    F = np.repeat(w[:, None], T, axis=1) if Y is None else Y - w[:, None]
    np.testing.assert_allclose(baseline, simulate_regression(P, X, F, order, lr, 1), rtol=1e-10, atol=1e-12)
    assert baseline[0] == pytest.approx(toy.loss[0])  # same start
    # the toy's episode does not depend on steps (Eq. 2 zeroes the gradient after one step)
    U0, gram = initial_state(kind, P, X, w, Y)
    np.testing.assert_array_equal(
        episode_matrix(gram, 2, lr, 1, solve_w=True), episode_matrix(gram, 2, lr, 7, solve_w=True)
    )
    # a cyclic order through Cⁿ gives the same toy
    cyclic = simulate_toy_model(kind, n_tasks=T, dim=dim, lr=lr, seed=4, epochs=6)
    np.testing.assert_allclose(
        cyclic_eval_matrix(gram, U0, 6, lr, solve_w=True), cyclic.loss, rtol=0, atol=1e-12 * cyclic.loss.max()
    )
    assert cycle_matrix(gram, range(T), lr, solve_w=True).shape == (T + 1, T + 1)


def test_closed_form_refuses_bad_input():
    U0, gram = regression_state(np.zeros((1, 2)), np.eye(2), np.ones((1, 2)))
    with pytest.raises(UserError, match=r"needs the state \[M, T\+1\] for T = 2 tasks, got shape \(1, 2\)"):
        eval_matrix(gram, U0[:, :2], [0], 0.1)
    with pytest.raises(UserError, match="tasks in 0..1"):
        eval_matrix(gram, U0, [2], 0.1)
    with pytest.raises(UserError, match="steps must be at least 1"):
        eval_matrix(gram, U0, [0], 0.1, 0)
    with pytest.raises(UserError, match="x_i must be non-zero"):
        eval_matrix(np.diag([1.0, 0.0]), U0, [0], 0.1)


def test_toy_probe_reports_the_closed_form_beside_the_toy(tmp_path):
    probe = ToyModel()
    r = probe.run(None, tmp_path, epochs=5, n_tasks=6)
    for key in (
        "closed_form_task1_max_abs_diff",
        "closed_form_curve_correlation",
        "closed_form_rs_last",
        "closed_form_toy_error",
    ):
        assert key in probe.headline_keys and set(r[key]) == {"identity", "target"}
        assert all(np.isfinite(v) for v in r[key].values()), (key, r[key])
    assert max(r["closed_form_toy_error"].values()) < 1e-9  # the toy reproduced, up to rounding
    assert all(-1 <= c <= 1 for c in r["closed_form_curve_correlation"].values())
    assert [len(r["closed_form"]["recovery_score"][k]) for k in ("identity", "target")] == [4, 4]
    assert [len(r["closed_form"]["task1_loss"][k]) for k in ("identity", "target")] == [31, 31]
    for kind in ("identity", "target"):  # same start, then apart: Eq. 2 moves the toy's targets
        assert r["closed_form"]["task1_loss"][kind][0] == pytest.approx(r[kind]["task1_loss"][0])
        assert r["closed_form_task1_max_abs_diff"][kind] > 0
    header = (tmp_path / "toy_loss.csv").read_text().splitlines()[0]
    assert "identity: closed-form task-1 loss" in header and "target: closed-form RS(n)" in header
    (tmp_path / "conv").mkdir()
    converged = ToyModel().run(None, tmp_path / "conv", epochs=5, n_tasks=6, closed_form_steps=0)
    assert converged["closed_form"]["steps"] is None
    assert converged["closed_form_rs_last"] != r["closed_form_rs_last"]
    with pytest.raises(UserError, match="closed_form_steps must be 0"):
        ToyModel().run(None, tmp_path, epochs=2, n_tasks=6, closed_form_steps=-1)


def test_toy_probe_compares_a_run_with_the_closed_form(tmp_path):
    """A 'run' whose eval matrix is the closed-form baseline of f_i(w) = y_i − w (seed 3, the run's cyclic
    T = 6, E = 3): its shift-averaged curve is the baseline's, correlation 1."""
    doc, epoch = cyclic(6, 3)
    P, X, w, Y = draw_toy_model("target", 6, None, seed=3)
    baseline, _ = baseline_for_toy("target", P, X, w, Y, doc, DEFAULT_LR["target"])
    run = make_store(tmp_path / "run", loss_eval=baseline, schedule_doc=doc, schedule_epoch=epoch)
    r = run_one("toy_model", run, tmp_path / "report", seed=3)["result"]
    assert r["closed_form_run_curve_correlation"]["target"] == pytest.approx(1.0, abs=1e-6)  # float32 store
    assert set(r["closed_form_run_curve_correlation"]) == {"identity", "target"}
    assert len(r["closed_form"]["task1_loss"]["target"]) == 19
