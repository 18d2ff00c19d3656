"""The paper's toy model (Sec. 4.4, App. A.5): hand-checked updates, recovery, circle."""

import numpy as np
import pytest

from arprobe.errors import UserError
from arprobe.science.comparison import curve_correlation, revolutions_per_epoch, ring_order
from arprobe.science.recovery import recovery_scores
from arprobe.science.schedule import Schedule
from arprobe.science.toy import (
    DEFAULT_EPOCHS,
    circularity,
    pca_2d,
    simulate_toy_model,
    train_toy_model,
)


def explicit_reference(P, X, w, Y, epochs, lr, sequence=None):
    """Eq. 1 and Eq. 2 written literally on the full P, over tasks 0..T-1 ``epochs`` times or the
    task ``sequence``; losses [K + 1, T]."""
    P, w = P.copy(), w.copy()
    f = (lambda w, i: w) if Y is None else (lambda w, i: Y[:, i] - w)
    f_inv = (lambda v, i: v) if Y is None else (lambda v, i: Y[:, i] - v)
    n_tasks = X.shape[1]
    sequence = list(range(n_tasks)) * epochs if sequence is None else sequence
    rows = [[0.5 * np.sum((P @ X[:, j] - f(w, j)) ** 2) for j in range(n_tasks)]]
    for i in sequence:
        x = X[:, i]
        P = P - lr * np.outer(P @ x - f(w, i), x)
        w = f_inv(P @ x, i)
        rows.append([0.5 * np.sum((P @ X[:, j] - f(w, j)) ** 2) for j in range(n_tasks)])
    return np.array(rows)


# Tiny instance, T = 3, N = M = 2: P = I, x_0 = (1, 0), x_1 = (0, 1), x_2 = (1, 1), w = 0.
P_TINY = np.eye(2)
X_TINY = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
W_TINY = np.zeros(2)
Y_TINY = np.array([[1.0, 0.0, 1.0], [1.0, 2.0, 1.0]])  # y_0 = (1, 1), y_1 = (0, 2), y_2 = (1, 1)


def test_result_shapes_and_schedule():
    result = simulate_toy_model("target", n_tasks=5, dim=7, epochs=3)
    assert result.loss.shape == (3 * 5 + 1, 5) and result.loss.dtype == np.float64
    assert result.embeddings.shape == (3 + 1, 5, 7) and result.embeddings.dtype == np.float64
    assert result.schedule.dtype == np.int32 and result.epoch.dtype == np.int32
    np.testing.assert_array_equal(result.schedule, np.tile(np.arange(5), 3))
    np.testing.assert_array_equal(result.epoch, np.repeat([1, 2, 3], 5))


def test_default_settings_follow_appendix_a5():
    identity = simulate_toy_model("identity", epochs=1)
    target = simulate_toy_model("target", epochs=1)
    assert identity.embeddings.shape == (2, 25, 1000)
    assert target.embeddings.shape == (2, 25, 100)
    assert simulate_toy_model("target").loss.shape == (DEFAULT_EPOCHS * 25 + 1, 25)


def test_identity_two_steps_by_hand():
    # lr 0.1. Row 0: l_j = 1/2 |x_j - 0|^2 = 0.5, 0.5, 1.0.
    # Task 0: P <- P - 0.1 (1, 0) x_0^T = [[0.9, 0], [0, 1]], w = P x_0 = (0.9, 0).
    #   l_1 = 1/2 |(0, 1) - (0.9, 0)|^2 = 0.905, l_2 = 1/2 |(0.9, 1) - (0.9, 0)|^2 = 0.5.
    # Task 1: residual (-0.9, 1) -> P = [[0.9, 0.09], [0, 0.9]], w = P x_1 = (0.09, 0.9).
    #   l_0 = 1/2 |(0.9, 0) - w|^2 = 1/2 (0.81^2 + 0.9^2) = 0.73305, l_2 = 1/2 |(0.99, 0.9) - w|^2 = 0.405.
    result = train_toy_model("identity", P_TINY, X_TINY, W_TINY, epochs=1, lr=0.1)
    np.testing.assert_allclose(result.loss[0], [0.5, 0.5, 1.0])
    np.testing.assert_allclose(result.loss[1], [0.0, 0.905, 0.5], atol=1e-12)
    np.testing.assert_allclose(result.loss[2], [0.73305, 0.0, 0.405], atol=1e-12)
    np.testing.assert_allclose(result.embeddings[0], X_TINY.T)  # f^{-1}(P x) = P x = x
    np.testing.assert_array_equal(W_TINY, 0.0)  # inputs are not modified


def test_target_one_step_by_hand():
    # lr 0.1. Row 0: l_j = 1/2 |x_j - y_j|^2 = 0.5, 0.5, 0.
    # Task 0: residual P x_0 - (y_0 - w) = (0, -1) -> P = [[1, 0], [0.1, 1]],
    #   w = y_0 - P x_0 = (0, 0.9); f_j(w) = y_j - w.
    #   l_1 = 1/2 |(0, 1) - (0, 1.1)|^2 = 0.005, l_2 = 1/2 |(1, 1.1) - (1, 0.1)|^2 = 0.5.
    result = train_toy_model("target", P_TINY, X_TINY, W_TINY, Y_TINY, epochs=1, lr=0.1)
    np.testing.assert_allclose(result.loss[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(result.loss[1], [0.0, 0.005, 0.5], atol=1e-12)
    np.testing.assert_allclose(result.embeddings[0], (Y_TINY - X_TINY).T)  # y_j - P x_j


@pytest.mark.parametrize("kind", ["identity", "target"])
def test_gram_update_matches_literal_equations(kind):
    rng = np.random.default_rng(1)
    P = rng.normal(0, 1 / 6, (6, 6))
    X = rng.uniform(-1, 1, (6, 4))
    w = rng.uniform(-1, 1, 6)
    Y = rng.uniform(-1, 1, (6, 4)) if kind == "target" else None
    result = train_toy_model(kind, P, X, w, Y, epochs=3, lr=0.05)
    np.testing.assert_allclose(result.loss, explicit_reference(P, X, w, Y, 3, 0.05), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["identity", "target"])
def test_trained_task_loss_drops_to_zero(kind):
    result = simulate_toy_model(kind, epochs=2)
    episodes = np.arange(len(result.schedule))
    trained_before = result.loss[episodes, result.schedule]
    trained_after = result.loss[episodes + 1, result.schedule]
    # Eq. 2 solves w exactly for the task just trained.
    assert np.all(trained_after < 1e-20 + 1e-9 * trained_before)
    assert np.all(trained_before > 1e-3)


def test_extra_steps_per_task_change_nothing():
    one = simulate_toy_model("target", epochs=3, steps_per_task=1)
    three = simulate_toy_model("target", epochs=3, steps_per_task=3)
    np.testing.assert_allclose(three.loss, one.loss, atol=1e-12)


# Measured with seed 0 and the defaults (30 epochs): RS(1) -> RS(29) is
# 0.887 -> 0.974 for "identity" and 0.408 -> 0.952 for "target".
@pytest.mark.parametrize(("kind", "first", "last"), [("identity", 0.887, 0.974), ("target", 0.408, 0.952)])
def test_anticipatory_recovery_grows_over_epochs(kind, first, last):
    toy = simulate_toy_model(kind)
    scores = recovery_scores(toy.loss, toy.schedule)
    assert scores.shape == (DEFAULT_EPOCHS - 1,)
    np.testing.assert_allclose(scores[[0, -1]], [first, last], atol=2e-3)
    assert scores[-1] > 0.9  # most of the forgetting is recovered before the task returns
    assert scores[-1] - scores[0] > 0.05
    assert np.all(np.diff(scores) > -2e-3)  # grows, up to wobbles of a thousandth once saturated


def test_a_given_task_sequence_by_hand():
    # identity, lr 0.1, the tiny tasks in the order 1, 0 (one epoch), then 2 (a second epoch).
    # Task 1: residual P x_1 - w = (0, 1) -> P = [[1, 0], [0, 0.9]], w = P x_1 = (0, 0.9).
    #   l_0 = 1/2 |(1, 0) - (0, 0.9)|^2 = 0.905, l_2 = 1/2 |(1, 0.9) - (0, 0.9)|^2 = 0.5.
    result = train_toy_model(
        "identity", P_TINY, X_TINY, W_TINY, lr=0.1, schedule=np.array([1, 0, 2]), epoch=np.array([1, 1, 2])
    )
    np.testing.assert_allclose(result.loss[1], [0.905, 0.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(result.fast_weights[:2], [[0, 0], [0, 0.9]], atol=1e-12)
    np.testing.assert_array_equal(result.schedule, [1, 0, 2])
    # embeddings before training, after epoch 1 (episode 2) and after epoch 2 (episode 3)
    assert result.embeddings.shape == (3, 3, 2)
    np.testing.assert_allclose(
        result.loss, explicit_reference(P_TINY, X_TINY, W_TINY, None, 0, 0.1, [1, 0, 2])
    )


@pytest.mark.parametrize("kind", ["identity", "target"])
def test_a_run_order_matches_the_literal_equations(kind):
    # an insert-like order: block 0, 1 every epoch, one-off tasks 2, 3, 4 in epochs of 3, 2 and 4
    rng = np.random.default_rng(2)
    P, X, w = rng.normal(0, 1 / 6, (6, 6)), rng.uniform(-1, 1, (6, 5)), rng.uniform(-1, 1, 6)
    Y = rng.uniform(-1, 1, (6, 5)) if kind == "target" else None
    sequence, epoch = [0, 1, 2, 0, 1, 0, 1, 3, 4], [1, 1, 1, 2, 2, 3, 3, 3, 3]
    result = train_toy_model(kind, P, X, w, Y, lr=0.05, schedule=np.array(sequence), epoch=np.array(epoch))
    expected = explicit_reference(P, X, w, Y, 0, 0.05, sequence)
    np.testing.assert_allclose(result.loss, expected, rtol=1e-10, atol=1e-12)
    assert result.embeddings.shape == (4, 5, 6) and result.fast_weights.shape == (10, 6)
    # after each episode w solves the task just trained: its loss is zero
    np.testing.assert_allclose(result.loss[np.arange(1, 10), sequence], 0, atol=1e-20)
    # the embeddings closing epoch 2 are those after episode 5, i.e. of the first 5 steps alone
    head = train_toy_model(
        kind, P, X, w, Y, lr=0.05, schedule=np.array(sequence[:5]), epoch=np.array(epoch[:5])
    )
    np.testing.assert_allclose(result.embeddings[2], head.embeddings[-1], rtol=1e-12)
    with pytest.raises(UserError, match=r"tasks in 0\.\.4"):
        train_toy_model(kind, P, X, w, Y, lr=0.05, schedule=np.array([0, 5]), epoch=np.array([1, 1]))


def test_comparison_of_a_run_with_itself_and_with_a_toy():
    schedule = Schedule(np.tile(np.arange(5), 4), np.repeat(np.arange(1, 5), 5), 5)
    toy = simulate_toy_model("target", n_tasks=5, dim=8, schedule=schedule.doc, epoch=schedule.epoch)
    same = curve_correlation(toy.loss, toy.loss, schedule)
    assert (
        same["correlation"] == pytest.approx(1.0) and len(same["offset"]) == 17
    )  # 21 rows - doc 4 starts at row 4
    np.testing.assert_allclose(same["offset_epochs"][:3], [0, 0.2, 0.4])
    # a run whose loss is the toy's, reversed in sign after the first training: correlation −1
    flipped = toy.loss.copy()
    flipped[1:] *= -1
    assert curve_correlation(flipped, toy.loss, schedule)["correlation"] == pytest.approx(-1.0)
    # a circle walked once per epoch of 5 episodes: one revolution in the complete epochs 2 and 3
    angle = 2 * np.pi * np.arange(21) / 5
    circle = np.stack([np.cos(angle), np.sin(angle), np.zeros(21)], axis=1)
    wind = revolutions_per_epoch(circle, np.arange(21), schedule)
    assert wind["complete"].tolist() == [False, True, True, False]
    np.testing.assert_allclose(np.abs(wind["revolutions"][1:3]), 1.0, atol=1e-9)
    # a ring of 8 points 45° apart, read in order, then with 4 and 5 swapped: the steps turn
    # +45, +45, +45, +90, −45, +90, +45 and +45 back to the start, so 7 of 8 agree
    ring = np.stack([np.cos(np.pi * np.arange(8) / 4), np.sin(np.pi * np.arange(8) / 4)], axis=1)
    assert ring_order(ring, np.arange(8))["order_agreement"] == 1.0
    assert ring_order(ring, np.array([0, 1, 2, 3, 5, 4, 6, 7]))["order_agreement"] == pytest.approx(7 / 8)


def test_target_embeddings_self_organise_into_a_circle():
    # Fig. 11: the untrained embeddings are a cloud, after training a ring in task order.
    # Seed 0 measures order 0.52 / winding -1 / radius CV 0.43 at epoch 0 and 1.0 / +1 / 0.12
    # at epoch 30 (seeds 1-4: order >= 0.96, CV <= 0.18 at epoch 30; order <= 0.64 at 0).
    embeddings = simulate_toy_model("target").embeddings
    untrained = circularity(pca_2d(embeddings[0])[0])
    trained = circularity(pca_2d(embeddings[-1])[0])
    assert trained["order_agreement"] >= 0.9
    assert abs(abs(trained["winding"]) - 1.0) < 0.15
    assert trained["radius_cv"] < 0.2
    # A random cloud can wind once about its centroid too; what it lacks is consistent order.
    assert untrained["order_agreement"] < 0.7
    assert untrained["radius_cv"] > 0.3


def test_circularity_of_synthetic_circles():
    n = 25
    angle = 2 * np.pi * np.arange(n) / n
    circle = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 3.0 + [5.0, -2.0]
    forward = circularity(circle)
    assert forward["order_agreement"] == 1.0
    assert forward["winding"] == pytest.approx(1.0)
    assert forward["radius_cv"] == pytest.approx(0.0, abs=1e-12)

    backward = circularity(circle[::-1])
    assert backward["order_agreement"] == 1.0
    assert backward["winding"] == pytest.approx(-1.0)

    shuffled = circularity(circle[np.random.default_rng(0).permutation(n)])
    assert shuffled["order_agreement"] < 0.75
    assert shuffled["radius_cv"] == pytest.approx(0.0, abs=1e-12)  # still a circle, just out of order


def test_pca_2d_on_known_points():
    # Spread 2 along e_0, 1 along e_1, nothing along e_2: variances 8 and 2 of 10.
    points = np.array([[2, 0, 0], [-2, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=float) + [1, 2, 3]
    coords, ratio = pca_2d(points)
    np.testing.assert_allclose(ratio, [0.8, 0.2])
    np.testing.assert_allclose(np.abs(coords), [[2, 0], [2, 0], [0, 1], [0, 1]], atol=1e-12)


def test_user_errors_say_what_to_do():
    with pytest.raises(UserError, match=r"Unknown toy model kind 'spiral'\. Available: identity, target"):
        simulate_toy_model("spiral")
    # App. A.5's lr 0.01 at N = 1000 overshoots every step (lr |x|^2 ~ 3.3).
    with pytest.raises(UserError, match=r"lr=0.01 makes the toy model diverge .* use lr below 0.00"):
        simulate_toy_model("identity", lr=0.01, epochs=1)
    with pytest.raises(UserError, match="needs Y"):
        train_toy_model("target", P_TINY, X_TINY, W_TINY, epochs=1, lr=0.1)
    with pytest.raises(UserError, match="epochs must be at least 1"):
        simulate_toy_model("target", epochs=0)
