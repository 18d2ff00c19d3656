"""Tolerances that follow from float32 arithmetic, for values computed by two different paths.

float32 keeps 24 significant bits, so a loss of ~5 nats is known to one unit in the last place,
ulp(5) = 2^-21 = 4.8e-7, and the difference of two such losses carries that absolute error however
small the difference is. Two paths that compute the same float32 quantity through different kernels
(a batch of T rows vs one row, another summation order, another CPU's vector units) agree to a few
ulps, not to a relative 1e-6 of their difference: Intel and AMD CPUs round differently.

Comparisons of the *same* computation (a resume or a replay against the run it repeats, two runs
with the same seed) stay bit for bit and say so where they are made; these helpers are for the rest.
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)  # 2^-23: the spacing of float32 numbers in [1, 2)


# Batched against sequential training (trainer.members.Stacked against Single): a vmapped step runs
# batched matmuls (bmm) whose sums are ordered differently from one model's. Measured: ~3e-6 on losses
# of 3-7 nats after one replayed episode; the tests allow 2e-5.
ATOL_LOSS = 2e-5


def ulps(values, n: int = 4) -> float:
    """Absolute tolerance: ``n`` float32 ulps of the largest |value| (each path rounds a few times)."""
    return n * float(np.spacing(np.float32(np.max(np.abs(np.asarray(values, dtype=np.float64))))))


def sum_rtol(n_terms: int) -> float:
    """Relative tolerance of a float32 sum (or norm) of ``n_terms`` same-signed terms accumulated
    in another order: the rounding error of a sum grows like sqrt(n)·eps; 4x that for margin."""
    return 4.0 * float(np.sqrt(n_terms)) * EPS32
