"""The recovery_map probe and its onset functions (arprobe.science.recovery_map) on hand-made stores."""

import numpy as np
import pytest

from arprobe.science.recovery_map import change_before_turn, onset_lags
from tests.helpers import (
    EVAL,
    SHORT_INSERT_DOC,
    SHORT_INSERT_EPOCH,
    SHORT_INSERT_EVAL,
    SHORT_SHUFFLE_DOC,
    SHORT_SHUFFLE_EPOCH,
    SHORT_SHUFFLE_EVAL,
    outcome_of,
    run_one,
)
from tests.store_factory import cyclic, make_store


def test_recovery_map_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    record = run_one("recovery_map", run, tmp_path / "report")
    r = record["result"]
    # every document: 1, 3 (peak), 2 before its turn: the loss fell for 1 episode
    assert r["onset_lag"] == [[1, 1, 1]] and r["onset_lag_per_epoch"] == [1.0]
    assert r["anticipating_fraction"] == 1.0 and r["columns"] == [0, 1, 2]
    assert r["change_before_turn"][0][:2] == pytest.approx([-1.0, 2.0])  # 3 → 2, then 1 → 3
    assert sorted(record["figures"]) == ["onset.png", "recovery_map.png"]


def test_recovery_map_shuffle_and_insert_by_hand(tmp_path):
    run = make_store(
        tmp_path / "s",
        loss_eval=SHORT_SHUFFLE_EVAL,
        schedule_doc=SHORT_SHUFFLE_DOC,
        schedule_epoch=SHORT_SHUFFLE_EPOCH,
    )
    r = run_one("recovery_map", run, tmp_path / "rs")["result"]
    # docs 0 and 1: 1, 2, 3, 2 until the turn (lag 1); doc 2 is trained twice in a row: nothing forgotten
    assert r["onset_lag"] == [[1, 1, None]]
    assert r["onset_lag_per_epoch"] == [1.0] and r["anticipating_fraction"] == 1.0
    # 1, 2 and 3 episodes before the turn: −1, +1, +1 for docs 0 and 1 (doc 2 has no episode between)
    assert r["change_before_turn"][0][:3] == pytest.approx([-1.0, 1.0, 1.0])
    assert all(v is None for v in r["change_before_turn"][0][3:])

    run = make_store(
        tmp_path / "i",
        loss_eval=SHORT_INSERT_EVAL,
        schedule_doc=SHORT_INSERT_DOC,
        schedule_epoch=SHORT_INSERT_EPOCH,
    )
    r = run_one("recovery_map", run, tmp_path / "ri", order="index")["result"]
    assert r["onset_lag"] == [[0, 1, None, None, None]]  # one-off documents have no interval
    assert r["columns"] == [0, 1, 2, 3, 4]
    outcome, record = outcome_of("recovery_map", run, tmp_path / "bad", order="diagonal")
    assert outcome.status == "failed"
    assert outcome.reason == "Option recovery_map.order must be 'first' or 'index', got 'diagonal'."


def test_onset_functions_by_hand():
    loss = np.array([[5.0], [1.0], [2.0], [4.0], [3.0], [2.5], [0.0]])  # trained at episodes 1 and 6
    assert onset_lags(loss, np.array([0, 9, 9, 9, 9, 0])).tolist() == [[2.0]]  # peak 4 at row 3, turn at 6
    falling = np.array([[5.0], [3.0], [2.0], [1.0]])  # the loss only falls after training: no onset
    assert np.isnan(onset_lags(falling, np.array([0, 9, 0]))).all()
    profile = change_before_turn(loss, np.array([0, 9, 9, 9, 9, 0]), 5)
    assert profile[0, :4] == pytest.approx([-0.5, -1.0, 2.0, 1.0]) and np.isnan(profile[0, 4])
