"""Savings: how many gradient steps bring a document back to the loss it had right after its last
turn, against the steps its learning took — the "spurious forgetting" measurement of Zheng et al.
(ICLR 2025), Ebbinghaus's savings in relearning. A small ratio says the knowledge is dormant,
not lost; 0 steps says the loss had already come back on its own (anticipatory recovery).

Pure numpy. ``loss_eval`` [K+1, T] is the run's eval matrix (row k: after episode k) and
``schedule_doc`` [K] the 0-based document of each episode; episodes are 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Turns:
    """The documents measured from the checkpoint after episode ``checkpoint``: each was trained
    before it (not in that episode itself) and is trained again after it."""

    doc: np.ndarray  # int [n] 0-based documents
    previous: np.ndarray  # int [n] the episode of its last turn up to the checkpoint
    next: np.ndarray  # int [n] the episode of its first turn after the checkpoint
    target: np.ndarray  # float [n] loss_eval[previous, doc]: its loss right after that turn


def turns_around(loss_eval, schedule_doc, checkpoint: int) -> Turns:
    """Every document trained before episode ``checkpoint`` and again after it, in document order,
    with its post-training loss (the target of relearning) read from the eval matrix. The document
    trained in episode ``checkpoint`` itself is left out: it sits at its target with nothing
    forgotten, and would count as a trivial 0."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    schedule_doc = np.asarray(schedule_doc)
    rows = []
    for d in np.unique(schedule_doc):
        episodes = np.flatnonzero(schedule_doc == d) + 1  # 1-based
        before, after = episodes[episodes <= checkpoint], episodes[episodes > checkpoint]
        if len(before) and len(after) and before[-1] < checkpoint:
            rows.append((int(d), int(before[-1]), int(after[0])))
    doc, previous, nxt = (np.array(col, dtype=int) for col in zip(*rows)) if rows else [np.zeros(0, int)] * 3
    return Turns(doc, previous, nxt, loss_eval[previous, doc])


def steps_to_reach(trajectory, target: float, cap: int) -> tuple[int, bool]:
    """(steps, censored): the first n with ``trajectory[n] <= target``, where ``trajectory[0]`` is the
    loss before any step and ``trajectory[n]`` after n steps; 0 when it starts at or below the
    target. A trajectory that has not reached it after ``cap`` steps is censored: (cap, True) —
    the true count is larger than cap."""
    loss = np.asarray(trajectory, dtype=np.float64)
    hits = np.flatnonzero(loss[: cap + 1] <= target)
    if len(hits):
        return int(hits[0]), False
    assert len(loss) >= cap + 1, f"a trajectory of {len(loss) - 1} steps cannot show {cap} steps missed"
    return cap, True


def savings_ratio(relearn_steps, first_steps) -> np.ndarray:
    """Relearning steps over first-learning steps, elementwise (a censored count gives a lower bound)."""
    return np.asarray(relearn_steps, dtype=np.float64) / np.asarray(first_steps, dtype=np.float64)


def bootstrap_mean_interval(values, n: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of the finite ``values`` over ``n`` resamples of them (NaN,
    NaN with fewer than 2 values or ``n`` = 0)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if n <= 0 or len(x) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n, len(x)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


@dataclass(frozen=True)
class Savings:
    """The savings of the documents measured from one checkpoint."""

    steps: np.ndarray  # int [n] relearning steps (the cap where censored)
    censored: np.ndarray  # bool [n] the target was not reached within the cap
    ratio: np.ndarray  # float [n] steps / first-learning steps
    mean_ratio: float  # over the documents with a ratio; a lower bound when any is censored
    interval: tuple[float, float]  # bootstrap interval of mean_ratio over documents
    already_there: int  # documents at or below their target before any step (0 steps)


def savings(trajectories, targets, first_steps, cap: int, bootstrap: int = 1000, seed: int = 0) -> Savings:
    """Savings of each document from its loss trajectory under relearning (``trajectories``: one
    sequence per document, entry 0 before any step), its target loss and its first-learning steps."""
    counted = [steps_to_reach(t, g, cap) for t, g in zip(trajectories, targets)]
    steps = np.array([s for s, _ in counted], dtype=int)
    censored = np.array([c for _, c in counted], dtype=bool)
    ratio = savings_ratio(steps, first_steps)
    finite = ratio[np.isfinite(ratio)]  # a document without first-learning steps has no ratio
    mean = float(finite.mean()) if len(finite) else float("nan")
    return Savings(
        steps,
        censored,
        ratio,
        mean,
        bootstrap_mean_interval(ratio, bootstrap, seed),
        int(np.sum((steps == 0) & ~censored)),
    )
