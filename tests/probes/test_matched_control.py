"""Every eval-matrix probe reads the matched shuffled control from ``<run>/control/run.h5`` and names
its headline beside the control's. One parametrised test, one case per probe."""

import numpy as np
import pytest

from tests.helpers import run_one
from tests.store_factory import cyclic, make_store

# T = 3, E = 2 (as tests/helpers.py's EVAL): every document 1 after its training, peak 3, 2 just
# before the next, RS(1) = 0.5, online loss over epoch 2 = 2, its loss falling at every turn. In
# CONTROL_EVAL the loss rises until the turn (1, 2.5, 3): RS(1) = (3 − 3) / (3 − 1) = 0, online loss 3.
RUN_EVAL = np.array([[4.0, 4, 4], [1, 5, 5], [3, 1, 5], [2, 3, 1], [0.5, 2, 3], [1, 0.5, 2], [2, 1, 0.5]])


CONTROL_EVAL = np.array(
    [[4.0, 4, 4], [1, 5, 5], [2.5, 1, 5], [3, 2.5, 1], [0.5, 3, 2.5], [1, 0.5, 3], [2, 1, 0.5]]
)


@pytest.fixture
def run_with_control(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "run", loss_eval=RUN_EVAL, schedule_doc=doc, schedule_epoch=epoch)
    make_store(
        run / "control",
        loss_eval=CONTROL_EVAL,
        schedule_doc=doc,
        schedule_epoch=epoch,
        config={"schedule": {"order": "shuffle"}},
    )
    return run


def check_recovery_score(record):
    assert record["result"]["control_recovery_score"] == [0.0]
    assert record["result"]["verdict"] == "RS(1) 0.500 vs 0.000 in the matched shuffled control (+0.500)."
    assert record["headline"]["control_recovery_score"] == [0.0]


def check_online_loss(record):
    group = record["result"]["groups"][0]
    assert group["mean_after_first_epoch"] == 2.0 and group["control_mean_after_first_epoch"] == 3.0
    assert group["null"]["verdict"] == "online loss 2.000 vs 3.000 in the matched shuffled control (-1.000)."
    assert record["headline"]["cyclic: matched shuffled control"] == 3.0


def check_loss_curves(record):
    curves = record["result"]
    assert curves["doc_recovered"] == [0.5] and curves["null"]["control"] == [0.0]


def check_forgetting(record):
    forgetting = record["result"]
    assert forgetting["null"]["control_anticipation_ratio_median"] == 0.0
    assert forgetting["null"]["verdict"].endswith("in the matched shuffled control (+0.50).")


def check_recovery_map(record):
    recovery_map = record["result"]
    assert recovery_map["anticipating_fraction"] == 1.0
    assert recovery_map["null"]["control_anticipating_fraction"] == 0.0


CHECKS = {
    "recovery_score": check_recovery_score,
    "online_loss": check_online_loss,
    "loss_curves": check_loss_curves,
    "forgetting": check_forgetting,
    "recovery_map": check_recovery_map,
}


@pytest.mark.parametrize("name", list(CHECKS))
def test_eval_probe_reads_the_matched_control(run_with_control, tmp_path, name):
    CHECKS[name](run_one(name, run_with_control, tmp_path / "report"))
