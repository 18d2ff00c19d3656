"""The recovery_score probe on hand-made stores whose answers are known by hand: the cyclic, insert,
shuffled and partially shuffled orders, too few epochs, and no matched control."""

import pytest

from arprobe.probes.runner import run_probe
from arprobe.storage import RunStore
from tests.helpers import EVAL, insert_run, partial_shuffle_run, probe, run_one, shuffle_run
from tests.store_factory import cyclic, make_store


def test_recovery_score_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    rs = run_one("recovery_score", run, tmp_path / "report")
    assert rs["result"]["recovery_score"] == [0.5]
    assert (rs["result"]["l_max"], rs["result"]["l_before"], rs["result"]["l_after"]) == ([3.0], [2.0], [1.0])
    # no control next to this run: the headline says RS alone is not evidence and how to get one
    assert rs["headline"] == {"recovery_score": [0.5], "verdict": rs["result"]["verdict"]}
    assert rs["result"]["verdict"].startswith("RS(1) 0.500; no matched shuffled control in this run")
    assert rs["figures"] == ["recovery_score.png"]


def test_recovery_score_needs_two_epochs(tmp_path):
    run = make_store(tmp_path / "one", loss_eval=EVAL[:4], schedule_doc=[0, 1, 2], schedule_epoch=[1, 1, 1])
    with RunStore(run) as store:
        outcome = run_probe(probe("recovery_score"), [store], tmp_path / "report")
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "Run 'one' trained no document twice, and the recovery score compares two trainings; "
        "run at least 2 epochs (schedule.epochs)."
    )


def test_recovery_score_without_a_control_names_its_null(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "run", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    alone = run_one("recovery_score", run, tmp_path / "report0")
    assert alone["result"]["control_recovery_score"] is None
    assert alone["result"]["verdict"] == (
        "RS(1) 0.500; no matched shuffled control in this run (arprobe run --control shuffle trains one: "
        "same seed, documents and initialisation)."
    )
    assert alone["result"]["null"]["reads"].startswith("RS is >= 0 by construction")


def test_recovery_score_insert_order(tmp_path):
    rs = run_one("recovery_score", insert_run(tmp_path / "ins"), tmp_path / "report")["result"]
    # the repeating block's curve: (4 − 3)/(4 − 1), (4 − 3.5)/(4 − 1)
    assert rs["recovery_score"] == pytest.approx([1 / 3, 1 / 6]) and rs["undefined"] == []


def test_recovery_score_shuffled_order(tmp_path):
    # RS(1): l_max = (3 + 4 + 2)/3 = 3, l_before = (3 + 3 + 2)/3 = 8/3, l_after = 1 -> (1/3)/2 = 1/6.
    # RS(2): every document's loss only rises between trainings -> 0.
    rs = run_one("recovery_score", shuffle_run(tmp_path / "shuf"), tmp_path / "report")["result"]
    assert rs["recovery_score"] == pytest.approx([1 / 6, 0.0])
    assert (rs["l_max"], rs["l_after"]) == (pytest.approx([3, 3]), pytest.approx([1, 1]))


def test_recovery_score_partial_shuffle(tmp_path):
    # RS(1): l_max (4 + 4 + 3 + 4)/4 = 15/4, l_before (4 + 3 + 3 + 4)/4 = 14/4, l_after 1 -> 1/11
    rs = run_one("recovery_score", partial_shuffle_run(tmp_path / "part"), tmp_path / "report")["result"]
    assert rs["recovery_score"] == pytest.approx([1 / 11])
