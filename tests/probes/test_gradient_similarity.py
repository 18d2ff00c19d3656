"""The gradient_similarity probe on hand-made gradients: a circle, the shuffled order, and the
positional against the distance pattern of Fig. 8a with the matched control."""

import numpy as np
import pytest

from arprobe.probes.gradient_similarity import recency_order
from arprobe.science.geometry import (
    position_and_distance_effects,
)
from arprobe.storage import RunStore
from tests.helpers import (
    distance_cosines,
    grads_with_cosines,
    positional_cosines,
    random_eval_store,
    run_one,
    shuffle_grads,
    shuffle_run,
)
from tests.store_factory import cyclic, make_store


def test_gradient_similarity_of_gradients_on_a_circle(tmp_path):
    # document i's gradient points at angle 2πi/T: cos(i, j) = cos(2π(i − j)/T)
    T = 6
    angle = 2 * np.pi * np.arange(T) / T
    rng = np.random.default_rng(0)
    plane = np.linalg.qr(rng.normal(size=(20, 2)))[0].T  # [2, D] orthonormal
    g = (np.stack([np.cos(angle), np.sin(angle)], axis=1) @ plane)[None]  # [G=1, T, D]
    doc, epoch = cyclic(T, 2)
    run = make_store(
        tmp_path / "g",
        loss_eval=np.ones((13, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        grads={"blocks.1.attn": (np.array([12]), g.astype(np.float32))},
    )
    r = run_one("gradient_similarity", run, tmp_path / "report")["result"]
    assert r["layer"] == "blocks.1.attn" and r["episode"] == 12 and r["epoch"] == 2
    assert np.array(r["similarity"]).shape == (T, T)
    np.testing.assert_allclose(r["by_distance"], [0.5, -0.5, -1.0], atol=1e-6)
    np.testing.assert_allclose(r["by_forward_offset"], [0.5, -0.5, -1.0, -0.5, 0.5], atol=1e-6)
    assert r["most_similar_distance"] == 1
    assert r["last_trained_doc"] == 5
    assert r["mean_offdiagonal"] == pytest.approx(-0.2, abs=1e-6)  # (2·0.5 + 2·(−0.5) − 1) / 5
    assert r["sketch"] is None


def test_gradient_similarity_shuffled_order(tmp_path):
    g = run_one("gradient_similarity", shuffle_run(tmp_path / "shuf"), tmp_path / "report")["result"]
    assert g["by_distance"] is None and g["most_similar_distance"] is None and g["cycle_order"] is None
    assert g["by_distance_note"] == (
        "No distance summaries: in the shuffle order the epochs do not all train the same documents "
        "in the same order, so two documents have no fixed distance in a cycle."
    )
    grads = shuffle_grads()
    cos = grads[0] @ grads[0].T / np.outer(np.linalg.norm(grads[0], axis=1), np.linalg.norm(grads[0], axis=1))
    np.testing.assert_allclose(g["similarity"], cos, atol=1e-6)
    assert g["last_trained_doc"] == 2


def test_gradient_similarity_reads_the_pairwise_checkpoint_and_splits_position_from_distance(tmp_path):
    T, E = 12, 3
    ends = np.array([T, 2 * T, 3 * T])
    positional = np.stack([grads_with_cosines(positional_cosines(T))] * 3).astype(np.float32)
    run = random_eval_store(tmp_path / "run", T, E, grads={"blocks.0.attn": (ends, positional)})
    r = run_one("gradient_similarity", run, tmp_path / "report")["result"]
    assert r["episode"] == 2 * T  # the end of the next-to-last epoch, as pairwise_recovery
    assert r["position_order"] == list(range(T))
    # float32 vectors keep cosines to ~1e-7 of 1; effects are sums of a few dozen of them
    assert r["positional_effect"] == pytest.approx(0.12, abs=1e-5)
    assert r["neighbour_effect"] == pytest.approx(0, abs=1e-5)
    assert r["verdict"].startswith("positional_effect +0.120 (centre above edge: above random places")
    assert "(neighbours above the rest: not distinguishable from random places" in r["verdict"]
    assert r["null"]["control"] is None

    # The control's gradients depend on distance only: its effects are read at the same episode.
    distance = np.stack([grads_with_cosines(distance_cosines(T) + 1e-3 * np.eye(T))] * 3)
    random_eval_store(
        run / "control", T, E, order="shuffle", grads={"blocks.0.attn": (ends, distance.astype(np.float32))}
    )
    r = run_one("gradient_similarity", run, tmp_path / "report2")["result"]
    control = r["null"]["control"]
    # Every row of a distance-only matrix holds the same values: no positional effect in any order.
    assert control["positional_effect"] == pytest.approx(0, abs=1e-5)
    # The control's places are its own last epoch's order (shuffled), read at episode 2T.
    with RunStore(run / "control") as c:
        order = recency_order(c.schedule().doc, 2 * T, T)
    assert sorted(order.tolist()) == list(range(T)) and order.tolist() != list(range(T))
    cos = distance_cosines(T) + 1e-3 * np.eye(T)
    cos /= np.sqrt(np.outer(np.diag(cos), np.diag(cos)))
    expected = position_and_distance_effects(cos[np.ix_(order, order)])["neighbour_effect"]
    assert control["neighbour_effect"] == pytest.approx(expected, abs=1e-5)
    assert "0.000)" in r["verdict"].split(";")[1]  # the control's positional effect, after the null
