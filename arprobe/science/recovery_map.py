"""The eval matrix as a map of loss changes, and when anticipation starts before a document's turn.
Conventions as ``arprobe.science.recovery``: row k of ``loss_eval`` [K+1, T] is after episode k,
``schedule_doc`` [K] 0-based.
"""

from __future__ import annotations

import numpy as np

from arprobe.science.recovery import MIN_FORGETTING, training_episodes


def loss_changes(loss_eval: np.ndarray) -> np.ndarray:
    """[K, T] change of every document's loss over each episode: row k − 1 holds L[k] − L[k − 1]."""
    return np.diff(np.asarray(loss_eval, dtype=np.float64), axis=0)


def onset_lags(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """[n, T] episodes before a document's next training at which its loss last peaked: in the
    interval after its n-th training (rows from right after it to right before the (n+1)-th), the
    number of episodes from the interval's (first) maximum to just before the next training. 0: the
    loss rose until the document's turn (no anticipation); larger: it started falling earlier. NaN
    where the document has no such interval, or forgot next to nothing in it (a rise under
    MIN_FORGETTING of the loss after training, as for the recovery score): a loss that only falls
    has no onset."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    trained = [training_episodes(schedule_doc, t) for t in range(loss_eval.shape[1])]
    lags = np.full((max([len(e) - 1 for e in trained] + [0]), loss_eval.shape[1]), np.nan)
    for t, eps in enumerate(trained):
        for n in range(len(eps) - 1):
            window = loss_eval[eps[n] : eps[n + 1], t]  # rows eps[n] .. eps[n+1] − 1
            if window.max() - window[0] > MIN_FORGETTING * abs(window[0]):
                lags[n, t] = len(window) - 1 - int(np.argmax(window))
    return lags


def change_before_turn(loss_eval: np.ndarray, schedule_doc: np.ndarray, max_lag: int) -> np.ndarray:
    """[n, max_lag] mean over documents of the loss change j + 1 episodes before the document's
    (n+1)-th training (column j: the change over episode k_{n+1} − 1 − j), counting only episodes
    after its n-th training; NaN where no document has one. Negative: the loss was falling then."""
    changes = loss_changes(loss_eval)  # row k − 1: over episode k
    trained = [training_episodes(schedule_doc, t) for t in range(changes.shape[1])]
    n_intervals = max([len(e) - 1 for e in trained] + [0])
    sums, counts = np.zeros((n_intervals, max_lag)), np.zeros((n_intervals, max_lag))
    for t, eps in enumerate(trained):
        for n in range(len(eps) - 1):
            for j in range(max_lag):
                k = eps[n + 1] - 1 - j  # the episode j + 1 before the next training
                if k <= eps[n]:
                    break
                sums[n, j] += changes[k - 1, t]
                counts[n, j] += 1
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
