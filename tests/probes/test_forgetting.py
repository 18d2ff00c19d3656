"""The forgetting probe and arprobe.science.forgetting on hand-made stores and arrays, in cyclic,
shuffled and insert orders."""

import numpy as np
import pytest

from arprobe.science.forgetting import backward_transfer, final_forgetting, max_forgetting, plasticity
from tests.helpers import (
    EVAL,
    SHORT_INSERT_DOC,
    SHORT_INSERT_EPOCH,
    SHORT_INSERT_EVAL,
    SHORT_SHUFFLE_DOC,
    SHORT_SHUFFLE_EPOCH,
    SHORT_SHUFFLE_EVAL,
    probe,
    run_one,
)
from tests.store_factory import cyclic, make_store


def test_forgetting_cyclic_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    record = run_one("forgetting", run, tmp_path / "report")
    r = record["result"]
    # final − best since the first training: doc 0 2 − 0.5, doc 1 1 − 0.5, doc 2 0.5 − 0.5
    assert r["forgetting"] == pytest.approx([1.5, 0.5, 0.0]) and r["forgetting_mean"] == pytest.approx(2 / 3)
    assert r["max_forgetting"] == pytest.approx([2, 2, 2])  # 1 → 3 in every first interval
    # epoch 1 ends at episode 3: doc 0 1 − 2, doc 1 1 − 3; epoch 2: doc 0 0.5 − 2, doc 1 0.5 − 1
    assert r["bwt_per_epoch"] == pytest.approx([-1.5, -1.0]) and r["bwt_mean"] == pytest.approx(-1.25)
    assert r["plasticity"] == pytest.approx([3, 4, 4, 1.5, 1.5, 1.5])
    assert r["plasticity_per_epoch"] == pytest.approx([11 / 3, 1.5])
    assert r["anticipation_ratio"] == pytest.approx([0.5] * 3)  # (3 − 2) / (3 − 1)
    assert r["anticipation_ratio_per_epoch"] == pytest.approx([0.5])
    assert set(record["headline"]) == set(probe("forgetting").headline_keys)
    assert all(isinstance(v, (float, list)) for v in record["headline"].values())  # sweep-aggregable


def test_forgetting_shuffle_and_insert_by_hand(tmp_path):
    run = make_store(
        tmp_path / "s",
        loss_eval=SHORT_SHUFFLE_EVAL,
        schedule_doc=SHORT_SHUFFLE_DOC,
        schedule_epoch=SHORT_SHUFFLE_EPOCH,
    )
    r = run_one("forgetting", run, tmp_path / "rs")["result"]
    assert r["forgetting"] == pytest.approx([0.5, 0.0, 1.5])
    assert r["max_forgetting"] == pytest.approx([2.0, 2.0, 1.5])
    # epoch 2: doc 2 (episode 4) 0.5 − 2, doc 0 (episode 5) 0.5 − 1; doc 1 ends the epoch
    assert r["bwt_per_epoch"] == pytest.approx([-1.5, -1.0])
    # doc 2 is trained twice in a row: no forgetting, so no ratio; docs 0 and 1: (3 − 2) / (3 − 1)
    assert r["anticipation_ratio"][:2] == pytest.approx([0.5, 0.5]) and r["anticipation_ratio"][2] is None
    assert r["anticipation_ratio_median"] == pytest.approx(0.5)

    run = make_store(
        tmp_path / "i",
        loss_eval=SHORT_INSERT_EVAL,
        schedule_doc=SHORT_INSERT_DOC,
        schedule_epoch=SHORT_INSERT_EPOCH,
    )
    r = run_one("forgetting", run, tmp_path / "ri")["result"]
    # the stored epochs: epoch 2 ends at episode 7, not 6 (= 2 T / ... of a cyclic reading)
    assert r["bwt_per_epoch"] == pytest.approx([-2.0, -5 / 3])
    assert r["forgetting"] == pytest.approx([2.5, 1.5, 2.0, 1.0, 0.0])
    assert r["forgetting_mean"] == pytest.approx(1.4)
    # doc 0 rises 1, 2, 3 to its turn (nothing undone); doc 1 peaks at 3 and is 2 at its turn
    assert (
        r["anticipation_ratio"][:2] == pytest.approx([0.0, 0.5]) and r["anticipation_ratio"][2:] == [None] * 3
    )
    assert r["anticipation_ratio_median"] == pytest.approx(0.25)
    assert r["plasticity_per_epoch"] == pytest.approx([3.0, (2.5 + 1.5 + 3 + 3) / 4])


def test_forgetting_functions_by_hand():
    doc = np.array([0, 1])
    loss = np.array([[2.0, 2.0], [1.0, 3.0], [1.5, 0.5]])
    assert final_forgetting(loss, doc) == pytest.approx([0.5, 0.0])
    assert max_forgetting(loss, doc) == pytest.approx([0.5, 0.0])
    assert plasticity(loss, doc) == pytest.approx([1.0, 2.5])
    assert backward_transfer(loss, doc, np.array([1, 1])) == pytest.approx([-0.5])
    assert np.isnan(final_forgetting(loss, np.array([0, 0]))[1])  # never trained
