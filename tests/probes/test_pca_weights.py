"""The pca_weights probe: one revolution per epoch and the shrinking radius of a helix, the stored
epochs of the insert order, and the helix statistic against random walks and the matched control."""

import numpy as np
import pytest

from arprobe.science.geometry import (
    residual_lag_cosine,
)
from tests.helpers import insert_run, random_eval_store, run_one
from tests.store_factory import cyclic, helix, make_store


def test_pca_weights_finds_one_revolution_per_epoch_and_the_shrinking_radius(tmp_path):
    T, E = 10, 4
    doc, epoch = cyclic(T, E)
    w = helix(T, E, drift=30.0, radii=[4.0, 3.0, 2.0, 1.0]).astype(np.float32)
    run = make_store(
        tmp_path / "h",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), w)},
    )
    r = run_one("pca_weights", run, tmp_path / "report")["result"]
    assert r["detrend"] == "window"
    assert r["explained_variance"][0] > 0.9  # the drift dominates the raw PCs, as in small models
    assert r["pc_period_episodes"][1:] == [pytest.approx(10.0, abs=0.5)] * 2  # PC2, PC3 rotate once per epoch
    assert r["winding_epochs"] == [2, 3]  # the centred window leaves half of epochs 1 and 4 out
    np.testing.assert_allclose(np.abs(r["winding_revolutions"]), 1.0, atol=0.03)
    assert r["radius_per_epoch"][1] < r["radius_per_epoch"][0]
    assert r["radius_last_over_first"] < 0.8

    # Without the drift the raw PC1–PC2 plane is the circle: every epoch is complete.
    flat = helix(T, E, drift=0.0, radii=[4.0, 3.0, 2.0, 1.0]).astype(np.float32)
    run2 = make_store(
        tmp_path / "h2",
        loss_eval=np.ones((T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(T * E + 1), flat)},
    )
    r2 = run_one("pca_weights", run2, tmp_path / "report", detrend="none")["result"]
    assert r2["winding_epochs"] == [1, 2, 3, 4]
    np.testing.assert_allclose(np.abs(r2["winding_revolutions"]), 1.0, atol=0.01)
    np.testing.assert_allclose(r2["radius_per_epoch"], [4, 3, 2, 1], rtol=0.02)
    assert r2["radius_last_over_first"] == pytest.approx(0.25, rel=0.02)


def test_pca_weights_insert_order_one_revolution_per_stored_epoch(tmp_path):
    run = insert_run(tmp_path / "ins")
    # detrend=none: one revolution in each stored epoch of 5, 4, 5 snapshots, radius 1
    pca = run_one("pca_weights", run, tmp_path / "report", detrend="none")["result"]
    assert pca["weights"] == "all"
    assert pca["snapshot_epoch"] == [0] + [1] * 5 + [2] * 4 + [3] * 5
    np.testing.assert_allclose(np.abs(pca["winding_revolutions"]), [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(pca["radius_per_epoch"], [1, 1, 1], atol=1e-6)
    # detrend=window: the window is one cycle, round(4.5) = 4 episodes, not T = 8
    assert run_one("pca_weights", run, tmp_path / "r2")["result"]["window_episodes"] == 4


def test_pca_weights_helix_against_random_walk_and_control(tmp_path):
    T, E = 10, 4
    episodes = np.arange(T * E + 1)
    w = helix(T, E, dim=40, drift=30.0).astype(np.float32)
    run = random_eval_store(tmp_path / "run", T, E, weights={"unembed": (episodes, w)})
    r = run_one("pca_weights", run, tmp_path / "report", null_walks=100)["result"]
    assert r["helix_cosine"] == pytest.approx(1.0, abs=1e-4)  # float32 snapshots of a drift of 30
    null = r["null"]
    assert null["random_walk"]["dim"] == 40 and null["random_walk"]["walks"] == 100
    assert null["lag_snapshots"] == T
    assert r["helix_verdict"].startswith("helix-like (1.00 > ")
    assert null["control"] is None

    walk = np.cumsum(np.random.default_rng(0).standard_normal((T * E + 1, 40)), axis=0).astype(np.float32)
    random_eval_store(run / "control", T, E, order="shuffle", weights={"unembed": (episodes, walk)})
    r = run_one("pca_weights", run, tmp_path / "report2", null_walks=100)["result"]
    walk64 = walk.astype(np.float64)
    assert r["null"]["control"] == pytest.approx(residual_lag_cosine(walk64, T, T), abs=1e-5)
    assert r["helix_verdict"].endswith(f"; matched shuffled control {r['null']['control']:.2f}")

    alone = random_eval_store(tmp_path / "walk", T, E, weights={"unembed": (episodes, walk)})
    r = run_one("pca_weights", alone, tmp_path / "report3", null_walks=100)["result"]
    assert r["helix_verdict"].startswith("not distinguishable from a random walk")
