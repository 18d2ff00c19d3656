"""The nulls of the probes' headlines (arprobe.science.geometry): the helix statistic against random
walks, and the positional and the distance pattern of Fig. 8a apart."""

import numpy as np
import pytest

from arprobe.science.geometry import (
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
from tests.helpers import distance_cosines, positional_cosines
from tests.store_factory import helix


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
    effects = position_and_distance_effects(positional_cosines(T))
    # middle third (positions 4..7) against the outer thirds: mean |i − 5.5| is 1 against 4
    assert effects["positional_effect"] == pytest.approx(0.04 * (4 - 1), abs=1e-12)
    assert effects["neighbour_effect"] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(effects["distance_profile"], 0, atol=1e-12)
    assert effects["centre_pairs_mean"] > effects["edge_pairs_mean"]
    null = label_permutation_null(positional_cosines(T), permutations=300, seed=0)
    assert effects["positional_effect"] > null["positional_effect"]["q975"]


def test_a_purely_distance_matrix_has_no_positional_pattern():
    T = 12
    effects = position_and_distance_effects(distance_cosines(T))
    # every row holds the same values, so every document's level is the same
    assert effects["positional_effect"] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(effects["position_profile"], 0, atol=1e-12)
    # residual = cos(2πd/T) − mean off-diagonal; its mean at d = 1 minus its mean at d > 1 (10 pairs
    # per row: d = 2..5 twice, d = 6 once, whose cosines sum to −1 − 2 cos(π/6) ... by hand below)
    cos_d = np.cos(2 * np.pi * np.arange(1, 7) / T)
    far = (2 * cos_d[1:5].sum() + cos_d[5]) / 9
    assert effects["neighbour_effect"] == pytest.approx(cos_d[0] - far, abs=1e-12)
    null = label_permutation_null(distance_cosines(T), permutations=300, seed=0)
    assert effects["neighbour_effect"] > null["neighbour_effect"]["q975"]
