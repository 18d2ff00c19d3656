"""The one episode step: M gradient steps on one document per member, batch size 1.

Everything that decides what a step does — the learning-rate schedule, gradient clipping, the
optimizer-state policy, the frozen parameters (absent from the optimizer), the task's data
randomness drawn from each run's generator — is applied here and only here, for one model or S
stacked ones alike. What differs between those is behind the members strategy
(``trainer.members``: ``Single`` or ``Stacked``): the loss of a step, the per-layer norms, clipping
and evaluation. The loop, ``--resume`` and every replay of training (pairwise recovery, batched
seeds) call ``train_episode``; nothing else takes a step, so a replay from a checkpoint trains
exactly as the run did.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from arprobe.tasks.base import Task


@dataclass(frozen=True)
class TrainingRules:
    """How every episode trains, from the run config and the length of its schedule."""

    steps_per_doc: int  # M
    total_steps: int  # M times the planned episodes: the length of the lr schedule
    lr: float
    min_lr: float
    lr_schedule: str  # constant | cosine
    grad_clip: float  # 0: off
    reset_optimizer: bool  # fresh optimizer state at the start of every episode (paper)

    @classmethod
    def from_config(cls, cfg, n_episodes: int) -> TrainingRules:
        o, M = cfg.optim, cfg.schedule.steps_per_doc
        return cls(
            steps_per_doc=M,
            total_steps=n_episodes * M,
            lr=o.lr,
            min_lr=o.min_lr,
            lr_schedule=o.lr_schedule,
            grad_clip=o.grad_clip,
            reset_optimizer=o.reset_per_doc,
        )

    def lr_at(self, step: int) -> float:
        """Learning rate of global step ``step`` (0-based): constant, or cosine from lr to min_lr."""
        if self.lr_schedule == "constant" or self.total_steps <= 1:
            return self.lr
        cos = 1 + math.cos(math.pi * step / (self.total_steps - 1))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * cos


@dataclass
class EpisodeLog:
    losses: torch.Tensor  # [S, M] training loss of each member's steps (on device)
    lrs: np.ndarray  # float32 [M], shared by the members
    grad_norms: torch.Tensor | None  # [S, M, L] per-layer gradient norms before clipping, if asked


class Members(Protocol):
    """What differs between training one plain model and S stacked ones (``trainer.members``)."""

    S: int  # members
    optimizer: torch.optim.Optimizer  # one optimizer over every member's trainable parameters

    def loss(self, tasks: list[Task], batches: list[dict]) -> torch.Tensor:
        """[S] each member's loss on its own batch, with a graph to every member's parameters."""

    def clip(self, max_norm: float) -> None:
        """``clip_grad_norm_`` of every member over its own trainable parameters."""


# The released code's no-decay rule: parameter names containing one of these. In GPT-NeoX that is
# every bias and the final layer norm's weight (its block norms are "input_layernorm"); in GPT-2
# only the biases (its norms are "ln_1", "ln_2", "ln_f").
RELEASED_NO_DECAY = ("bias", "layer_norm.weight")


def decays(name: str, param: torch.nn.Parameter, rule: str = "arprobe") -> bool:
    """Whether weight decay applies to parameter ``name``.

    ``"arprobe"``: every parameter with two or more dimensions (weight matrices, embeddings);
    none with fewer (biases, LayerNorm weights) — the common convention. ``"authors"``: every
    parameter whose name contains none of ``RELEASED_NO_DECAY``.
    """
    if rule == "authors":
        return not any(part in name for part in RELEASED_NO_DECAY)
    assert rule == "arprobe", f"unknown weight-decay rule {rule!r}"
    return param.dim() >= 2


def make_optimizer(
    model: torch.nn.Module, name: str, lr: float, weight_decay: float, *, decay_rule: str = "arprobe"
) -> torch.optim.Optimizer:
    """The run's optimizer over the trainable (``requires_grad``) parameters: frozen ones are never
    in it, so no step can move them. With weight decay, two parameter groups: decayed and not
    (``decays`` with ``decay_rule``, the run's ``compat``); without, the one group of all."""
    trainable = [(n, p, p) for n, p in model.named_parameters() if p.requires_grad]
    return optimizer_over(trainable, name, lr, weight_decay, decay_rule=decay_rule)


def optimizer_over(
    trainable: list[tuple[str, torch.Tensor, torch.Tensor]],
    name: str,
    lr: float,
    weight_decay: float,
    *,
    decay_rule: str = "arprobe",
) -> torch.optim.Optimizer:
    """``make_optimizer`` over (name, the member's parameter, the tensor stepped) triples: the decay
    rule is decided on the member's parameter, the optimizer steps the other (the same tensor for a
    plain model; the stacked [S, ...] leaf for stacked members, one dimension more)."""
    params = [leaf for _, _, leaf in trainable]
    if weight_decay:
        decayed = [decays(n, p, decay_rule) for n, p, _ in trainable]
        groups = [
            {"params": [t for (_, _, t), d in zip(trainable, decayed) if d], "weight_decay": weight_decay},
            {"params": [t for (_, _, t), d in zip(trainable, decayed) if not d], "weight_decay": 0.0},
        ]
        params = [g for g in groups if g["params"]]
    # The fused Adam kernel makes one pass over memory instead of ~10: 3.5x faster on CPU,
    # where the optimizer step was a quarter of a small run. Adam, AdamW and SGD update every
    # element from its own gradient and state, so over stacked leaves they are S optimizers.
    if name == "adam":
        adam = torch.optim.AdamW if weight_decay else torch.optim.Adam
        return adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=True)


def train_episode(
    members: Members,
    tasks: list[Task],
    docs: list[int],
    *,
    episode: int,  # 1-based: where the episode sits in the lr schedule
    rules: TrainingRules,
    generators: list[torch.Generator],
    grad_norms: Callable[[], torch.Tensor] | None = None,  # [S, L], read after backward, before clipping
) -> EpisodeLog:
    """M steps of member s on document ``docs[s]`` of ``tasks[s]``, its data randomness drawn from
    ``generators[s]``; returns the step losses [S, M] (and gradient norms [S, M, L] if asked)."""
    optimizer, M = members.optimizer, rules.steps_per_doc
    assert len(tasks) == len(docs) == len(generators) == members.S
    if rules.reset_optimizer:
        optimizer.state.clear()  # forget Adam's moments and step count, as a fresh optimizer would
    losses, norms, lrs = [], [], np.zeros(M, dtype=np.float32)
    for j in range(M):
        lr = rules.lr_at((episode - 1) * M + j)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = members.loss(tasks, [t.training_batch(d, g) for t, d, g in zip(tasks, docs, generators)])
        optimizer.zero_grad(set_to_none=True)
        # d sum / d loss_s = 1: every member's gradient is its own loss's (for S = 1, exactly the
        # backward of the one loss)
        loss.sum().backward()
        if grad_norms is not None:
            norms.append(grad_norms())
        if rules.grad_clip:
            members.clip(rules.grad_clip)
        optimizer.step()
        losses.append(loss.detach())
        lrs[j] = lr
    return EpisodeLog(
        losses=torch.stack(losses, 1).float(),
        lrs=lrs,
        grad_norms=torch.stack(norms, 1) if norms else None,
    )
