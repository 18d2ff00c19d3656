"""The public training functions for probes that must train (pairwise recovery, replays).

A probe reads a store and replays training from one of its checkpoints without importing the
loop; every step goes through the run's own episode step, so freezing, the lr schedule,
clipping, the optimizer-state policy and the data randomness are the run's:

    replay = Replay(store, episode)          # the model, optimizer and RNG at that checkpoint
    before = replay.evaluate()               # [T]
    for i in docs:
        replay.reset()                       # back to the checkpoint (from memory)
        replay.train_episode(i)              # the episode after the checkpoint, on document i
        after = replay.evaluate()
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from arprobe.models.text import resolve_device
from arprobe.tasks.registry import task_class
from arprobe.trainer.checkpoints import capture_state, keeps_optimizer_state, model_from_info, restore_state
from arprobe.trainer.config import config_from_dict
from arprobe.trainer.episode import TrainingRules, train_episode
from arprobe.trainer.members import Single, Stacked


class Replay:
    """A run's training state at its checkpoint after ``episode``, able to train as the run did."""

    def __init__(
        self,
        store,
        episode: int,
        device: str = "auto",
        steps_per_doc: int | None = None,
        seed: int | None = None,
    ):
        self.cfg = cfg = config_from_dict(store.config)
        self.episode = episode
        state = store.checkpoint(episode)  # raises a clear error if it was not recorded
        self.device = resolve_device(device if device != "auto" else cfg.model.device)
        self.model = model_from_info(store.model_info, cfg).to(self.device).train()
        self.members = Single(self.model, cfg)
        self.optimizer = self.members.optimizer
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rules = TrainingRules.from_config(cfg, len(store.planned_schedule()))
        if steps_per_doc:  # a probe may ask for another M; the lr schedule keeps the run's length
            self.rules = dataclasses.replace(self.rules, steps_per_doc=steps_per_doc)
        self.task = task_class(cfg.task).from_store(store, cfg, model=self.model, device=self.device)
        if seed is not None:  # the data randomness from this seed instead of the run's RNG state
            state = {**state, "rng": torch.Generator().manual_seed(seed).get_state().numpy()}
        self._state = state
        self._keep = keeps_optimizer_state(cfg) and bool(state["optim"])
        self.reset()

    def reset(self) -> None:
        """Back to the checkpoint: parameters, kept optimizer state and RNG (no file read)."""
        restore_state(self._state, self.model, self.optimizer, self.generator)

    def train_episode(self, doc: int, episode: int | None = None) -> np.ndarray:
        """One episode on ``doc`` (by default the episode right after the checkpoint, for its place
        in the lr schedule). Returns the step losses [M]."""
        log = train_episode(
            self.members,
            [self.task],
            [doc],
            episode=self.episode + 1 if episode is None else episode,
            rules=self.rules,
            generators=[self.generator],
        )
        return log.losses[0].cpu().numpy()

    def evaluate(self) -> np.ndarray:
        """Loss of every document [T], as in a row of the eval matrix."""
        return self.task.eval_losses(self.model).cpu().numpy()

    def state(self) -> dict:
        """The current state as the store keeps it ({"model", "optim", "rng"})."""
        return copy.deepcopy(capture_state(self.model, self.optimizer, self.generator, self._keep))


def pairwise_rows(replay: Replay, docs: list[int], batch: int) -> np.ndarray:
    """[len(docs), T]: the eval row after one episode on each of ``docs``, each trained from the
    checkpoint — what ``reset(); train_episode(i); evaluate()`` gives for every i.

    ``batch`` > 1: that many replays at once as one vmapped model (``trainer.batched``), each
    member restored to the checkpoint (parameters, kept optimizer state, RNG) and trained on its
    own document; the rows equal the sequential ones to float tolerance (tests/trainer/test_batched.py).
    ``batch`` <= 1, or a task whose members do not stack (``Task.stacks``): one replay after another.
    """
    if batch <= 1 or not replay.task.stacks:
        rows = []
        for doc in docs:
            replay.reset()
            replay.train_episode(doc)
            rows.append(replay.evaluate())
        replay.reset()
        return np.stack(rows)
    n = min(batch, len(docs))
    replay.reset()
    members = Stacked([copy.deepcopy(replay.model) for _ in range(n)], replay.cfg)
    rng = torch.from_numpy(np.asarray(replay._state["rng"], dtype=np.uint8))
    rows = []
    for lo in range(0, len(docs), n):
        chunk = list(docs[lo : lo + n])
        padded = chunk + [chunk[-1]] * (n - len(chunk))  # a short last chunk: extra members repeat a doc
        members.load(replay._state)
        train_episode(
            members,
            [replay.task] * n,
            padded,
            episode=replay.episode + 1,
            rules=replay.rules,
            generators=[torch.Generator().set_state(rng) for _ in range(n)],
        )
        rows.append(members.evaluate([replay.task] * n)[: len(chunk)].cpu().numpy())
    return np.concatenate(rows)
