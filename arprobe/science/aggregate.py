"""Statistics over seeds: mean ± std of a per-seed number, and the paired difference of two
conditions with its t-based 95% interval (paper Table 1: cyclic vs shuffled, paired by seed).

Pure numpy and math; no scipy. NaN values (an undefined recovery score) are left out and the
count says how many values remained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Summary:
    n: int  # finite values summarised
    mean: float  # NaN when n = 0
    std: float  # sample standard deviation (ddof = 1); NaN when n < 2
    values: list[float]  # every value as given, NaN included (one per seed)


def summarize(values) -> Summary:
    """Mean and sample std over the finite ``values`` [seed]."""
    raw = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = raw[np.isfinite(raw)]
    n = len(finite)
    return Summary(
        n=n,
        mean=float(finite.mean()) if n else float("nan"),
        std=float(finite.std(ddof=1)) if n > 1 else float("nan"),
        values=[float(v) for v in raw],
    )


def summarize_columns(rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-wise mean, sample std and finite count over ``rows`` [seed, k] (NaN left out)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0:
        width = rows.shape[1] if rows.ndim == 2 else 0
        return np.full(width, np.nan), np.full(width, np.nan), np.zeros(width, dtype=int)
    finite = np.isfinite(rows)
    n = finite.sum(axis=0)
    filled = np.where(finite, rows, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, filled.sum(axis=0) / np.maximum(n, 1), np.nan)
        sq = np.where(finite, (rows - mean) ** 2, 0.0).sum(axis=0)
        std = np.where(n > 1, np.sqrt(sq / np.maximum(n - 1, 1)), np.nan)
    return mean, std, n


@dataclass
class PairedDifference:
    n: int  # pairs where both values are finite
    mean: float  # mean of (b − a) over the pairs
    std: float  # sample std of the differences
    low: float  # lower end of the confidence interval of the mean difference
    high: float  # upper end
    confidence: float  # e.g. 0.95


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """Mean of b − a over pairs (index i of ``a`` pairs with index i of ``b``) and its
    Student-t interval mean ± t_{(1+c)/2, n−1} · sd / √n. NaN bounds for fewer than 2 pairs."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (b - a)[np.isfinite(a) & np.isfinite(b)]
    n = len(diff)
    mean = float(diff.mean()) if n else float("nan")
    if n < 2:
        return PairedDifference(n, mean, float("nan"), float("nan"), float("nan"), confidence)
    std = float(diff.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return PairedDifference(n, mean, std, mean - half, mean + half, confidence)


# --- Student's t without scipy ------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = p (0 < p < 1), by bisection on ``t_cdf`` to 1e-12."""
    assert 0.0 < p < 1.0 and df > 0, (p, df)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)
