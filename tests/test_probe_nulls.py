"""Every probe headline beside its null (issue 21): the helix statistic against random walks, the
positional and the distance pattern of Fig. 8a apart, and the matched shuffled control's headline
read from ``<run>/control/run.h5``."""

import numpy as np
import pytest

from arprobe.probes.base import control_store
from arprobe.probes.gradient_similarity import recency_order
from arprobe.science.geometry import (
    cyclic_distance,
    gram_matrix,
    label_permutation_null,
    position_and_distance_effects,
    position_fit,
    random_walk_null,
    random_walk_rows,
    residual_lag_cosine,
    residual_lag_cosine_from_gram,
    step_permutation_null,
)
from arprobe.storage import RunStore
from tests.helpers import run_one
from tests.store_factory import cyclic, helix, make_store

# --- the helix statistic ------------------------------------------------------------------------


def test_an_ideal_helix_comes_back_one_cycle_later():
    # Constant radius and a linear drift: the centred one-cycle mean removes the drift exactly and
    # the residual is periodic with period T, so every pair one cycle apart has cosine 1.
    T, E = 10, 4
    w = helix(T, E, dim=12, drift=30.0)
    assert residual_lag_cosine(w, T, T) == pytest.approx(1.0, abs=1e-12)
    gram = gram_matrix(w, center=w.mean(axis=0))
    assert residual_lag_cosine_from_gram(gram, T, T) == pytest.approx(1.0, abs=1e-9)
    # Half a cycle later the helix is on the opposite side of its turn.
    assert residual_lag_cosine(w, T // 2, T) == pytest.approx(-1.0, abs=1e-12)


def test_a_gaussian_random_walk_reads_zero():
    # With a window of T + 1 snapshots the residuals at k and k + T are made of disjoint steps:
    # independent isotropic Gaussians in D dimensions, whose cosine has mean 0 and variance 1/D.
    # The statistic averages such cosines, so its standard deviation is at most 1/√D: 5/√D bounds it.
    T, n, dim = 10, 41, 2000
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.standard_normal((n, dim)), axis=0)
    assert abs(residual_lag_cosine(walk, T, T)) < 5 / np.sqrt(dim)
    null = random_walk_null(n, dim, T, T, walks=200, seed=0)
    assert null["walks"] == 200 and null["seed"] == 0
    assert abs(null["mean"]) < 5 / np.sqrt(dim * 200)  # a mean over 200 independent walks
    assert 0 < null["q975"] < 5 / np.sqrt(dim)
    assert random_walk_null(n, dim, T, T, walks=20, seed=0) == random_walk_null(
        n, dim, T, T, walks=20, seed=0
    )


def test_the_random_walk_null_is_the_same_walk_at_any_dimension():
    # Bartlett's factor (dim ≥ n − 1) and explicit steps (dim < n − 1) both give step Gram
    # matrices with E[Z Zᵀ] = dim · I. Over 4000 draws of 4 steps in 50 dimensions each entry's
    # mean has standard deviation ≤ √(2 · 50) / √4000 = 0.16, so 1.0 (6 sd) bounds it.
    rng = np.random.default_rng(0)
    for n, dim in ((5, 50), (5, 3)):
        steps = [np.diff(random_walk_rows(n, dim, rng), axis=0) for _ in range(4000)]
        mean_gram = np.mean([s @ s.T for s in steps], axis=0)
        np.testing.assert_allclose(mean_gram, dim * np.eye(n - 1), atol=1.0)
        assert np.all(random_walk_rows(n, dim, rng)[0] == 0)  # x_0 = 0


def test_a_helix_with_noise_reads_in_between():
    # Helix residual h with |h|² = H = (1 + 1/w)² (radius 1; the window of w = T + 1 snapshots holds
    # the opposite point twice), plus independent N(0, σ²) noise in D dimensions on every snapshot:
    # the noise residual has E|ε|² = Dσ²(1 − 1/w), and two residuals one cycle apart share one
    # snapshot, E[ε·ε'] = Dσ²/w². With Dσ² = H the cosine is (1 + 1/w²) / (2 − 1/w) = 0.528 at T = 10.
    # Each term fluctuates by about H/√D per pair: 5/√D bounds the mean.
    T, E, dim = 10, 4, 4000
    w = T + 1
    H = (1 + 1 / w) ** 2
    clean = np.zeros((T * E + 1, dim))
    clean[:, :12] = helix(T, E, dim=12, drift=30.0)
    noisy = clean + np.random.default_rng(1).normal(scale=np.sqrt(H / dim), size=clean.shape)
    expected = (1 + 1 / w**2) / (2 - 1 / w)
    assert residual_lag_cosine(noisy, T, T) == pytest.approx(expected, abs=5 / np.sqrt(dim))
    # the run's own steps in a random order lose the helix
    shuffled = step_permutation_null(clean[:, :12], T, T, walks=200, seed=0)
    assert shuffled["q975"] < 0.9 and abs(shuffled["mean"]) < 0.3


# --- position against distance (Fig. 8a) --------------------------------------------------------


def _positional(T: int, spread: float = 0.04) -> np.ndarray:
    """A cosine matrix that is purely positional: 0.3 + u_i + u_j off the diagonal, 1 on it, with u
    highest in the middle of the sequence (Σ u = 0)."""
    u = -spread * np.abs(np.arange(T) - (T - 1) / 2)
    u -= u.mean()
    m = 0.3 + u[:, None] + u[None, :]
    np.fill_diagonal(m, 1.0)
    return m


def _by_distance(T: int) -> np.ndarray:
    """A cosine matrix that depends only on cyclic distance: cos(2π d / T)."""
    i, j = np.indices((T, T))
    return np.cos(2 * np.pi * cyclic_distance(i, j, T) / T)


def test_position_fit_is_the_least_squares_fit():
    T = 7
    m = np.random.default_rng(0).normal(size=(T, T))
    m = (m + m.T) / 2
    mu, a, residual = position_fit(m)
    i, j = np.nonzero(~np.eye(T, dtype=bool))
    design = np.zeros((len(i), T + 1))
    design[:, 0] = 1
    design[np.arange(len(i)), 1 + i] += 1
    design[np.arange(len(i)), 1 + j] += 1
    coef = np.linalg.lstsq(design, m[i, j], rcond=None)[0]
    fitted = design @ coef  # the least-squares fit is unique even though μ and a are not separately
    np.testing.assert_allclose(mu + a[i] + a[j], fitted, atol=1e-12)
    assert a.sum() == pytest.approx(0, abs=1e-12)
    assert np.all(np.isnan(np.diag(residual)))


def test_a_purely_positional_matrix_has_no_distance_pattern():
    T = 12
    effects = position_and_distance_effects(_positional(T))
    # middle third (positions 4..7) against the outer thirds: mean |i − 5.5| is 1 against 4
    assert effects["positional_effect"] == pytest.approx(0.04 * (4 - 1), abs=1e-12)
    assert effects["neighbour_effect"] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(effects["distance_profile"], 0, atol=1e-12)
    assert effects["centre_pairs_mean"] > effects["edge_pairs_mean"]
    null = label_permutation_null(_positional(T), permutations=300, seed=0)
    assert effects["positional_effect"] > null["positional_effect"]["q975"]


def test_a_purely_distance_matrix_has_no_positional_pattern():
    T = 12
    effects = position_and_distance_effects(_by_distance(T))
    # every row holds the same values, so every document's level is the same
    assert effects["positional_effect"] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(effects["position_profile"], 0, atol=1e-12)
    # residual = cos(2πd/T) − mean off-diagonal; its mean at d = 1 minus its mean at d > 1 (10 pairs
    # per row: d = 2..5 twice, d = 6 once, whose cosines sum to −1 − 2 cos(π/6) ... by hand below)
    cos_d = np.cos(2 * np.pi * np.arange(1, 7) / T)
    far = (2 * cos_d[1:5].sum() + cos_d[5]) / 9
    assert effects["neighbour_effect"] == pytest.approx(cos_d[0] - far, abs=1e-12)
    null = label_permutation_null(_by_distance(T), permutations=300, seed=0)
    assert effects["neighbour_effect"] > null["neighbour_effect"]["q975"]


# --- the matched shuffled control ---------------------------------------------------------------


def _grads_with_cosines(cos: np.ndarray, dim: int = 16) -> np.ndarray:
    """Unit vectors [T, dim] whose cosine matrix is ``cos`` (positive definite)."""
    factor = np.linalg.cholesky(cos)
    out = np.zeros((len(cos), dim))
    out[:, : len(cos)] = factor
    return out


def _store(path, T, E, *, order="cyclic", weights=None, grads=None, seed=0):
    doc, epoch = cyclic(T, E)
    if order == "shuffle":
        rng = np.random.default_rng(seed + 1)
        doc = np.concatenate([rng.permutation(T) for _ in range(E)])
    rng = np.random.default_rng(seed)
    return make_store(
        path,
        loss_eval=rng.uniform(1, 5, size=(T * E + 1, T)),
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights=weights,
        grads=grads,
        config={"schedule": {"order": order}},
    )


def test_control_store_opens_the_control_next_to_the_run(tmp_path):
    run = _store(tmp_path / "run", 4, 2)
    with RunStore(run) as store:
        assert control_store(store) is None  # no control folder
    _store(run / "control", 4, 2, order="shuffle")
    with RunStore(run) as store:
        control = control_store(store)
        with control:
            assert control.path == run / "control" / "run.h5"
            assert control.config["schedule"]["order"] == "shuffle"
            assert control.h5.mode == "r"


def test_pca_weights_helix_against_random_walk_and_control(tmp_path):
    T, E = 10, 4
    episodes = np.arange(T * E + 1)
    w = helix(T, E, dim=40, drift=30.0).astype(np.float32)
    run = _store(tmp_path / "run", T, E, weights={"unembed": (episodes, w)})
    r = run_one("pca_weights", run, tmp_path / "report", null_walks=100)["result"]
    assert r["helix_cosine"] == pytest.approx(1.0, abs=1e-4)  # float32 snapshots of a drift of 30
    null = r["null"]
    assert null["random_walk"]["dim"] == 40 and null["random_walk"]["walks"] == 100
    assert null["lag_snapshots"] == T
    assert r["helix_verdict"].startswith("helix-like (1.00 > ")
    assert null["control"] is None

    walk = np.cumsum(np.random.default_rng(0).standard_normal((T * E + 1, 40)), axis=0).astype(np.float32)
    _store(run / "control", T, E, order="shuffle", weights={"unembed": (episodes, walk)})
    r = run_one("pca_weights", run, tmp_path / "report2", null_walks=100)["result"]
    walk64 = walk.astype(np.float64)
    assert r["null"]["control"] == pytest.approx(residual_lag_cosine(walk64, T, T), abs=1e-5)
    assert r["helix_verdict"].endswith(f"; matched shuffled control {r['null']['control']:.2f}")

    alone = _store(tmp_path / "walk", T, E, weights={"unembed": (episodes, walk)})
    r = run_one("pca_weights", alone, tmp_path / "report3", null_walks=100)["result"]
    assert r["helix_verdict"].startswith("not distinguishable from a random walk")


def test_gradient_similarity_reads_the_pairwise_checkpoint_and_splits_position_from_distance(tmp_path):
    T, E = 12, 3
    ends = np.array([T, 2 * T, 3 * T])
    positional = np.stack([_grads_with_cosines(_positional(T))] * 3).astype(np.float32)
    run = _store(tmp_path / "run", T, E, grads={"blocks.0.attn": (ends, positional)})
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
    distance = np.stack([_grads_with_cosines(_by_distance(T) + 1e-3 * np.eye(T))] * 3)
    _store(
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
    cos = _by_distance(T) + 1e-3 * np.eye(T)
    cos /= np.sqrt(np.outer(np.diag(cos), np.diag(cos)))
    expected = position_and_distance_effects(cos[np.ix_(order, order)])["neighbour_effect"]
    assert control["neighbour_effect"] == pytest.approx(expected, abs=1e-5)
    assert "0.000)" in r["verdict"].split(";")[1]  # the control's positional effect, after the null


def test_toy_model_helix_separates_orders_and_names_its_nulls(tmp_path):
    T, E = 10, 4
    w = helix(T, E, dim=40, drift=30.0).astype(np.float32)
    run = _store(tmp_path / "run", T, E, weights={"all": (np.arange(T * E + 1), w)})
    r = run_one("toy_model", run, tmp_path / "report")["result"]
    assert r["run_helix_cosine"] == pytest.approx(1.0, abs=1e-4)  # an ideal helix, float32
    null = r["null"]
    assert null["control"] is None and set(null["random_walk"]) == {"run", "identity", "target"}
    assert set(null["step_permutation"]) == {"run", "identity", "target"}
    for kind in ("identity", "target"):
        shuffled = null["toy_shuffled"][kind]
        # The toy's w comes back one cycle later on the cyclic schedule, not with each epoch shuffled:
        # above the random walks' 97.5th percentile on one, below it on the other.
        assert r["toy_helix_cosine"][kind] > null["random_walk"][kind]["q975"] > shuffled["helix_cosine"]
        assert len(shuffled["recovery_score"]) == E - 1
    assert r["helix_verdict"].startswith("run 1.00 (helix-like: random walks ≤ ")
    assert r["helix_verdict"].count("with each epoch shuffled") == 2


# T = 3, E = 2 (as tests/test_probes.py's EVAL): every document 1 after its training, peak 3, 2 just
# before the next, RS(1) = 0.5, online loss over epoch 2 = 2, its loss falling at every turn. In
# CONTROL_EVAL the loss rises until the turn (1, 2.5, 3): RS(1) = (3 − 3) / (3 − 1) = 0, online loss 3.
RUN_EVAL = np.array([[4.0, 4, 4], [1, 5, 5], [3, 1, 5], [2, 3, 1], [0.5, 2, 3], [1, 0.5, 2], [2, 1, 0.5]])
CONTROL_EVAL = np.array(
    [[4.0, 4, 4], [1, 5, 5], [2.5, 1, 5], [3, 2.5, 1], [0.5, 3, 2.5], [1, 0.5, 3], [2, 1, 0.5]]
)


def test_eval_probes_name_their_null_and_read_the_control(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "run", loss_eval=RUN_EVAL, schedule_doc=doc, schedule_epoch=epoch)
    alone = run_one("recovery_score", run, tmp_path / "report0")
    assert alone["result"]["control_recovery_score"] is None
    assert alone["result"]["verdict"] == (
        "RS(1) 0.500; no matched shuffled control in this run (arprobe run --control shuffle trains one: "
        "same seed, documents and initialisation)."
    )
    assert alone["result"]["null"]["reads"].startswith("RS is >= 0 by construction")

    make_store(
        run / "control",
        loss_eval=CONTROL_EVAL,
        schedule_doc=doc,
        schedule_epoch=epoch,
        config={"schedule": {"order": "shuffle"}},
    )
    rs = run_one("recovery_score", run, tmp_path / "report")
    assert rs["result"]["control_recovery_score"] == [0.0]
    assert rs["result"]["verdict"] == "RS(1) 0.500 vs 0.000 in the matched shuffled control (+0.500)."
    assert rs["headline"]["control_recovery_score"] == [0.0]

    online = run_one("online_loss", run, tmp_path / "report")
    group = online["result"]["groups"][0]
    assert group["mean_after_first_epoch"] == 2.0 and group["control_mean_after_first_epoch"] == 3.0
    assert group["null"]["verdict"] == "online loss 2.000 vs 3.000 in the matched shuffled control (-1.000)."
    assert online["headline"]["cyclic: matched shuffled control"] == 3.0

    curves = run_one("loss_curves", run, tmp_path / "report")["result"]
    assert curves["doc_recovered"] == [0.5] and curves["null"]["control"] == [0.0]

    forgetting = run_one("forgetting", run, tmp_path / "report")["result"]
    assert forgetting["null"]["control_anticipation_ratio_median"] == 0.0
    assert forgetting["null"]["verdict"].endswith("in the matched shuffled control (+0.50).")

    recovery_map = run_one("recovery_map", run, tmp_path / "report")["result"]
    assert recovery_map["anticipating_fraction"] == 1.0
    assert recovery_map["null"]["control_anticipating_fraction"] == 0.0
