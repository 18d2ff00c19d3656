"""The statistics that judge a claim from per-seed numbers: paired differences, per-seed slopes,
an equivalence test and the seeds an undecided result would need.

A seed is the unit of replication: the same seed gives the same documents and initialisation, so
two conditions run at the same seed are compared seed by seed (paired) and only the spread of the
per-seed differences enters the interval. Intervals are Student-t: mean ± t_{(1+c)/2, n−1} · sd / √n.

Pure numpy and math (no scipy): Student's t comes from the regularised incomplete beta function.
NaN values (an undefined recovery score) are left out; ``n`` says how many remained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Interval:
    """A mean over seeds with its t interval."""

    n: int  # finite values (pairs, seeds) it rests on
    mean: float  # NaN when n = 0
    std: float  # sample std (ddof = 1) of the values; NaN when n < 2
    low: float  # lower end of the interval of the mean; NaN when n < 2
    high: float  # upper end
    confidence: float  # e.g. 0.95

    def sign(self) -> int:
        """+1 when the whole interval is above 0, −1 when below, 0 when it holds 0 (or is undefined)."""
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci_low": self.low,
            "ci_high": self.high,
            "confidence": self.confidence,
        }


def mean_interval(values, confidence: float = 0.95) -> Interval:
    """Mean of the finite ``values`` [seed] and its Student-t interval."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    if n < 2:
        return Interval(n, mean, float("nan"), float("nan"), float("nan"), confidence)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Interval(n, mean, std, mean - half, mean + half, confidence)


def paired_difference(a, b, confidence: float = 0.95) -> Interval:
    """Mean of b − a over pairs (index i of ``a`` pairs with index i of ``b``: the same seed) and
    its t interval; pairs where either value is NaN are left out."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return mean_interval(b - a, confidence)


def per_seed_slopes(values, x=None) -> np.ndarray:
    """Least-squares slope of each seed's values on the factor: ``values`` [seed, point] in factor
    order, ``x`` [point] the factor's values (default: its rank 0, 1, 2, …, so the slope is the
    change per step). A seed with a NaN at any point, or fewer than 2 points, gives NaN."""
    values = np.asarray(values, dtype=np.float64)
    assert values.ndim == 2, values.shape
    x = np.arange(values.shape[1], dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    assert x.shape == (values.shape[1],), (x.shape, values.shape)
    centred = x - x.mean()
    denominator = float((centred**2).sum())
    if values.shape[1] < 2 or denominator == 0.0:
        return np.full(values.shape[0], np.nan)
    # sum_j (x_j − x̄)(y_j − ȳ) = sum_j (x_j − x̄) y_j, since the centred x sum to 0
    return values @ centred / denominator  # NaN rows stay NaN


def slope_interval(values, x=None, confidence: float = 0.95) -> Interval:
    """The per-seed slopes of ``values`` [seed, point] on ``x`` and the t interval of their mean."""
    return mean_interval(per_seed_slopes(values, x), confidence)


@dataclass
class Equivalence:
    """Two one-sided tests (TOST): is the mean difference inside ±margin?"""

    interval: Interval  # the (1 − 2α) interval of the mean difference, e.g. 90% for α = 0.05
    margin: float  # the equivalence margin, in the units of the values
    equivalent: bool  # the whole interval lies inside (−margin, +margin)
    different: bool  # the whole interval lies outside it (a difference larger than the margin)


def equivalence_test(a, b, margin: float, alpha: float = 0.05) -> Equivalence:
    """TOST of the paired difference b − a against ±``margin`` at level ``alpha``: equivalent when
    the (1 − 2α) t interval lies inside the margin (both one-sided tests reject at α)."""
    assert margin > 0, margin
    d = paired_difference(a, b, confidence=1.0 - 2.0 * alpha)
    defined = d.n >= 2
    equivalent = defined and -margin < d.low and d.high < margin
    different = defined and (d.low > margin or d.high < -margin)
    return Equivalence(d, margin, bool(equivalent), bool(different))


def seeds_needed(mean: float, std: float, confidence: float = 0.95, most: int = 10_000) -> int | None:
    """The fewest seeds n whose t interval half-width t_{(1+c)/2, n−1} · std / √n is under |mean|:
    how many seeds an undecided result would need if the effect and the spread stay as observed.
    None when there is no effect to resolve (mean 0 or undefined) or it needs more than ``most``."""
    if not (math.isfinite(mean) and math.isfinite(std)) or mean == 0.0:
        return None
    if std == 0.0:
        return 2
    p = 0.5 + confidence / 2
    # t_{p, n−1} ≥ z_p, so no n below (z_p · std / mean)² can do; start the search there.
    z = t_quantile(p, 1e9)
    start = max(2, math.floor((z * std / mean) ** 2))
    for n in range(start, most + 1):
        if t_quantile(p, n - 1) * std / math.sqrt(n) < abs(mean):
            return n
    return None


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
