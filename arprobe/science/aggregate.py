"""Statistics over seeds: mean ± std of a per-seed number and of every column of a [seed, k]
table. The tests that judge a claim (paired differences, slopes, intervals) are in ``stats``;
``paired_difference`` and Student's t are re-exported from there for the sweep report.

Pure numpy and math; no scipy. NaN values (an undefined recovery score) are left out and the
count says how many values remained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arprobe.science.stats import paired_difference, t_cdf, t_quantile  # noqa: F401 (re-exported)


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
