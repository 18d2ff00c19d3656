"""The paper's computational toy model of anticipatory recovery (Sec. 4.4, App. A.5).

Each task i is one data point x_i in R^N. A slow linear embedding P [M, N] and a fast
vector w [M] are trained cyclically on tasks 0..T-1 with the loss

    l_i(P, w) = 1/2 || P x_i - f_i(w) ||^2

One training step on task i is a gradient step on P (Eq. 1) followed by an exact solve for
w given P (Eq. 2):

    P <- P - lr (P x_i - f_i(w)) x_i^T
    w <- f_i^{-1}(P x_i)

Two task maps are implemented: "identity", f_i(w) = w, and "target", f_i(w) = y_i - w.
The paper's claim is that the embeddings f_i^{-1}(P x_i) self-organise into a circle in task
order, so solving w for task i also moves it towards task i+1: anticipatory recovery.

Pure numpy, no plotting and no store access; a probe wraps these functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arprobe.errors import UserError

KINDS = ("identity", "target")

# App. A.5: N = M = 1000 for f_i(w) = w, N = M = 100 for f_i(w) = y_i - w.
DEFAULT_DIM = {"identity": 1000, "target": 100}

# Learning rates. App. A.5 states 0.01 for both kinds, but with N = 1000 that makes Eq. 1
# diverge: the step multiplies task i's own residual by (1 - lr |x_i|^2) and
# E|x_i|^2 = N/3, so lr = 0.01 gives a factor of about -2.3 and the losses overflow within
# two epochs. 0.001 keeps lr |x_i|^2 ~ 0.33, the same per-step contraction the paper's
# "target" setting has (0.01 * 100 / 3).
DEFAULT_LR = {"identity": 0.001, "target": 0.01}

# Epochs. Measured over seeds 0-4: the recovery score is still rising at epoch 10
# ("target" 0.41 -> 0.90, "identity" 0.87 -> 0.96) and levels off near 0.95-0.97 by
# epoch 30; the "target" embeddings need 20-30 epochs to line up on a circle in task order
# (Fig. 11). 30 epochs show both, and cost well under a second.
DEFAULT_EPOCHS = 30


@dataclass
class ToyResult:
    """Everything one toy-model run records. E = epochs, T = tasks, M = embedding dim.

    Row k of `loss` is taken after episode k (row 0 before any training); an episode is
    all the training steps on one task. After episode k, w = f_i^{-1}(P x_i) of the task just
    trained, so ``fast_weights`` walks the ring of embeddings: the toy's weight trajectory.
    """

    loss: np.ndarray  # float64 [K + 1, T]  l_j(P, w) for every task j (K = E*T when cyclic)
    schedule: np.ndarray  # int32 [K]  task trained at episode k (cyclic 0..T-1 by default)
    epoch: np.ndarray  # int32 [K]  1-based epoch of episode k
    embeddings: np.ndarray  # float64 [E+1, T, M]  f_i^{-1}(P x_i), before training and after each epoch
    fast_weights: np.ndarray  # float64 [K + 1, M]  w before training and after each episode


def simulate_toy_model(
    kind: str = "identity",
    *,
    n_tasks: int = 25,
    dim: int | None = None,
    epochs: int = DEFAULT_EPOCHS,
    lr: float | None = None,
    steps_per_task: int = 1,
    seed: int = 0,
    schedule: np.ndarray | None = None,
    epoch: np.ndarray | None = None,
) -> ToyResult:
    """Draw a toy model as in App. A.5 and train it (see `train_toy_model`): cyclically for
    ``epochs`` epochs, or on a given task sequence ``schedule`` [K] with its ``epoch`` [K] (a
    run's own document order: documents are tasks, and ``epochs`` is then ignored).

    kind: "identity" (f_i(w) = w) or "target" (f_i(w) = y_i - w).
    dim: N = M; None takes App. A.5's value for the kind (1000 or 100).
    lr: None takes DEFAULT_LR for the kind (App. A.5's 0.01 diverges for "identity").
    seed: seeds np.random.default_rng, which draws P, then X, then w, then Y (target only):
        P entries ~ N(0, 1/N^2), x_i, w, y_i entries ~ Unif(-1, 1).
    """
    if kind not in KINDS:
        raise UserError(f"Unknown toy model kind {kind!r}. Available: {', '.join(KINDS)}.")
    dim = DEFAULT_DIM[kind] if dim is None else dim
    lr = DEFAULT_LR[kind] if lr is None else lr
    for name, value in (("n_tasks", n_tasks), ("dim", dim)):
        if value < 1:
            raise UserError(f"Toy model option {name} must be at least 1, got {value}.")

    rng = np.random.default_rng(seed)
    P = rng.normal(0.0, 1.0 / dim, size=(dim, dim))  # [M, N], std 1/N
    X = rng.uniform(-1.0, 1.0, size=(dim, n_tasks))  # [N, T], column i is x_i
    w = rng.uniform(-1.0, 1.0, size=dim)  # [M]
    Y = rng.uniform(-1.0, 1.0, size=(dim, n_tasks)) if kind == "target" else None  # [M, T]
    return train_toy_model(
        kind, P, X, w, Y, epochs=epochs, lr=lr, steps_per_task=steps_per_task, schedule=schedule, epoch=epoch
    )


def check_toy_options(kind: str, Y, epochs: int, lr: float, steps_per_task: int, cyclic: bool) -> None:
    """One sentence for each toy option out of range (``cyclic``: no task sequence given)."""
    if kind not in KINDS:
        raise UserError(f"Unknown toy model kind {kind!r}. Available: {', '.join(KINDS)}.")
    if (Y is None) != (kind == "identity"):
        raise UserError(f'Toy model kind {kind!r} needs Y [M, T] exactly when kind is "target".')
    if cyclic:
        for name, value in (("epochs", epochs), ("steps_per_task", steps_per_task)):
            if value < 1:
                raise UserError(f"Toy model option {name} must be at least 1, got {value}.")
    elif steps_per_task < 1:
        raise UserError(f"Toy model option steps_per_task must be at least 1, got {steps_per_task}.")
    if lr <= 0:
        raise UserError(f"Toy model learning rate must be positive, got lr={lr}.")


def toy_schedule(n_tasks: int, epochs: int, schedule, epoch) -> tuple[np.ndarray, np.ndarray]:
    """(tasks [K], 1-based epochs [K]): cyclic over ``epochs`` epochs, or the given sequence, checked."""
    if schedule is None:
        return (
            np.tile(np.arange(n_tasks, dtype=np.int32), epochs),
            np.repeat(np.arange(1, epochs + 1, dtype=np.int32), n_tasks),
        )
    schedule = np.asarray(schedule, dtype=np.int32)
    epoch = np.asarray(epoch, dtype=np.int32)
    if not len(schedule) or schedule.min() < 0 or schedule.max() >= n_tasks:
        raise UserError(
            f"A toy model task sequence needs tasks in 0..{n_tasks - 1} and at least one episode."
        )
    assert epoch.shape == schedule.shape and (np.diff(epoch) >= 0).all(), (epoch.shape, schedule.shape)
    return schedule, epoch


def train_toy_model(
    kind: str,
    P: np.ndarray,
    X: np.ndarray,
    w: np.ndarray,
    Y: np.ndarray | None = None,
    *,
    epochs: int = 0,
    lr: float,
    steps_per_task: int = 1,
    schedule: np.ndarray | None = None,
    epoch: np.ndarray | None = None,
) -> ToyResult:
    """Train a given toy model cyclically on tasks 0..T-1 for `epochs` epochs, or on the task
    sequence ``schedule`` [K] (0-based tasks, any order, tasks may repeat or appear once) whose
    1-based, non-decreasing epochs are ``epoch`` [K]; the embeddings are then taken at the end of
    each of those epochs, whatever their lengths.

    P [M, N] initial embedding, X [N, T] data points as columns, w [M] initial fast
    weights, Y [M, T] task targets y_i as columns ("target" only, None for "identity").
    The inputs are not modified.
    steps_per_task: training steps (Eq. 1 then Eq. 2) per episode. Because Eq. 2 solves w
        exactly, the gradient of l_i with respect to P is zero after the first step, so
        further steps change nothing (up to rounding).
    """
    check_toy_options(kind, Y, epochs, lr, steps_per_task, schedule is None)
    P, X, w = (np.asarray(a, dtype=np.float64) for a in (P, X, w))
    Y = None if Y is None else np.asarray(Y, dtype=np.float64)
    dim_m, n_tasks = P.shape[0], X.shape[1]
    assert P.shape[1] == X.shape[0] and w.shape == (dim_m,), (P.shape, X.shape, w.shape)
    assert Y is None or Y.shape == (dim_m, n_tasks), Y.shape

    # Eq. 1 multiplies task i's own residual by (1 - lr |x_i|^2); below -1 the run blows up.
    step_gain = lr * float(np.max(np.sum(X * X, axis=0)))
    if step_gain >= 2.0:
        raise UserError(
            f"lr={lr} makes the toy model diverge (lr * |x_i|^2 reaches {step_gain:.2f} >= 2 "
            f"at N={X.shape[0]}); use lr below {2.0 / step_gain * lr:.2g}."
        )

    def targets(w: np.ndarray) -> np.ndarray:
        """f_j(w) for every task j: [M, T]."""
        return np.broadcast_to(w[:, None], (dim_m, n_tasks)) if Y is None else Y - w[:, None]

    def embed(PX: np.ndarray) -> np.ndarray:
        """f_j^{-1}(P x_j) for every task j: [T, M]."""
        return (PX if Y is None else Y - PX).T

    schedule, epoch = toy_schedule(n_tasks, epochs, schedule, epoch)
    n_episodes = len(schedule)
    # The episode (1-based) that closes each epoch; the embeddings are taken there.
    epoch_end = {int(k) + 1 for k in np.flatnonzero(np.append(np.diff(epoch) != 0, True))}
    loss = np.empty((n_episodes + 1, n_tasks))
    embeddings = np.empty((len(epoch_end) + 1, n_tasks, dim_m))
    fast_weights = np.empty((n_episodes + 1, dim_m))

    # Losses, embeddings and Eq. 2 only ever read P through P @ X, so we evolve PX [M, T]
    # instead of P [M, N]: right-multiplying Eq. 1 by X gives
    #   PX <- PX - lr (P x_i - f_i(w)) (x_i^T X),
    # with x_i^T X row i of the Gram matrix. That is O(M T) per step instead of O(M N T)
    # (30 "identity" epochs: 0.3 s instead of 11 s), and all T losses are one array op.
    gram = X.T @ X  # [T, T]
    PX = P @ X  # [M, T]
    w = w.copy()
    loss[0] = 0.5 * np.sum((PX - targets(w)) ** 2, axis=0)
    embeddings[0] = embed(PX)
    fast_weights[0] = w
    n_closed = 0

    for k, i in enumerate(schedule):
        for _ in range(steps_per_task):
            target = w if Y is None else Y[:, i] - w
            PX -= lr * np.outer(PX[:, i] - target, gram[i])  # Eq. 1: slow weights take one gradient step
            w = PX[:, i].copy() if Y is None else Y[:, i] - PX[:, i]  # Eq. 2: fast weights solve task i
        loss[k + 1] = 0.5 * np.sum((PX - targets(w)) ** 2, axis=0)
        fast_weights[k + 1] = w
        if k + 1 in epoch_end:
            n_closed += 1
            embeddings[n_closed] = embed(PX)

    return ToyResult(
        loss=loss, schedule=schedule, epoch=epoch, embeddings=embeddings, fast_weights=fast_weights
    )


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project points [n, d] onto their top two principal components.

    Returns (coords [n, 2], explained_variance_ratio [2]). Component signs are whatever the
    SVD gives; nothing downstream depends on them.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 2 or points.shape[1] < 2:
        raise UserError(f"pca_2d needs at least 2 points of dimension >= 2, got shape {points.shape}.")
    centred = points - points.mean(axis=0)
    U, S, _ = np.linalg.svd(centred, full_matrices=False)
    coords = U[:, :2] * S[:2]
    variance = S**2
    total = variance.sum()
    ratio = variance[:2] / total if total > 0 else np.zeros(2)
    return coords, ratio


def circularity(coords_2d: np.ndarray) -> dict:
    """How well points [T, 2], given in task order, go once around a circle in that order.

    Angles are taken about the centroid; each step i -> i+1 (including the closing step
    T-1 -> 0) advances by its angle difference wrapped into [-pi, pi).

    Returns:
      order_agreement: fraction of the T steps that turn in the majority direction, in
          [0.5, 1]; 1 means every consecutive pair advances the same way round.
      winding: total signed turn over the closed tour / (2 pi); +1 for one anticlockwise
          revolution, -1 for one clockwise. Any closed tour gives an integer, and random
          clouds often give +-1 too, so read it together with order_agreement.
      radius_cv: std / mean of distances to the centroid; 0 for a perfect circle.
    """
    coords_2d = np.asarray(coords_2d, dtype=np.float64)
    if coords_2d.ndim != 2 or coords_2d.shape[1] != 2 or coords_2d.shape[0] < 3:
        raise UserError(f"circularity needs at least 3 points of shape [T, 2], got shape {coords_2d.shape}.")
    offsets = coords_2d - coords_2d.mean(axis=0)
    angle = np.arctan2(offsets[:, 1], offsets[:, 0])  # [T]
    step = np.diff(np.append(angle, angle[0]))  # [T] closing the tour back to task 0
    step = (step + np.pi) % (2 * np.pi) - np.pi  # wrap into [-pi, pi)
    forward = float(np.mean(step > 0))
    radius = np.linalg.norm(offsets, axis=1)
    return {
        "order_agreement": max(forward, 1.0 - forward),
        "winding": float(step.sum() / (2 * np.pi)),
        "radius_cv": float(radius.std() / radius.mean()),
    }


def shuffle_within_epochs(schedule: np.ndarray, epoch: np.ndarray, seed: int = 0) -> np.ndarray:
    """The same documents per epoch as ``schedule`` [K] (with its 1-based ``epoch`` [K]), each epoch
    in a random order (fixed seed): the matched shuffled control of a schedule, on which the toy
    reads what it would without a repeating order."""
    schedule, epoch = np.asarray(schedule), np.asarray(epoch)
    rng = np.random.default_rng(seed)
    out = schedule.copy()
    for e in np.unique(epoch):
        idx = np.flatnonzero(epoch == e)
        out[idx] = schedule[idx][rng.permutation(len(idx))]
    return out
