"""The loss_curves probe on hand-made stores: per-document curves and the shift-averaged curve in the
cyclic, insert, shuffled and partially shuffled orders."""

import pytest

from tests.helpers import EVAL, insert_run, partial_shuffle_run, run_one, shuffle_run
from tests.store_factory import cyclic, make_store


def test_loss_curves_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    lc = run_one("loss_curves", run, tmp_path / "report")["result"]
    assert lc["doc_trained_at_episodes"] == [1, 4]
    assert lc["doc_loss_before_training"] == [4.0, 2.0]  # rows 0 and 3: the red markers of Fig. 1a
    assert lc["doc_peak_position"] == [1] and lc["doc_recovered"] == [0.5]
    # shift-averaged: rows k_t − 1 .. of each column; offset 0 averages 4, 5, 5
    assert lc["shift_avg_mean"][0] == pytest.approx(14 / 3)
    assert lc["shift_avg_offset_epochs"][:2] == pytest.approx([0, 1 / 3])
    assert lc["shift_avg_recovered"] == [0.5]
    assert lc["epoch_boundaries_episodes"] == [3] and lc["shift_avg_training_offsets"] == [1, 4]


def test_loss_curves_insert_order_at_the_stored_boundaries(tmp_path):
    lc = run_one("loss_curves", insert_run(tmp_path / "ins"), tmp_path / "report")["result"]
    assert lc["epoch_boundaries_episodes"] == [5, 9] and lc["cycle_length"] == 4.5
    # Over the repeating block (documents 0-2, first trained in episodes 1-3) the curve has
    # 15 − 2 = 13 offsets, 2.7 cycles; over all documents it would stop at 2 (doc 7 starts at row 13).
    assert lc["shift_avg_docs"] == [0, 1, 2]
    assert lc["shift_avg_mean"] == [6, 1, 3, 4, 3.5, 3, 1, 3, 4, 3.5, 1, 3, 4]
    assert lc["shift_avg_offset_epochs"][-1] == pytest.approx(12 / 4.5)
    assert lc["shift_avg_training_offsets"] == [1, 6, 10]  # the block returns after 5, then 4 episodes
    assert lc["shift_avg_recovered"] == pytest.approx([1 / 3, 1 / 6])  # (4 − 3)/(4 − 1), (4 − 3.5)/(4 − 1)
    assert lc["shift_avg_peak_position"] == [2, 2]


def test_loss_curves_shuffled_order(tmp_path):
    lc = run_one("loss_curves", shuffle_run(tmp_path / "shuf"), tmp_path / "report")["result"]
    # doc 1 returns 4 episodes after its first training, doc 2 after 2: no common intervals
    assert lc["shift_avg_training_offsets"] is None and lc["shift_avg_recovered"] is None
    assert lc["shift_avg_note"].startswith("The documents return at different offsets in this order")
    # offsets 0..7 (10 rows − doc 2's start at row 2): (5+5+5)/3, (1+1+1)/3, (2+2+2)/3, (3+4+1)/3, ...
    assert lc["shift_avg_mean"][:5] == pytest.approx([5, 1, 2, 8 / 3, 6 / 3])
    assert lc["doc_trained_at_episodes"] == [1, 4, 7] and lc["doc_recovered"] == [0.0, 0.0]


def test_loss_curves_partial_shuffle(tmp_path):
    lc = run_one("loss_curves", partial_shuffle_run(tmp_path / "part"), tmp_path / "report")["result"]
    # all four documents repeat; 9 rows − doc 3's start at row 3 = 6 offsets
    assert lc["shift_avg_docs"] == [0, 1, 2, 3]
    assert lc["shift_avg_mean"] == pytest.approx([5, 1, 2, 3, 13 / 4, 7 / 4])
    assert lc["shift_avg_recovered"] is None  # docs 1 and 2 return after 5 and 3 episodes
    assert lc["epoch_boundaries_episodes"] == [4]
