"""Continual-learning metrics on the eval matrix, in loss (lower is better), the way Avalanche and
GEM define them on accuracy. Every order works: documents may come back at any offset, or never.
Conventions as ``arprobe.science.recovery``: row k of ``loss_eval`` [K+1, T] is after episode k,
``schedule_doc`` [K] 0-based, ``schedule_epoch`` [K] 1-based.
"""

from __future__ import annotations

import numpy as np

from arprobe.science.recovery import MIN_FORGETTING, recovery_components, training_episodes


def final_forgetting(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """[T] Avalanche's forgetting at the end of training, in loss: the final loss minus the lowest
    loss the document reached from its first training on (≥ 0); NaN for a never-trained document."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    out = np.full(loss_eval.shape[1], np.nan)
    for t in range(loss_eval.shape[1]):
        trained = training_episodes(schedule_doc, t)
        if len(trained):
            out[t] = loss_eval[-1, t] - loss_eval[trained[0] :, t].min()
    return out


def max_forgetting(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """[T] the largest rise of a document's loss over its running best after its first training
    (the maximum drawdown, in loss); NaN for a never-trained document."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    out = np.full(loss_eval.shape[1], np.nan)
    for t in range(loss_eval.shape[1]):
        trained = training_episodes(schedule_doc, t)
        if len(trained):
            curve = loss_eval[trained[0] :, t]
            out[t] = float((curve - np.minimum.accumulate(curve)).max())
    return out


def backward_transfer(
    loss_eval: np.ndarray, schedule_doc: np.ndarray, schedule_epoch: np.ndarray
) -> np.ndarray:
    """[E] GEM's backward transfer of each epoch, in loss: over the documents trained in the epoch
    (their last training in it), the mean of loss right after that training minus loss at the end
    of the epoch. Negative: the rest of the epoch made them worse (forgetting), as a negative BWT
    in accuracy. The epoch's last episode has nothing after it and is left out, as in GEM; NaN for
    an epoch of one episode."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    doc, epoch = np.asarray(schedule_doc, dtype=int), np.asarray(schedule_epoch, dtype=int)
    n_epochs = int(epoch.max()) if len(epoch) else 0
    out = np.full(n_epochs, np.nan)
    for e in range(1, n_epochs + 1):
        episodes = np.flatnonzero(epoch == e) + 1
        end = episodes[-1]
        last = {int(doc[k - 1]): k for k in episodes}  # document -> its last episode in the epoch
        changes = [loss_eval[k, t] - loss_eval[end, t] for t, k in last.items() if k < end]
        if changes:
            out[e - 1] = float(np.mean(changes))
    return out


def plasticity(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """[K] loss drop of each episode's document over its episode: loss before minus loss after."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    k = np.arange(1, len(schedule_doc) + 1)
    doc = np.asarray(schedule_doc, dtype=int)
    return loss_eval[k - 1, doc] - loss_eval[k, doc]


def per_epoch_means(values: np.ndarray, schedule_epoch: np.ndarray) -> np.ndarray:
    """[E] mean of per-episode ``values`` [K] over each epoch."""
    epoch = np.asarray(schedule_epoch, dtype=int)
    n_epochs = int(epoch.max()) if len(epoch) else 0
    return np.array(
        [np.mean(values[epoch == e]) if (epoch == e).any() else np.nan for e in range(1, n_epochs + 1)]
    )


def anticipation_ratios(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """[n, T] fraction of each interval's forgetting undone before the next training,
    (l_max − l_before) / (l_max − l_after) (the recovery score of one document and interval);
    NaN where the document has no such interval or forgot less than MIN_FORGETTING of l_after."""
    c = recovery_components(loss_eval, schedule_doc)
    forgot = c.l_max - c.l_after
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (c.l_max - c.l_before) / forgot
    return np.where(forgot > MIN_FORGETTING * np.abs(c.l_after), ratio, np.nan)


def anticipation_by_document(loss_eval: np.ndarray, schedule_doc: np.ndarray) -> np.ndarray:
    """[T] a document's forgetting undone before its next turns, pooled over its intervals:
    Σ(l_max − l_before) / Σ(l_max − l_after); NaN for a document with no interval or almost no
    forgetting (under MIN_FORGETTING of its mean l_after)."""
    c = recovery_components(loss_eval, schedule_doc)
    out = np.full(c.l_max.shape[1], np.nan)
    for t in range(c.l_max.shape[1]):
        have = np.isfinite(c.l_max[:, t])
        if not have.any():
            continue
        forgot = (c.l_max[have, t] - c.l_after[have, t]).sum()
        if forgot > MIN_FORGETTING * abs(c.l_after[have, t].sum()):
            out[t] = (c.l_max[have, t] - c.l_before[have, t]).sum() / forgot
    return out
