"""The schedule of a run as one object: which document each episode trains, in which epoch and at
which position, where epochs begin and end, and which documents repeat.

Probes read epochs from here, never as "T episodes": an insert-order run (App. B.7) has epochs of
different lengths and one-off documents, a partial-shuffle run moves documents within an epoch.
Episodes are 1-based (episode k is ``doc[k - 1]``), epochs 1-based, documents 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class Schedule:
    doc: np.ndarray  # int32 [K] document trained in episode k (index k - 1)
    epoch: np.ndarray  # int32 [K] epoch of episode k, 1-based, non-decreasing
    n_docs: int  # T: documents in the run (some may be one-off or never trained)

    def __post_init__(self) -> None:
        object.__setattr__(self, "doc", np.asarray(self.doc, dtype=np.int32))
        object.__setattr__(self, "epoch", np.asarray(self.epoch, dtype=np.int32))
        assert self.doc.shape == self.epoch.shape, (self.doc.shape, self.epoch.shape)
        assert (np.diff(self.epoch) >= 0).all(), "epochs must not decrease"

    def __len__(self) -> int:
        return len(self.doc)

    @property
    def n_episodes(self) -> int:
        return len(self.doc)

    @property
    def n_epochs(self) -> int:
        return int(self.epoch.max()) if len(self.epoch) else 0

    def head(self, n_episodes: int) -> Schedule:
        """The first ``n_episodes`` episodes (a run that stopped early)."""
        return Schedule(self.doc[:n_episodes], self.epoch[:n_episodes], self.n_docs)

    # --- epochs ---------------------------------------------------------------------------

    @cached_property
    def epoch_starts(self) -> np.ndarray:
        """[E] first episode (1-based) of each epoch."""
        return np.array([int(np.argmax(self.epoch == e)) + 1 for e in range(1, self.n_epochs + 1)], dtype=int)

    @cached_property
    def epoch_ends(self) -> np.ndarray:
        """[E] last episode (1-based) of each epoch."""
        return np.array(
            [len(self.epoch) - int(np.argmax(self.epoch[::-1] == e)) for e in range(1, self.n_epochs + 1)],
            dtype=int,
        )

    @property
    def epoch_lengths(self) -> np.ndarray:
        """[E] episodes per epoch."""
        return self.epoch_ends - self.epoch_starts + 1

    @property
    def cycle_length(self) -> float:
        """Mean episodes per epoch: T for cyclic and shuffled orders, the mean epoch length otherwise.
        A complete first epoch decides when later ones are cut short by a stop."""
        lengths = self.epoch_lengths
        return (
            float(lengths[:-1].mean())
            if len(lengths) > 1
            else float(lengths[0])
            if len(lengths)
            else float(self.n_docs)
        )

    @cached_property
    def position(self) -> np.ndarray:
        """[K] 0-based position of episode k within its epoch."""
        return (
            np.arange(1, len(self.doc) + 1) - self.epoch_starts[self.epoch - 1]
            if len(self.doc)
            else np.zeros(0, int)
        )

    def epoch_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Epoch of eval-matrix rows (row k is after episode k; row 0, before training, is epoch 0)."""
        rows = np.asarray(rows, dtype=int)
        return np.where(rows > 0, self.epoch[np.clip(rows, 1, None) - 1], 0)

    def episodes_in_epochs(self, episodes) -> np.ndarray:
        """Episodes (rows) on an axis in epochs that respects each epoch's own length: the end of
        epoch e sits at e, and the episodes of an epoch are evenly spaced inside it."""
        episodes = np.asarray(episodes, dtype=np.float64)
        if not len(self.doc):
            return episodes / max(self.n_docs, 1)
        bounds = np.concatenate([[0], self.epoch_ends])  # episode count at the end of epoch 0..E
        return np.interp(episodes, bounds, np.arange(len(bounds)), right=np.nan)

    # --- documents ------------------------------------------------------------------------

    def episodes_of(self, doc: int) -> np.ndarray:
        """1-based episodes in which ``doc`` was trained, in order."""
        return np.flatnonzero(self.doc == doc) + 1

    @cached_property
    def repeating_docs(self) -> np.ndarray:
        """Documents trained in every epoch, in the order of their first training. All T for the
        cyclic and shuffled orders; the repeating block for the insert order."""
        if not len(self.doc):
            return np.zeros(0, dtype=int)
        first_epoch = self.doc[self.epoch == 1]
        keep = [
            d
            for d in dict.fromkeys(first_epoch.tolist())
            if all((self.doc[self.epoch == e] == d).any() for e in range(1, self.n_epochs + 1))
        ]
        return np.asarray(keep, dtype=int)

    @property
    def is_cyclic(self) -> bool:
        """Every epoch trains the same documents in the same order."""
        if not len(self.doc):
            return False
        first = self.doc[self.epoch == 1]
        return all(
            np.array_equal(self.doc[self.epoch == e], first[: (self.epoch == e).sum()])
            for e in range(2, self.n_epochs + 1)
        )
