"""The paper's metrics on tiny matrices whose answers were worked out by hand."""

import numpy as np
import pytest

from arprobe.science.recovery import (
    online_loss,
    recovery_components,
    recovery_score_notes,
    recovery_scores,
    shift_averaged_curve,
)

# T = 3 documents, E = 2 epochs, cyclic. Row k is the loss after episode k.
EVAL = np.array(
    [
        [4.0, 4.0, 4.0],  # before training
        [1.0, 5.0, 5.0],  # ep 1 trained doc 0
        [3.0, 1.0, 5.0],  # ep 2 doc 1
        [2.0, 3.0, 1.0],  # ep 3 doc 2
        [0.5, 2.0, 3.0],  # ep 4 doc 0
        [1.0, 0.5, 2.0],  # ep 5 doc 1
        [2.0, 1.0, 0.5],  # ep 6 doc 2
    ]
)
CYCLIC = np.array([0, 1, 2, 0, 1, 2])
SHUFFLED = np.array([0, 1, 2, 0, 2, 1])  # doc 0 first, the rest re-ordered in epoch 2


def test_recovery_score_cyclic_by_hand():
    # Every document: after = 1, then 3 (max), then 2 just before its next training.
    c = recovery_components(EVAL, CYCLIC)
    np.testing.assert_array_equal(c.l_after, [[1, 1, 1]])
    np.testing.assert_array_equal(c.l_before, [[2, 2, 2]])
    np.testing.assert_array_equal(c.l_max, [[3, 3, 3]])
    np.testing.assert_allclose(recovery_scores(EVAL, CYCLIC), [(3 - 2) / (3 - 1)])


def test_recovery_score_shuffled_positions_differ_per_epoch():
    # doc 1: trained ep 2 and 6 -> rows 2..5 = 1, 3, 2, 0.5: after 1, max 3, before 0.5
    # doc 2: trained ep 3 and 5 -> rows 3..4 = 1, 3:          after 1, max 3, before 3
    c = recovery_components(EVAL, SHUFFLED)
    np.testing.assert_array_equal(c.l_before, [[2, 0.5, 3]])
    np.testing.assert_array_equal(c.l_max, [[3, 3, 3]])
    before = (2 + 0.5 + 3) / 3
    np.testing.assert_allclose(recovery_scores(EVAL, SHUFFLED), [(3 - before) / (3 - 1)])


def test_recovery_score_is_ratio_of_means_not_mean_of_ratios():
    # doc 0 goes 1 -> 5 -> 3 (own ratio 0.5); docs 1 and 2 go 1 -> 2 -> 2 (ratio 0).
    # Means: l_max 3, l_before 7/3, l_after 1 -> RS = (3 - 7/3) / (3 - 1) = 1/3, not 1/6.
    loss = np.array(
        [[9, 9, 9], [1, 9, 9], [5, 1, 9], [3, 2, 1], [0, 2, 2], [0, 0, 2], [0, 0, 0]], dtype=float
    )
    assert recovery_scores(loss, CYCLIC)[0] == pytest.approx(1 / 3)


def test_recovery_score_skips_documents_seen_once_and_nan_without_forgetting():
    # Insert-style schedule: doc 2 is a one-off; only docs 0 and 1 repeat.
    loss = np.array([[5, 5, 5], [1, 5, 5], [4, 1, 5], [3, 3, 1], [1, 2, 4], [2, 1, 4]], dtype=float)
    schedule = np.array([0, 1, 2, 0, 1])
    c = recovery_components(loss, schedule)
    assert np.isnan(c.l_max[0, 2])
    # doc 0: rows 1..3 = 1, 4, 3 ; doc 1: rows 2..4 = 1, 3, 2
    np.testing.assert_allclose(
        recovery_scores(loss, schedule), [((4 + 3) / 2 - (3 + 2) / 2) / ((4 + 3) / 2 - 1)]
    )
    flat = np.ones((5, 2))
    assert np.isnan(recovery_scores(flat, np.array([0, 1, 0, 1]))[0])


def test_shift_averaged_curve_by_hand():
    curve = shift_averaged_curve(EVAL, CYCLIC)
    # doc t starts at row t (just before its first training) and all are cut to 7 - 2 = 5 rows.
    np.testing.assert_array_equal(curve.offset, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(curve.curves[0], [4, 1, 3, 2, 0.5])
    np.testing.assert_array_equal(curve.curves[2], [5, 1, 3, 2, 0.5])
    np.testing.assert_allclose(curve.mean, [14 / 3, 1, 3, 2, 0.5])
    np.testing.assert_allclose(curve.std[0], np.std([4, 5, 5]))
    assert curve.std[1:].max() == 0


def test_shift_averaged_curve_follows_first_training_when_shuffled():
    # Epoch 1 trains 2, 0, 1: doc 2 starts at row 0, doc 0 at row 1, doc 1 at row 2.
    curve = shift_averaged_curve(EVAL, np.array([2, 0, 1, 1, 0, 2]))
    np.testing.assert_array_equal(curve.curves[0], EVAL[1:6, 0])
    np.testing.assert_array_equal(curve.curves[2], EVAL[0:5, 2])


def test_online_loss_reads_the_eval_matrix_just_before_each_episode():
    # Episode k's online loss is EVAL[k - 1, doc(k)]: cyclic 0, 1, 2, 0, 1, 2.
    epoch = np.array([1, 1, 1, 2, 2, 2])
    summary = online_loss(EVAL, CYCLIC, epoch)
    np.testing.assert_array_equal(summary.per_episode, [4, 5, 5, 2, 2, 2])
    np.testing.assert_allclose(summary.per_epoch, [14 / 3, 2])
    assert summary.mean_after_first_epoch == pytest.approx(2)
    assert np.isnan(online_loss(EVAL[:4], CYCLIC[:3], epoch[:3]).mean_after_first_epoch)


def test_online_loss_follows_a_shuffled_order():
    # Epoch 2 trains 0, 2, 1: EVAL[3, 0] = 2, EVAL[4, 2] = 3, EVAL[5, 1] = 0.5.
    summary = online_loss(EVAL, SHUFFLED, np.array([1, 1, 1, 2, 2, 2]))
    np.testing.assert_array_equal(summary.per_episode[3:], [2, 3, 0.5])


def test_degenerate_recovery_score_is_undefined_with_a_reason():
    # Doc 0 (the only one trained twice): after 3.00, max 3.01, before 2.5: forgetting 0.01 is
    # under 1% of l_after = 3, while the raw ratio (3.01 - 2.5) / 0.01 would read 51.
    falling = np.array([[4, 4, 4], [3.0, 4, 4], [3.01, 3, 4], [2.5, 3, 3], [2, 3, 3]])
    doc = np.array([0, 1, 2, 0])
    assert np.isnan(recovery_scores(falling, doc)).all()
    (note,) = recovery_score_notes(falling, doc)
    assert note.startswith(
        "RS(1) is undefined: the mean forgetting l_max − l_after = 0.01 is under 1% of l_after = 3"
    )
    assert note.endswith("the raw ratio would be 51).")
    assert recovery_score_notes(EVAL, CYCLIC) == [""]
