"""The weight_residual_similarity probe: Fig. 8c's stripes every T episodes on a helix, and windows at
the stored epoch ends of the insert order."""

import numpy as np
import pytest

from tests.helpers import insert_run, run_one
from tests.store_factory import cyclic, helix, make_store


def test_weight_residual_stripes_repeat_every_T(tmp_path):
    T, E = 8, 4
    doc, epoch = cyclic(T, E)
    w = helix(T, E, drift=20.0).astype(np.float32)
    run = make_store(
        tmp_path / "w",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), w)},
    )
    r = run_one("weight_residual_similarity", run, tmp_path / "report")["result"]
    assert r["residual"] == "window" and r["window_episodes"] == 8
    assert r["stripe_period_episodes"] == T and r["stripe_period_epochs"] == 1.0
    assert r["similarity_at_lag_T"] == pytest.approx(1.0, abs=1e-3)  # the same point of the circle
    assert r["similarity_at_lag_half_T"] == pytest.approx(-1.0, abs=1e-3)  # the opposite point
    assert r["episodes"][0] == T + 1  # from_epoch 2: residuals of epoch 2 on
    assert r["similarity_same_doc"] == pytest.approx(1.0, abs=1e-3)  # cyclic: the next training is T later
    assert r["weights"] == "unembed" and r["weights_are"].startswith("the 'unembed' parameter group only")
    assert r["lag_T_note"] == ""

    initial = run_one("weight_residual_similarity", run, tmp_path / "report2", residual="initial")["result"]
    assert initial["residual"] == "initial" and initial["window_episodes"] is None


def test_weight_residual_insert_order_windows_at_the_stored_boundaries(tmp_path):
    wrs = run_one("weight_residual_similarity", insert_run(tmp_path / "ins"), tmp_path / "report")["result"]
    assert wrs["window_episodes"] == 4 and wrs["cycle_length"] == 4.5
    # from_epoch 2 starts after the stored end of epoch 1 (episode 5), not after T = 8 episodes
    assert wrs["episodes"] == [6, 7, 8, 9, 10, 11, 12]
    assert wrs["weights_are"] == "all weights (weights/all, exact values)"
    assert wrs["lag_T_note"].startswith("Epochs differ in length in this order")
