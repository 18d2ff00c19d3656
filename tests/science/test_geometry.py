"""The probes' pure math (arprobe.science.geometry) on hand-made arrays with answers known by hand."""

import numpy as np
import pytest

from arprobe.science import geometry as A


def circle(n: int, revolutions: float = 1.0, radius: float = 1.0, centre=(0.0, 0.0)) -> np.ndarray:
    angle = 2 * np.pi * revolutions * np.arange(n) / n
    return np.stack([np.cos(angle), np.sin(angle)], axis=1) * radius + centre


# --- inner products ---------------------------------------------------------------------------


def test_cosine_of_known_vectors():
    x = np.array([[1.0, 0, 0], [0, 2.0, 0], [3.0, 3.0, 0], [-1.0, 0, 0]])
    cos = A.cosine_matrix(x)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(cos, [[1, 0, s, -1], [0, 1, s, 0], [s, s, 1, -s], [-1, 0, -s, 1]], atol=1e-12)


def test_zero_vector_gives_nan_not_a_crash():
    cos = A.cosine_matrix(np.array([[1.0, 0], [0, 0]]))
    assert cos[0, 0] == 1.0 and np.isnan(cos[0, 1]) and np.isnan(cos[1, 1])


def test_gram_in_blocks_equals_direct(monkeypatch):
    monkeypatch.setattr(A, "GRAM_BLOCK", 3)  # force several column blocks
    x = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    centre = x.mean(axis=0)
    np.testing.assert_allclose(A.gram_matrix(x), x.astype(float) @ x.T.astype(float), rtol=1e-6)
    xc = x.astype(float) - centre
    np.testing.assert_allclose(A.gram_matrix(x, center=centre), xc @ xc.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        A.step_norms(x), np.linalg.norm(np.diff(x.astype(float), axis=0), axis=1), rtol=1e-6
    )


def test_step_norms_by_hand():
    x = np.array([[0.0, 0], [3, 4], [3, 4], [0, 0]])
    np.testing.assert_allclose(A.step_norms(x), [5, 0, 5])


# --- residuals -------------------------------------------------------------------------------


def test_window_residual_removes_a_linear_drift_and_keeps_the_rest():
    n, window = 12, 4
    drift = np.outer(np.arange(n), [1.0, 2.0, 0.0])  # straight line: every centred mean equals the point
    wiggle = np.zeros((n, 3))
    wiggle[:, 2] = (-1.0) ** np.arange(n)
    op, rows = A.residual_operator(n, "window", window)
    np.testing.assert_array_equal(rows, np.arange(2, n - 2))  # half = 2 snapshots each side must exist
    np.testing.assert_allclose(op.sum(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(op @ drift, 0, atol=1e-12)
    # mean of 5 alternating ±1 around t is ±1/5, so the residual is ±(1 − 1/5)
    np.testing.assert_allclose((op @ wiggle)[:, 2], 0.8 * (-1.0) ** rows)


def test_initial_residual_and_its_cosines_from_the_gram_matrix():
    x = np.array([[1.0, 1.0], [2.0, 1.0], [1.0, 3.0], [0.0, 1.0]])
    op, rows = A.residual_operator(4, "initial", 0)
    np.testing.assert_array_equal(rows, [1, 2, 3])
    np.testing.assert_allclose(op @ x, [[1, 0], [0, 2], [-1, 0]])
    cos, rows = A.residual_cosines(A.gram_matrix(x), "initial", 0)
    np.testing.assert_allclose(cos, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-12)


# --- periodicity -----------------------------------------------------------------------------


def test_diagonal_means_by_hand():
    m = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(A.diagonal_means(m), [(0 + 4 + 8) / 3, (1 + 5) / 2, 2])


@pytest.mark.parametrize("T", [5, 8, 10])
def test_stripe_period_of_a_periodic_residual_sequence_is_T(T):
    # residuals rotating once every T snapshots plus noise: cosine stripes every T
    n = 3 * T
    rng = np.random.default_rng(T)
    angle = 2 * np.pi * np.arange(n) / T
    residuals = np.stack([np.cos(angle), np.sin(angle)], axis=1) @ rng.normal(
        size=(2, 40)
    ) + 0.2 * rng.normal(size=(n, 40))
    assert A.stripe_period(A.cosine_matrix(residuals)) == T


def test_stripe_period_none_without_stripes():
    assert A.stripe_period(np.eye(12)) is None  # nothing repeats


def test_dominant_period_of_a_sine():
    assert A.dominant_period(np.sin(2 * np.pi * np.arange(40) / 10)) == pytest.approx(10.0)
    assert A.dominant_period(np.ones(3)) is None


# --- distances in the cycle --------------------------------------------------------------------


def test_cyclic_distance():
    np.testing.assert_array_equal(
        A.cyclic_distance(np.array([0, 0, 0, 1]), np.array([1, 4, 3, 9]), 10), [1, 4, 3, 2]
    )


def test_distance_binned_means_of_a_cyclic_matrix():
    # M[i, j] = cyclic distance squared, T = 6: means by distance are 0, 1, 4, 9
    T = 6
    i, j = np.indices((T, T))
    m = A.cyclic_distance(i, j, T).astype(float) ** 2
    np.testing.assert_allclose(A.mean_by_cyclic_distance(m), [0, 1, 4, 9])
    # M[i, j] = (j − i) mod T keeps direction: offset o has value o
    fwd = ((j - i) % T).astype(float)
    np.testing.assert_allclose(A.mean_by_offset(fwd), np.arange(T))
    np.testing.assert_allclose(
        A.binned_means([1.0, 3.0, 5.0, np.nan], [0, 0, 2, 2], 4), [2, np.nan, 5, np.nan]
    )


def test_symmetry():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(6, 6))
    assert A.symmetry(s + s.T) == pytest.approx(1.0)
    assert A.symmetry(s - s.T) == pytest.approx(-1.0)


# --- PCA and helices ---------------------------------------------------------------------------


def test_pca_of_known_points():
    # spread 2 along e0, 1 along e1, nothing along e2: variances 8 and 2 of 10
    pts = np.array([[2, 0, 0], [-2, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=float) + [1, 2, 3]
    scores, ratio = A.pca(pts, 3)
    np.testing.assert_allclose(ratio, [0.8, 0.2, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(scores[:, :2]), [[2, 0], [2, 0], [0, 1], [0, 1]], atol=1e-12)
    assert scores[0, 0] <= 0  # sign convention: the first snapshot scores non-positive


def test_winding_of_a_circle():
    assert A.winding_angle(circle(12)) == pytest.approx(2 * np.pi * 11 / 12)  # 11 steps of an open path
    closed = np.vstack([circle(12), circle(12)[:1]])
    assert A.winding_angle(closed) == pytest.approx(2 * np.pi)
    assert A.winding_angle(closed[::-1]) == pytest.approx(-2 * np.pi)
    assert A.mean_radius(circle(12, radius=3.0, centre=(5, 5))) == pytest.approx(3.0)


def test_helix_one_revolution_per_epoch_with_shrinking_radius():
    # a synthetic weight trajectory: snapshot 0 before training, then T per epoch, one
    # revolution per epoch, radius 3, 2, 1, drifting along x as it goes
    T, E = 10, 3
    k = np.arange(T * E + 1)
    radius = np.concatenate([[3.0], np.repeat([3.0, 2.0, 1.0], T)])
    angle = 2 * np.pi * k / T
    traj = np.stack([radius * np.cos(angle) + 0.01 * k, radius * np.sin(angle)], axis=1)
    epoch = np.concatenate([[0], np.repeat([1, 2, 3], T)])
    h = A.helix_per_epoch(traj, epoch)
    np.testing.assert_array_equal(h["epoch"], [1, 2, 3])
    np.testing.assert_array_equal(h["points"], [T, T, T])
    np.testing.assert_allclose(h["winding"], 2 * np.pi, rtol=0.02)
    np.testing.assert_allclose(h["radius"], [3, 2, 1], rtol=0.05)
    assert A.trend(h["radius"]) == pytest.approx(-1.0, rel=0.05)


def test_epoch_segments_share_the_boundary_snapshot():
    seg = A.epoch_segments(np.array([0, 1, 1, 2, 2]))
    np.testing.assert_array_equal(seg[1], [0, 1, 2])
    np.testing.assert_array_equal(seg[2], [2, 3, 4])


# --- forgetting and recovery of one curve --------------------------------------------------------


def test_intervals_between_trainings_by_hand():
    # trained at episodes 1 and 5: rows 1..4 = 1, 4, 3, 2 (after 1, peak 4 at +1, before 2)
    curve = np.array([9.0, 1, 4, 3, 2, 0.5, 1])
    out = A.intervals_between(curve, np.array([1, 5]))
    assert out["after"].tolist() == [1] and out["peak"].tolist() == [4] and out["before"].tolist() == [2]
    assert out["peak_position"].tolist() == [1]
    np.testing.assert_allclose(out["recovered"], [(4 - 2) / (4 - 1)])
    flat = A.intervals_between(np.array([5.0, 1, 1, 1]), np.array([1, 3]))
    assert np.isnan(flat["recovered"][0])  # nothing forgotten, nothing to recover


def test_interval_peaks_of_a_shift_averaged_curve():
    T = 3
    curve = np.array([5.0, 1, 3, 2, 0.5, 2, 1, 0.2])  # trainings at offsets 1, 4, 7
    out = A.interval_peaks(curve, T)
    np.testing.assert_allclose(out["recovered"], [(3 - 2) / (3 - 1), (2 - 1) / (2 - 0.5)])
    np.testing.assert_array_equal(out["peak_position"], [1, 1])
    # the same with the offsets given: an insert run's block returns after epochs of 5 and 4
    uneven = A.interval_peaks(np.array([6.0, 1, 3, 4, 3.5, 3, 1, 3, 4, 3.5, 1]), np.array([1, 6, 10]))
    np.testing.assert_allclose(uneven["recovered"], [(4 - 3) / (4 - 1), (4 - 3.5) / (4 - 1)])


# --- orders other than cyclic ------------------------------------------------------------------

# Insert order (App. B.7), T = 8: block 0, 1, 2 every epoch, then 2, 1, 2 one-off documents.
INSERT_DOC = np.array([0, 1, 2, 3, 4, 0, 1, 2, 5, 0, 1, 2, 6, 7])
INSERT_EPOCH = np.array([1] * 5 + [2] * 4 + [3] * 5)
# Shuffle (x_1 first, the rest re-shuffled), T = 3, E = 3.
SHUFFLE_DOC = np.array([0, 1, 2, 0, 2, 1, 0, 1, 2])


def test_common_training_offsets_by_order():
    # insert: the block returns after the epoch lengths 5 and 4, whatever documents were inserted
    np.testing.assert_array_equal(A.common_training_offsets(INSERT_DOC, [0, 1, 2], 13), [1, 6, 10])
    np.testing.assert_array_equal(A.common_training_offsets(INSERT_DOC, [0, 1, 2], 10), [1, 6])
    # cyclic T = 3: 1, 4, 7
    np.testing.assert_array_equal(A.common_training_offsets(np.tile([0, 1, 2], 3), [0, 1, 2], 8), [1, 4, 7])
    # shuffle: doc 1 returns 4 episodes later, doc 2 only 2: no common offsets
    assert A.common_training_offsets(SHUFFLE_DOC, [0, 1, 2], 7) is None


def test_snapshot_epochs_read_the_stored_epochs():
    np.testing.assert_array_equal(
        A.snapshot_epochs(np.array([0, 1, 5, 6, 9, 10, 14]), INSERT_EPOCH), [0, 1, 1, 2, 2, 3, 3]
    )


def test_next_training_pairs_follow_each_document_in_any_order():
    # snapshots after every episode 0..9 of the shuffled order: episode 2 trains doc 1, whose next
    # training is episode 6; episode 3 (doc 2) -> 5; episode 4 (doc 0) -> 7; ...
    pairs = A.next_training_pairs(np.arange(10), SHUFFLE_DOC)
    np.testing.assert_array_equal(pairs, [[1, 4], [2, 6], [3, 5], [4, 7], [5, 9], [6, 8]])
    # every second snapshot (episodes 0, 2, 4, 6, 8): only pairs whose both ends were recorded,
    # episode 2 -> 6 and 6 -> 8 (doc 1); doc 0's 4 -> 7 is not
    np.testing.assert_array_equal(
        A.next_training_pairs(np.array([0, 2, 4, 6, 8]), SHUFFLE_DOC), [[1, 3], [3, 4]]
    )


def test_trajectory_winding_counts_one_revolution_per_stored_epoch():
    # one revolution per epoch of 5, 4 and 5 episodes: the angle advances 2π/5, 2π/4, 2π/5 per step
    steps = np.concatenate([np.full(5, 1 / 5), np.full(4, 1 / 4), np.full(5, 1 / 5)])
    angle = 2 * np.pi * np.concatenate([[0.0], np.cumsum(steps)])
    points = np.stack([np.cos(angle), np.sin(angle), np.full(15, 3.0)], axis=1)
    epoch_of = A.snapshot_epochs(np.arange(15), INSERT_EPOCH)
    h = A.trajectory_winding(A.gram_matrix(points), epoch_of, detrend="none")
    np.testing.assert_array_equal(h["epoch"], [1, 2, 3])
    np.testing.assert_allclose(np.abs(h["revolutions"]), [1, 1, 1], atol=1e-9)
    np.testing.assert_allclose(h["radius"], [1, 1, 1], atol=1e-9)
    assert h["complete"].tolist() == [True, True, True] and h["points"].tolist() == [5, 4, 5]
    # detrended with a window of 4 snapshots, 2 dropped at each end: the initial one and the first of
    # epoch 1, the last two of epoch 3, so epochs 1 and 3 are partial
    d = A.trajectory_winding(A.gram_matrix(points), epoch_of, detrend="window", window=4)
    assert d["complete"].tolist() == [False, True, False] and d["points"].tolist() == [4, 4, 3]


def test_pearson_by_hand():
    assert A.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert A.pearson([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # x = 1, 2, 3; y = 1, 3, 2: cov 0.5 / (var 1 · var 1) -> 0.5
    assert A.pearson([1, 2, 3, np.nan], [1, 3, 2, 7]) == pytest.approx(0.5)
    assert np.isnan(A.pearson([1, 1, 1], [1, 2, 3]))
