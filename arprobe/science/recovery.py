"""The science of the paper as pure functions on the eval matrix and the schedule.

Conventions (same as the store): episodes are numbered k = 1..K; ``loss_eval`` row 0 is the
loss before any training and row k the loss after episode k; ``schedule_doc[k - 1]`` is the
document (0-based) trained in episode k; ``schedule_epoch`` is 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RecoveryComponents:
    """Per-document terms of the recovery score, NaN where a document has no such interval.

    Index [n - 1, doc] is the interval between the document's n-th and (n+1)-th training.
    """

    l_max: (
        np.ndarray
    )  # [n, doc] max loss in the interval (from right after the n-th training to right before the (n+1)-th)
    l_before: np.ndarray  # [n, doc] loss right before the (n+1)-th training
    l_after: np.ndarray  # [n, doc] loss right after the n-th training


def training_episodes(schedule_doc: np.ndarray, doc: int) -> np.ndarray:
    """1-based episodes in which ``doc`` was trained, in order."""
    return np.flatnonzero(np.asarray(schedule_doc) == doc) + 1


def recovery_components(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> RecoveryComponents:
    """l_max, l_before, l_after of every document between consecutive trainings (paper Sec. 3.1).

    loss_eval: [K+1, T]; schedule_doc: [K]. Works for any order: the positions of a
    document may differ from epoch to epoch (shuffled) and some documents may be trained once.
    """
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    n_docs = loss_eval.shape[1]
    episodes = [training_episodes(schedule_doc, t) for t in range(n_docs)]
    n_intervals = max((len(e) - 1 for e in episodes), default=0)
    shape = (max(n_intervals, 0), n_docs)
    l_max, l_before, l_after = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for t, eps in enumerate(episodes):
        for n in range(len(eps) - 1):
            after_row, before_row = eps[n], eps[n + 1] - 1  # row k = after episode k
            window = loss_eval[after_row : before_row + 1, t]
            l_after[n, t] = loss_eval[after_row, t]
            l_before[n, t] = loss_eval[before_row, t]
            l_max[n, t] = window.max()
    return RecoveryComponents(l_max=l_max, l_before=l_before, l_after=l_after)


# Below this mean forgetting (l_max − l_after, as a fraction of l_after) the recovery score is
# undefined: a ratio over almost nothing. It happens when the loss falls throughout an epoch
# (the model generalises across documents, the paper's footnote 1; e.g. SGD at lr 1e-3 on a
# random-init model), where the raw ratio reads 20 or more.
MIN_FORGETTING = 0.01


def recovery_scores(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """RS(n) for n = 1..N (index n - 1), N = most trainings of any document minus one.

    RS(n) = (mean_t l_max − mean_t l_before) / (mean_t l_max − mean_t l_after): the means are
    taken over documents first, then the ratio (paper Sec. 3.1), over the documents that were
    trained at least n + 1 times. NaN where no document qualifies or where the forgetting
    (the denominator) is under MIN_FORGETTING of l_after; ``recovery_score_notes`` says why.
    """
    scores, _ = _scores_and_notes(loss_eval, schedule_doc)
    return scores


def recovery_score_notes(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> list[str]:
    """One sentence per epoch n whose RS(n) is undefined (empty where it is defined)."""
    _, notes = _scores_and_notes(loss_eval, schedule_doc)
    return notes


def _scores_and_notes(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> tuple[np.ndarray, list[str]]:
    c = recovery_components(loss_eval, schedule_doc)
    scores = np.full(c.l_max.shape[0], np.nan)
    notes = []
    for i in range(c.l_max.shape[0]):
        valid = ~np.isnan(c.l_max[i])
        if not valid.any():
            notes.append(f"RS({i + 1}) is undefined: no document was trained {i + 2} times.")
            continue
        l_max, l_before, l_after = (x[i, valid].mean() for x in (c.l_max, c.l_before, c.l_after))
        forgetting = l_max - l_after
        if forgetting <= MIN_FORGETTING * abs(l_after):
            notes.append(
                f"RS({i + 1}) is undefined: the mean forgetting l_max − l_after = {forgetting:.4g} is under "
                f"{MIN_FORGETTING:.0%} of l_after = {l_after:.4g}, so there is nothing to recover from "
                f"(the loss falls between trainings; the raw ratio would be "
                f"{(l_max - l_before) / forgetting if forgetting else float('inf'):.3g})."
            )
            continue
        scores[i] = (l_max - l_before) / forgetting
        notes.append("")
    return scores, notes


@dataclass
class ShiftAveragedCurve:
    offset: np.ndarray  # [L] episodes since the moment before each document's first training (0, 1, ...)
    mean: np.ndarray  # [L] loss averaged over documents
    std: np.ndarray  # [L] standard deviation over documents
    curves: np.ndarray  # [doc, L] the re-aligned curve of every document trained at least once
    docs: np.ndarray  # [doc] which documents the rows of ``curves`` are


def shift_averaged_curve(loss_eval: np.ndarray, schedule_doc: np.ndarray, docs=None) -> ShiftAveragedCurve:
    """Re-align every document's loss curve so offset 0 is just before its first training (App. A.4).

    Document t first trained in episode k_t contributes rows k_t − 1, k_t, ... of column t. All
    curves are cut to the length every document has, so each offset averages the same documents.
    ``docs``: the documents to align (default: every trained one); pass the schedule's
    ``repeating_docs`` so one-off documents (insert order) do not cut the curve short.
    Divide ``offset`` by the schedule's ``cycle_length`` to read it in epochs, as the paper does.
    """
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    n_rows = loss_eval.shape[0]
    candidates = range(loss_eval.shape[1]) if docs is None else [int(t) for t in docs]
    chosen, starts = [], []
    for t in candidates:
        eps = training_episodes(schedule_doc, t)
        if len(eps):
            chosen.append(t)
            starts.append(eps[0] - 1)
    if not chosen:
        raise ValueError("no document was trained, so there is no curve to align")
    length = n_rows - max(starts)
    curves = np.stack([loss_eval[s : s + length, t] for t, s in zip(chosen, starts)])
    return ShiftAveragedCurve(
        offset=np.arange(length),
        mean=curves.mean(axis=0),
        std=curves.std(axis=0),
        curves=curves,
        docs=np.asarray(chosen),
    )


@dataclass
class OnlineLoss:
    per_episode: np.ndarray  # [K] loss on the document just before its first step of the episode
    per_epoch: np.ndarray  # [E] mean online loss of each epoch (index e - 1)
    mean_after_first_epoch: float  # mean over the episodes of epochs 2..E (paper Table 1); NaN if E = 1


def online_loss(loss_eval: np.ndarray, schedule_doc: np.ndarray, schedule_epoch: np.ndarray) -> OnlineLoss:
    """Prequential loss (Sec. 3.5): the eval-matrix loss of each episode's document just before the
    episode trains it, ``loss_eval[k − 1, doc(k)]``, summarised per epoch.

    It is read from the eval matrix, the clean document, not from the first training step's
    loss, which under masking or window shift is the loss of an augmented input (the two agree
    when nothing is augmented). loss_eval: [K+1, T]; schedule_doc, schedule_epoch: [K].
    """
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    doc = np.asarray(schedule_doc, dtype=int)
    per_episode = loss_eval[np.arange(len(doc)), doc]
    epoch = np.asarray(schedule_epoch)
    n_epochs = int(epoch.max()) if len(epoch) else 0
    per_epoch = np.array(
        [per_episode[epoch == e].mean() if (epoch == e).any() else np.nan for e in range(1, n_epochs + 1)]
    )
    later = per_episode[epoch >= 2]
    return OnlineLoss(
        per_episode=per_episode,
        per_epoch=per_epoch,
        mean_after_first_epoch=float(later.mean()) if len(later) else float("nan"),
    )
