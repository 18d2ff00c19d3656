"""The toy model (arprobe.science.toy) without training: every task's loss after every episode as a
product of small known matrices, and the linear-regression baseline of Evron et al. (COLT 2022, "How
catastrophic can catastrophic forgetting be in linear regression?") in the toy's own setting.

Linear regression on task i (input x_i [N], target F_i [M]) by `steps` gradient steps of size lr maps
the slow weights' error e = P − P* (P* any exact fit) to

    e (I − lr x_i x_iᵀ)^steps = e (I − c_i x_i x_iᵀ / |x_i|²),   c_i = 1 − (1 − lr |x_i|²)^steps,

and trained to convergence (Evron's setting) c_i = 1: the orthogonal projection onto x_i's
complement (`weight_map`). Losses only read P through the residuals R = P X − F [M, T], and the
same step is R <- R (I − c_i e_i g_iᵀ / G_ii) with G = XᵀX the tasks' Gram matrix and g_i its
column i, whether or not the tasks can all be fitted at once. So every task's loss after every
episode is ½ |R_0 B_1 ... B_k e_j|²: T × T products fixed by G, lr, steps and the order, applied
to the initial residuals. Over a cyclic order the product for one epoch, C, is the same every
epoch, and the residuals after n epochs are R_0 Cⁿ (`cyclic_eval_matrix`).

What of the toy this is. The toy's targets are f_i(w) of a fast weight w that Eq. 2 re-solves after
every step, so its targets move; with w frozen at its start w_0 (Eq. 2 left out) the toy is exactly
this linear regression with fixed targets F_i = f_i(w_0) (w_0 for f_i(w) = w, y_i − w_0 for
f_i(w) = y_i − w): the baseline (``solve_w=False``). The toy itself is closed form too: with
Z = P X − F^0 (F^0 = 0 for "identity", Y for "target") and z = w ("identity") or −w ("target"),
the residual of task i is Z_i − z in both kinds, a step is Z <- Z − lr (Z_i − z) g_iᵀ and Eq. 2 sets
z <- Z_i; further steps on the same task change nothing. On the state U = [Z | z] [M, T+1] an
episode is U <- U A_i, and task j's loss is ½ |U (e_j − e_T)|². The baseline's episode is the same
matrix with z never moved (and `steps` steps): the whole difference between the toy and the
linear-regression baseline is that Eq. 2 makes task i's target the output of the task before it.

Not here: Evron et al.'s forgetting bounds for cyclic orders. Their abstract states the rate
T² min{1/√k, d/k} for k iterations in d dimensions; the theorem's constants and normalisation
(how the bound scales with |w*| and the data's norm, and their exact definition of forgetting) were
not available to check, so no number is computed from them.

Pure numpy; shapes: T tasks, K episodes, M output dim, N input dim.
"""

from __future__ import annotations

import numpy as np

from arprobe.errors import UserError
from arprobe.science.toy import DEFAULT_DIM, KINDS


def step_factor(sq_norm: float, lr: float, steps: int | None) -> float:
    """c = 1 − (1 − lr |x|²)^steps: the share of task i's residual that an episode of ``steps`` gradient
    steps removes (along x_i). steps=None: trained to convergence (Evron's setting), c = 1."""
    if steps is None:
        return 1.0
    return 1.0 - (1.0 - lr * sq_norm) ** steps


def weight_map(x: np.ndarray, lr: float, steps: int | None) -> np.ndarray:
    """[N, N]: what an episode on input x does to the slow weights' error, e <- e @ weight_map:
    (I − lr x xᵀ)^steps = I − c x xᵀ/|x|², and the projection onto x's complement when steps=None."""
    x = np.asarray(x, dtype=np.float64)
    sq = float(x @ x)
    return np.eye(len(x)) - step_factor(sq, lr, steps) * np.outer(x, x) / sq


def initial_state(kind: str, P: np.ndarray, X: np.ndarray, w: np.ndarray, Y: np.ndarray | None = None):
    """(U0 [M, T+1], gram [T, T]) of a toy model as `arprobe.science.toy.train_toy_model` takes it:
    U0 = [P X − F^0 | z], z = w ("identity") or −w ("target"), and gram = XᵀX."""
    if kind not in KINDS:
        raise UserError(f"Unknown toy model kind {kind!r}. Available: {', '.join(KINDS)}.")
    P, X, w = (np.asarray(a, dtype=np.float64) for a in (P, X, w))
    Z = P @ X if Y is None else P @ X - np.asarray(Y, dtype=np.float64)
    z = w if kind == "identity" else -w
    return np.column_stack([Z, z]), X.T @ X


def draw_toy_model(kind: str, n_tasks: int, dim: int | None = None, seed: int = 0):
    """(P, X, w, Y) exactly as `simulate_toy_model` draws them (np.random.default_rng(seed): P, then
    X, then w, then Y for "target"; Y is None for "identity")."""
    if kind not in KINDS:
        raise UserError(f"Unknown toy model kind {kind!r}. Available: {', '.join(KINDS)}.")
    dim = DEFAULT_DIM[kind] if dim is None else dim
    rng = np.random.default_rng(seed)
    P = rng.normal(0.0, 1.0 / dim, size=(dim, dim))
    X = rng.uniform(-1.0, 1.0, size=(dim, n_tasks))
    w = rng.uniform(-1.0, 1.0, size=dim)
    Y = rng.uniform(-1.0, 1.0, size=(dim, n_tasks)) if kind == "target" else None
    return P, X, w, Y


def episode_matrix(
    gram: np.ndarray, task: int, lr: float, steps: int | None = 1, *, solve_w: bool = False
) -> np.ndarray:
    """[T+1, T+1] A with U <- U @ A for one episode on ``task`` (0-based).

    solve_w=False: the linear-regression baseline, I − c (e_i − e_T) [g_i; 0]ᵀ / G_ii (targets fixed,
    ``steps`` gradient steps, None = to convergence). solve_w=True: the toy's own episode (one step
    moves P, Eq. 2 moves z to column i; ``steps`` does not matter).
    """
    n = gram.shape[0]
    A = np.eye(n + 1)
    if solve_w:
        A[task, :n] -= lr * gram[task]
        A[n, :n] += lr * gram[task]
        A[:, n] = A[:, task]
    else:
        c = step_factor(float(gram[task, task]), lr, steps) / gram[task, task]
        A[task, :n] -= c * gram[task]
        A[n, :n] += c * gram[task]
    return A


def cycle_matrix(
    gram: np.ndarray, order, lr: float, steps: int | None = 1, *, solve_w: bool = False
) -> np.ndarray:
    """[T+1, T+1] C = A_{order[0]} ... A_{order[-1]}: one epoch of a cyclic order."""
    C = np.eye(gram.shape[0] + 1)
    for task in order:
        C = C @ episode_matrix(gram, int(task), lr, steps, solve_w=solve_w)
    return C


def _losses(factor: np.ndarray) -> np.ndarray:
    """[T]: ½ |U (e_j − e_T)|² from a factor L with LᵀL = UᵀU."""
    diff = factor[:, :-1] - factor[:, -1:]
    return 0.5 * np.sum(diff * diff, axis=0)


def _check(gram: np.ndarray, U0: np.ndarray, schedule: np.ndarray, lr: float, steps: int | None) -> None:
    n = gram.shape[0]
    if U0.shape[1] != n + 1:
        raise UserError(f"Closed form needs the state [M, T+1] for T = {n} tasks, got shape {U0.shape}.")
    if len(schedule) and (schedule.min() < 0 or schedule.max() >= n):
        raise UserError(f"A closed-form task sequence needs tasks in 0..{n - 1}.")
    if lr <= 0:
        raise UserError(f"Closed form learning rate must be positive, got lr={lr}.")
    if steps is not None and steps < 1:
        raise UserError(f"Closed form steps must be at least 1 (or None: to convergence), got {steps}.")
    if np.any(np.diag(gram) <= 0):
        raise UserError("Every task input x_i must be non-zero for the closed form.")


def eval_matrix(
    gram: np.ndarray,
    U0: np.ndarray,
    schedule,
    lr: float,
    steps: int | None = 1,
    *,
    solve_w: bool = False,
) -> np.ndarray:
    """[K+1, T] loss of every task before training (row 0) and after each episode of ``schedule`` [K]
    (0-based tasks, any order): ½ |U0 A_1 ... A_k (e_j − e_T)|².

    gram [T, T] = XᵀX; U0 [M, T+1] from `initial_state` (for plain regression with fixed targets F:
    [P0 X − F | 0]). Only U0ᵀU0 matters, so U0 is first reduced to a (T+1)-row factor; each episode
    is then a rank-one update of that factor (the matrix product, O(T²) per episode).
    """
    gram = np.asarray(gram, dtype=np.float64)
    U0 = np.asarray(U0, dtype=np.float64)
    schedule = np.asarray(schedule, dtype=np.int64).reshape(-1)
    _check(gram, U0, schedule, lr, steps)
    L = np.linalg.qr(U0, mode="r") if U0.shape[0] > U0.shape[1] else U0.copy()  # LᵀL = U0ᵀU0
    n = gram.shape[0]
    loss = np.empty((len(schedule) + 1, n))
    loss[0] = _losses(L)
    for k, i in enumerate(schedule):
        residual = L[:, i] - L[:, n]
        if solve_w:
            L[:, :n] -= lr * np.outer(residual, gram[i])
            L[:, n] = L[:, i]
        else:
            L[:, :n] -= step_factor(gram[i, i], lr, steps) / gram[i, i] * np.outer(residual, gram[i])
        loss[k + 1] = _losses(L)
    return loss


def cyclic_eval_matrix(
    gram: np.ndarray, U0: np.ndarray, epochs: int, lr: float, steps: int | None = 1, *, solve_w: bool = False
) -> np.ndarray:
    """[E*T+1, T] as `eval_matrix` for the cyclic order 0..T-1 repeated ``epochs`` times, from the
    epoch's matrix: the state after n epochs and p more episodes is U0 Cⁿ A_0 ... A_{p-1}."""
    gram = np.asarray(gram, dtype=np.float64)
    U0 = np.asarray(U0, dtype=np.float64)
    n = gram.shape[0]
    _check(gram, U0, np.arange(n), lr, steps)
    prefix = [np.eye(n + 1)]
    for task in range(n):
        prefix.append(prefix[-1] @ episode_matrix(gram, task, lr, steps, solve_w=solve_w))
    C = prefix[-1]
    L = np.linalg.qr(U0, mode="r") if U0.shape[0] > U0.shape[1] else U0
    rows = [_losses(L)]
    for e in range(epochs):
        start = L @ np.linalg.matrix_power(C, e)
        rows.extend(_losses(start @ prefix[p]) for p in range(1, n + 1))
    return np.array(rows)


def baseline_for_toy(
    kind: str, P, X, w, Y, schedule, lr: float, steps: int | None = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(baseline [K+1, T], toy [K+1, T]) for one toy model: the eval matrix of its linear regression with
    targets frozen at f_i(w_0) (``steps`` steps per episode, None = to convergence), and the toy's own
    eval matrix in closed form (equal to `train_toy_model`'s up to rounding)."""
    U0, gram = initial_state(kind, P, X, w, Y)
    baseline = eval_matrix(gram, U0, schedule, lr, steps, solve_w=False)
    toy = eval_matrix(gram, U0, schedule, lr, 1, solve_w=True)
    return baseline, toy
