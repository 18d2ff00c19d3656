"""The training re-evaluation curve: one model's loss on every document against how long ago it
was last trained (the "TREC" of 2025 work on re-evaluating a trained model on its own training
stream), and the anticipation bump a cyclic order predicts just before a document's next turn.

Pure numpy; ``loss_eval`` [K+1, T] is the run's eval matrix (row k: after episode k) and
``schedule_doc`` [K] the 0-based document of each episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def episodes_since_trained(schedule_doc, episode: int, n_docs: int) -> np.ndarray:
    """[T]: for the model after ``episode`` (1-based; 0 = before training), how many episodes ago
    each document was last trained: 0 for the document of ``episode`` itself, NaN for a document
    not trained yet."""
    doc = np.asarray(schedule_doc)[:episode]
    since = np.full(n_docs, np.nan)
    for k in range(episode, 0, -1):  # walk back from the newest episode; first hit is the latest
        t = int(doc[k - 1])
        if np.isnan(since[t]):
            since[t] = episode - k
    return since


@dataclass
class Retrospective:
    """The re-evaluation curve of one or more models, averaged by recency."""

    recency: np.ndarray  # [R] episodes since last trained, 0 .. R-1
    loss: np.ndarray  # [R] mean loss at that recency (NaN where no document had it)
    count: np.ndarray  # [R] how many (model, document) pairs were averaged
    bump: float  # (l_peak − l_oldest) / (l_peak − l_newest): share of the rise undone before the next turn
    peak_recency: int  # recency where the loss peaks
    note: str  # "" or the sentence saying why ``bump`` is undefined


def retrospective(loss_eval, schedule_doc, episodes) -> Retrospective:
    """The re-evaluation curve of the models after each of ``episodes`` (1-based), averaged over
    them by recency. ``bump`` compares the curve's peak with its two ends: 0 when the loss only
    rises with recency (plain forgetting), 1 when the documents trained longest ago — next in a
    cyclic order — are back at the just-trained loss. Undefined (NaN, with the sentence) when the
    curve does not rise above its newest point by 1% of it."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    n_docs = loss_eval.shape[1]
    pairs = [
        (since, loss_eval[k])
        for k in episodes
        for since in [episodes_since_trained(schedule_doc, int(k), n_docs)]
    ]
    longest = int(max(np.nanmax(s) for s, _ in pairs if np.isfinite(s).any()))
    total, count = np.zeros(longest + 1), np.zeros(longest + 1, dtype=np.int64)
    for since, row in pairs:
        seen = np.isfinite(since) & np.isfinite(row)
        np.add.at(total, since[seen].astype(np.int64), row[seen])
        np.add.at(count, since[seen].astype(np.int64), 1)
    with np.errstate(invalid="ignore"):
        curve = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    finite = np.flatnonzero(np.isfinite(curve))
    newest, oldest = curve[finite[0]], curve[finite[-1]]
    peak = int(finite[np.argmax(curve[finite])])
    rise = curve[peak] - newest
    if not rise > 0.01 * abs(newest):
        note = (
            f"the loss never rises more than 1% above its value just after training ({newest:.3f}), "
            "so there is no forgetting for a bump to undo"
        )
        return Retrospective(np.arange(longest + 1), curve, count, float("nan"), peak, note)
    return Retrospective(np.arange(longest + 1), curve, count, float((curve[peak] - oldest) / rise), peak, "")
