"""The activation_drift probe on rotating activations and weights moved by known steps."""

import numpy as np
import pytest

from tests.helpers import run_one
from tests.store_factory import cyclic, make_store


def test_activation_drift_by_hand(tmp_path):
    # document 0's activations rotate by θ_k: cos(a_i, a_j) = cos(θ_i − θ_j) and
    # ‖a_k − a_{k−1}‖ = 2 sin(|Δθ| / 2); weights move 1, 2, 3, ... along one axis
    T, E, C, d = 2, 2, 3, 2
    doc, epoch = cyclic(T, E)
    theta = np.array([0.0, 0.4, 0.5, 0.9, 1.0])  # big steps when document 0 is trained (episodes 1, 3)
    u, v = np.eye(C * d)[0], np.eye(C * d)[1]
    acts = (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * v).reshape(5, 1, C, d).astype(np.float32)
    weights = np.cumsum(np.arange(5.0))[:, None] * np.array([[1.0, 0.0]])  # steps 1, 2, 3, 4
    run = make_store(
        tmp_path / "a",
        loss_eval=np.ones((5, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        context_length=C,
        activations={"ln_final.hook_normalized": (np.arange(5), acts)},
        weights={"unembed": (np.arange(5), weights.astype(np.float32))},
    )
    r = run_one("activation_drift", run, tmp_path / "report")["result"]
    assert r["hook"] == "ln_final.hook_normalized" and r["doc"] == 0 and r["tokens_compared"] == C
    np.testing.assert_allclose(r["similarity"], np.cos(theta[:, None] - theta[None, :]), atol=1e-6)
    np.testing.assert_allclose(r["activation_change"], 2 * np.sin(np.abs(np.diff(theta)) / 2), atol=1e-6)
    assert r["doc_training_change_ratio"] == pytest.approx(np.sin(0.2) / np.sin(0.05), rel=1e-4)
    assert r["within_epoch_similarity"] == pytest.approx([np.cos(0.1)] * 2, abs=1e-6)
    assert r["weights"] == "unembed" and r["weight_change"] == pytest.approx([1, 2, 3, 4])
    assert r["weight_change_per_epoch"] == pytest.approx([1.5, 3.5])
    assert r["weights_are"] == (
        "the 'unembed' parameter group only (exact values); record weights/all to measure every weight"
    )

    # With weights/all recorded too, Fig. 22b's change is over all weights (steps 3, 4, 0, 5 here)
    every = np.array([[0.0, 0], [3, 0], [3, 4], [3, 4], [0, 0]])
    run = make_store(
        tmp_path / "a2",
        loss_eval=np.ones((5, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        context_length=C,
        activations={"ln_final.hook_normalized": (np.arange(5), acts)},
        weights={"unembed": (np.arange(5), weights.astype(np.float32)), "all": (np.arange(5), every)},
    )
    r = run_one("activation_drift", run, tmp_path / "report2")["result"]
    assert r["weights"] == "all" and r["weight_change"] == pytest.approx([3, 4, 0, 5])
    assert r["weight_change_per_epoch"] == pytest.approx([3.5, 2.5])
    assert r["weights_are"] == "all weights (weights/all, exact values)"
