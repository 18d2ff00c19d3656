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

from arprobe.trainer.checkpoints import capture_state, keeps_optimizer_state, model_from_info, restore_state
from arprobe.trainer.config import config_from_dict
from arprobe.trainer.episode import TrainingRules, make_optimizer, train_episode


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
        from arprobe.tasks.text import TextLM
        from arprobe.trainer.models import resolve_device

        self.cfg = cfg = config_from_dict(store.config)
        self.episode = episode
        state = store.checkpoint(episode)  # raises a clear error if it was not recorded
        self.device = resolve_device(device if device != "auto" else cfg.model.device)
        self.model = model_from_info(store.model_info, cfg).to(self.device).train()
        o = cfg.optim
        self.optimizer = make_optimizer(self.model, o.name, o.lr, o.weight_decay, decay_rule=cfg.compat)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.rules = TrainingRules.from_config(cfg, len(store.planned_schedule()))
        if steps_per_doc:  # a probe may ask for another M; the lr schedule keeps the run's length
            self.rules = dataclasses.replace(self.rules, steps_per_doc=steps_per_doc)
        self.task = _image_task(store, cfg, self.device, self.model) or TextLM.from_documents(
            _Arrays(store.doc_arrays()),
            cfg,
            device=self.device,
            mask_id=int(store.model_info.get("mask_id", 0)),
            pad_id=store.model_info.get("pad_id"),
        )
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
            self.model,
            self.optimizer,
            self.task,
            doc,
            episode=self.episode + 1 if episode is None else episode,
            rules=self.rules,
            generator=self.generator,
        )
        return log.losses.cpu().numpy()

    def evaluate(self) -> np.ndarray:
        """Loss of every document [T], as in a row of the eval matrix."""
        return self.task.eval_losses(self.model).cpu().numpy()

    def state(self) -> dict:
        """The current state as the store keeps it ({"model", "optim", "rng"})."""
        return copy.deepcopy(capture_state(self.model, self.optimizer, self.generator, self._keep))


def _image_task(store, cfg, device, model):
    """The image task of an image run (rebuilt from the stored documents), None for text."""
    if cfg.task not in ("image-lm", "image-classification"):
        return None
    from arprobe.tasks.image import task_from_store

    dtype = next(model.parameters()).dtype
    return task_from_store(store.doc_arrays(), cfg, store.model_info, device=device, dtype=dtype)


class _Arrays:
    """Attribute view of the store's ``docs`` arrays, as TextLM.from_documents reads them."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.__dict__.update(arrays)


def pairwise_rows(replay: Replay, docs: list[int], batch: int) -> np.ndarray:
    """[len(docs), T]: the eval row after one episode on each of ``docs``, each trained from the
    checkpoint — what ``reset(); train_episode(i); evaluate()`` gives for every i.

    ``batch`` > 1: that many replays at once as one vmapped model (``trainer.batched``), each
    member restored to the checkpoint (parameters, kept optimizer state, RNG) and trained on its
    own document; the rows equal the sequential ones to float tolerance (tests/test_batched.py).
    ``batch`` <= 1, or a task without a batched eval (images): one replay after another.
    """
    from arprobe.tasks.text import TextLM

    if batch <= 1 or not isinstance(replay.task, TextLM):
        rows = []
        for doc in docs:
            replay.reset()
            replay.train_episode(doc)
            rows.append(replay.evaluate())
        replay.reset()
        return np.stack(rows)
    from arprobe.trainer.batched import (
        StackedModels,
        evaluate_members,
        make_stacked_optimizer,
        set_optimizer_state,
        train_batched_episode,
    )

    n = min(batch, len(docs))
    replay.reset()
    stack = StackedModels([copy.deepcopy(replay.model) for _ in range(n)])
    o = replay.cfg.optim
    optimizer = make_stacked_optimizer(stack, o.name, o.lr, o.weight_decay, decay_rule=replay.cfg.compat)
    rng = torch.from_numpy(np.asarray(replay._state["rng"], dtype=np.uint8))
    rows = []
    for lo in range(0, len(docs), n):
        chunk = list(docs[lo : lo + n])
        padded = chunk + [chunk[-1]] * (n - len(chunk))  # a short last chunk: extra members repeat a doc
        stack.load(replay._state["model"])
        set_optimizer_state(stack, optimizer, replay._state["optim"] if replay._keep else {})
        generators = [torch.Generator().set_state(rng) for _ in range(n)]
        train_batched_episode(
            stack,
            optimizer,
            [replay.task] * n,
            padded,
            episode=replay.episode + 1,
            rules=replay.rules,
            generators=generators,
        )
        rows.append(evaluate_members(stack, [replay.task] * n)[: len(chunk)].cpu().numpy())
    return np.concatenate(rows)
