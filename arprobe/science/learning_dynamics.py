"""First-order learning dynamics: the pairwise recovery matrix predicted from per-document gradients
(in the spirit of Ren & Sutherland, "Learning dynamics of LLM fine-tuning", ICLR 2025), and how well
the prediction matches the replayed matrix.

M steps on document i from weights θ move them by Δθ_i; to first order the loss of document j then
drops by −g_j·Δθ_i, with g_j the gradient of j's loss at θ. The prediction freezes the gradient of i
over its M steps (every step sees g_i), so Δθ_i is what the optimizer does with a constant gradient:

- gradient descent: Δθ_i = −Σ_t η_t (g_i + λθ) (λ: L2 weight decay), so with λ = 0 and a constant
  rate A[i, j] ≈ η·M·g_j·g_i;
- Adam: its own update rule run for M steps on the constant g_i from the optimizer state it starts
  from (m_0, v_0 and step count s: the kept state of a checkpoint, or zeros when every episode
  starts a fresh optimizer): Δθ_i = −Σ_t η_t m̂_t / (√v̂_t + ε) (− η_t λθ, decoupled decay), with
  m̂_t, v̂_t bias-corrected by the step count s + t, exactly as torch's Adam/AdamW. From a kept state
  with a large v_0 this is η·g_jᵀ D (a·m_0 + b·g_i), D = diag(1/(√v̂ + ε)), the preconditioned inner
  product; from a fresh state every step is η·g_i/(|g_i| + ε) — the sign of g_i — so
  A[i, j] ≈ η·M·Σ_k g_jk·sign(g_ik): the first step of a fresh Adam, repeated.

A prediction is a ``direction`` U [T, D] (U_i = −Δθ_i) and ``A = U @ Gᵀ``. Everything here is numpy
on one block of coordinates at a time (a parameter tensor): directions are elementwise, so the T×T
prediction of a whole model is the sum of its blocks'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arprobe.science.geometry import pearson
from arprobe.science.order_decoding import spearman


def sgd_direction(grads, lrs, weight_decay: float = 0.0, params=None) -> np.ndarray:
    """U [T, D]: −Δθ of M plain gradient-descent steps on each document's frozen gradient.

    ``grads`` [T, D], ``lrs`` [M] the rate of each step, ``weight_decay`` λ as torch's SGD applies it
    (L2: the step's gradient is g + λθ) with ``params`` θ [D]."""
    grads = np.asarray(grads, dtype=np.float64)
    step = grads if not weight_decay else grads + weight_decay * np.asarray(params, dtype=np.float64)
    return float(np.sum(lrs)) * step


def adam_direction(
    grads,
    lrs,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    exp_avg=None,
    exp_avg_sq=None,
    step: int = 0,
    weight_decay: float = 0.0,
    params=None,
) -> np.ndarray:
    """U [T, D]: −Δθ of M Adam steps on each document's frozen gradient, from the optimizer state
    (``exp_avg`` m_0 [D], ``exp_avg_sq`` v_0 [D], ``step`` s; None/0: a fresh optimizer).

    Step t = 1..M: m ← β1 m + (1 − β1) g, v ← β2 v + (1 − β2) g², then the update
    η_t (m / (1 − β1^(s+t))) / (√(v / (1 − β2^(s+t))) + ε), and with ``weight_decay`` λ (AdamW,
    decoupled) also η_t λ θ (θ = ``params``, frozen like the gradient)."""
    g = np.asarray(grads, dtype=np.float64)
    beta1, beta2 = betas
    m = np.zeros_like(g) if exp_avg is None else np.broadcast_to(np.asarray(exp_avg, np.float64), g.shape)
    v = (
        np.zeros_like(g)
        if exp_avg_sq is None
        else np.broadcast_to(np.asarray(exp_avg_sq, np.float64), g.shape)
    )
    total = np.zeros_like(g)
    for t, lr in enumerate(lrs, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** (step + t))
        v_hat = v / (1 - beta2 ** (step + t))
        total += lr * m_hat / (np.sqrt(v_hat) + eps)
    if weight_decay:
        total += float(np.sum(lrs)) * weight_decay * np.asarray(params, dtype=np.float64)
    return total


def predicted_recovery(directions, grads) -> np.ndarray:
    """[T, T]: A[i, j] = g_j · U_i, the first-order loss drop of document j after the steps on i."""
    return np.asarray(directions, dtype=np.float64) @ np.asarray(grads, dtype=np.float64).T


def offdiagonal(matrix) -> np.ndarray:
    """[T·(T − 1)]: the entries off the diagonal, row by row."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix[~np.eye(matrix.shape[0], dtype=bool)]


def additive_residual(matrix) -> np.ndarray:
    """[T·(T − 1)]: the off-diagonal entries less their least-squares fit μ + r_i + c_j (a row
    effect: document i helps every other; a column effect: document j gains from anything), i.e.
    what is specific to the pair."""
    matrix = np.asarray(matrix, dtype=np.float64)
    T = matrix.shape[0]
    i, j = np.nonzero(~np.eye(T, dtype=bool))
    design = np.zeros((len(i), 2 * T + 1))
    design[:, 0] = 1
    design[np.arange(len(i)), 1 + i] = 1
    design[np.arange(len(i)), 1 + T + j] = 1
    y = matrix[i, j]
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ coef


def average_ranks(values) -> np.ndarray:
    """1-based ranks of ``values`` [n], ties sharing their average rank (as ``order_decoding.rankdata``,
    without its loop over distinct values: the bootstrap and the permutations rank thousands of times)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    inverse = np.empty(len(values), dtype=np.intp)
    inverse[order] = np.arange(len(values))
    ordered = values[order]
    new = np.r_[True, ordered[1:] != ordered[:-1]]
    dense = np.cumsum(new)[inverse]  # 1-based index of each value's group of ties
    bounds = np.r_[np.flatnonzero(new), len(values)]  # where each group starts, and the end
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def rank_correlation(a, b) -> float:
    """Spearman correlation of two finite series [n] (average ranks for ties); NaN if either is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    if len(ra) < 3 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class Agreement:
    """How well a predicted T×T matrix matches a replayed one, over the off-diagonal pairs."""

    spearman: float  # rank correlation
    spearman_interval: list  # [low, high] 95% bootstrap over documents ([None, None] without)
    pearson: float
    r2: float  # of the least-squares line replayed ≈ intercept + slope · predicted (= pearson²)
    slope: float  # replayed per unit predicted: 1 when the first-order prediction has the right scale
    intercept: float
    interaction_pearson: float  # Pearson of what is specific to the pair (additive_residual of both)
    mantel_p: float  # one-sided permutation p of the Spearman (documents relabelled in one matrix)
    n_pairs: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def agreement(
    predicted, replayed, *, bootstrap: int = 1000, permutations: int = 1000, seed: int = 0
) -> Agreement:
    """Off-diagonal agreement of ``predicted`` and ``replayed`` [T, T].

    The interval resamples documents (with replacement; a pair of the same document drawn twice is
    left out, and a draw of fewer than 3 distinct documents is redrawn), since pairs sharing a
    document are not independent. The Mantel p relabels the
    documents of ``predicted`` (rows and columns together) ``permutations`` times: the share of
    relabellings whose Spearman reaches the observed one ((count + 1) / (n + 1))."""
    predicted = np.asarray(predicted, dtype=np.float64)
    replayed = np.asarray(replayed, dtype=np.float64)
    T = predicted.shape[0]
    x, y = offdiagonal(predicted), offdiagonal(replayed)
    rho, r = spearman(x, y), pearson(x, y)
    if np.isfinite(r):
        slope = float(np.cov(x, y)[0, 1] / np.var(x, ddof=1))
        intercept = float(y.mean() - slope * x.mean())
    else:
        slope = intercept = float("nan")
    interaction = (
        pearson(additive_residual(predicted), additive_residual(replayed)) if T >= 4 else float("nan")
    )
    rng = np.random.default_rng(seed)
    low = high = None
    if bootstrap > 0 and T >= 3:
        rhos = []
        for _ in range(bootstrap):
            idx = rng.choice(T, size=T)
            while len(np.unique(idx)) < 3:  # two documents make two distinct pairs: a rank of ±1
                idx = rng.choice(T, size=T)
            keep = idx[:, None] != idx[None, :]
            rhos.append(rank_correlation(predicted[np.ix_(idx, idx)][keep], replayed[np.ix_(idx, idx)][keep]))
        rhos = np.array(rhos)
        rhos = rhos[np.isfinite(rhos)]
        if len(rhos) >= bootstrap / 2:
            low, high = float(np.quantile(rhos, 0.025)), float(np.quantile(rhos, 0.975))
    p = float("nan")
    if permutations > 0 and np.isfinite(rho):
        reached = 0
        for _ in range(permutations):
            perm = rng.permutation(T)
            reached += rank_correlation(offdiagonal(predicted[np.ix_(perm, perm)]), y) >= rho - 1e-12
        p = (reached + 1) / (permutations + 1)
    return Agreement(
        spearman=rho,
        spearman_interval=[low, high],
        pearson=r,
        r2=r * r if np.isfinite(r) else float("nan"),
        slope=slope,
        intercept=intercept,
        interaction_pearson=interaction,
        mantel_p=p,
        n_pairs=len(x),
    )
