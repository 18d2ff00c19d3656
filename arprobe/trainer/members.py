"""The members strategy of the one episode step: what differs between training one plain model and
S models of one architecture stacked as one vmapped model.

``Single`` is a plain module (S = 1): Hugging Face's own kernels, ``torch.compile`` if the run asks.
``Stacked`` is S members whose parameters live in stacked [S, ...] leaves (``trainer.batched``):
seeds trained together and pairwise recovery's replays. Both give the loss of a step [S], the
per-layer gradient norms [S, L], clipping per member, the one optimizer over every member, the
eval rows [S, T], each member's view of the optimizer state (what a checkpoint keeps), and loading
a stored state into every member. The rules themselves (lr schedule, reset of the optimizer state,
the order of norms, clipping and step, the generators) are ``trainer.episode.train_episode``'s,
the same for both.

Which runs may be stacked: configs equal except for ``BATCHABLE`` — the seed (documents, init,
schedule, data randomness), the order of the documents and the data randomness — whose schedules
have the same number of episodes. Everything else changes a shape, the lr (one optimizer steps
all members with one lr), the step count or the recording. Text tasks only (the stacked eval
computes text losses).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

from arprobe.errors import UserError
from arprobe.tasks.base import Task
from arprobe.tasks.registry import task_class
from arprobe.trainer.batched import (
    GroupNorms,
    MemberOptimizer,
    StackedModels,
    clip_per_member,
    evaluate_members,
    quiet_vmap,
    set_optimizer_state,
)
from arprobe.trainer.checkpoints import restore_state
from arprobe.trainer.config import RunConfig
from arprobe.trainer.episode import optimizer_over
from arprobe.values import flatten

# Options that may differ between runs trained as one stacked model.
BATCHABLE = (
    "seed",
    "name",
    "out",
    "schedule.order",
    "schedule.shuffle_until",
    "data.mask_prob",
    "data.max_shift",
)


class Single:
    """One plain module (S = 1), trained with its own kernels."""

    S = 1
    feeds_eval_hooks = True  # its eval forward runs the module itself: recorded activations come from it

    def __init__(self, model: torch.nn.Module, cfg: RunConfig, *, compile: bool = False):
        o = cfg.optim
        trainable = [(n, p, p) for n, p in model.named_parameters() if p.requires_grad]
        self.modules = [model]
        self.optimizer = optimizer_over(trainable, o.name, o.lr, o.weight_decay, decay_rule=cfg.compat)
        self.trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        # The compiled module shares the model's parameters; only the training forward goes through
        # it (eval, recordings and hooks see the plain model, so they never trigger a recompile).
        self.train_model = torch.compile(model) if compile else model

    def loss(self, tasks: list[Task], batches: list[dict]) -> torch.Tensor:
        return tasks[0].batch_loss(self.train_model, batches[0]).unsqueeze(0)  # [1]

    def grad_norms(self, groups: dict[str, list[str]], device: torch.device) -> Callable[[], torch.Tensor]:
        return _ModuleNorms(self.modules[0], groups, device)

    def clip(self, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)

    def evaluate(self, tasks: list[Task], after_batches: list | None = None) -> torch.Tensor:
        """[1, T] the eval row; ``after_batches[0]`` sees every eval batch (recorded activations)."""
        after = after_batches[0] if after_batches else None
        return tasks[0].eval_losses(self.modules[0], after)[None]

    def member_optimizer(self, s: int) -> torch.optim.Optimizer:
        assert s == 0
        return self.optimizer

    def load(self, state: dict) -> None:
        """The model and kept optimizer state to a stored state (``checkpoints.capture_state``)."""
        restore_state(state, self.modules[0], self.optimizer)


class Stacked:
    """S member modules stacked into one vmapped model (``trainer.batched.StackedModels``); each
    member module's parameters become views of the stacked leaves, so recorders and checkpoints
    read the members as ordinary models."""

    feeds_eval_hooks = False  # the vmapped eval runs a functional copy: hooks on a member see nothing

    def __init__(self, models: list[torch.nn.Module], cfg: RunConfig):
        o, stack = cfg.optim, StackedModels(models)
        self.stack = stack
        trainable = [(n, stack.member_param(n), stack.params[n]) for n in stack.trainable()]
        self.S, self.modules = stack.S, stack.members
        self.optimizer = optimizer_over(trainable, o.name, o.lr, o.weight_decay, decay_rule=cfg.compat)

    def loss(self, tasks: list[Task], batches: list[dict]) -> torch.Tensor:
        stack, task = self.stack, tasks[0]  # the loss is a function of the batch: any member's task

        def member_loss(params, batch):
            return task.batch_loss(stack.functional(params), batch)

        batch = {k: torch.stack([b[k] for b in batches]) for k in batches[0]}
        with quiet_vmap():
            return torch.vmap(member_loss)(stack.logical(stack.params), batch)  # [S]

    def grad_norms(self, groups: dict[str, list[str]], device: torch.device) -> Callable[[], torch.Tensor]:
        return GroupNorms(self.stack, groups, device)

    def clip(self, max_norm: float) -> None:
        clip_per_member(self.stack, max_norm)

    def evaluate(self, tasks: list[Task], after_batches: list | None = None) -> torch.Tensor:
        """[S, T] every member's eval row on its own task's documents."""
        return evaluate_members(self.stack, tasks)

    def member_optimizer(self, s: int) -> MemberOptimizer:
        return MemberOptimizer(self.stack, self.optimizer, s)

    def load(self, state: dict) -> None:
        """Every member to one stored state: parameters and kept optimizer state."""
        self.stack.load(state["model"])
        set_optimizer_state(self.stack, self.optimizer, state["optim"])


class _ModuleNorms:
    """[1, L] gradient norm of every layer group of one module, computed on device without a sync."""

    def __init__(self, model: torch.nn.Module, groups: dict[str, list[str]], device: torch.device):
        params = dict(model.named_parameters())
        self.params = [params[n] for g in groups.values() for n in g if params[n].requires_grad]
        owner = [i for i, g in enumerate(groups.values()) for n in g if params[n].requires_grad]
        self.owner = torch.tensor(owner, dtype=torch.long, device=device)
        self.zeros = torch.zeros(len(groups), device=device)

    def __call__(self) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else p.new_zeros(1) for p in self.params]
        if self.zeros.device.type == "cpu":
            # BLAS dot products: half the time of _foreach_norm on CPU (3 -> 1.3 ms a step, 5M params)
            squares = torch.stack([torch.dot(g, g) for g in (g.reshape(-1).float() for g in grads)])
        else:
            squares = torch.stack(torch._foreach_norm(grads)).float().square_()  # one fused kernel
        return self.zeros.index_add(0, self.owner, squares).sqrt_()[None]


def batch_key(cfg: RunConfig) -> str:
    """Runs with equal keys may be trained as one stacked model (their schedule lengths permitting)."""
    flat = flatten(cfg.to_dict())
    return json.dumps({k: v for k, v in flat.items() if k not in BATCHABLE}, sort_keys=True, default=str)


def check_batchable(cfgs: list[RunConfig]) -> None:
    """A clear error unless ``cfgs`` may be trained as one stacked model."""
    first = flatten(cfgs[0].to_dict())
    for cfg in cfgs[1:]:
        flat = flatten(cfg.to_dict())
        differing = sorted(
            k for k in set(first) | set(flat) if k not in BATCHABLE and first.get(k) != flat.get(k)
        )
        if differing:
            allowed = ", ".join(k for k in BATCHABLE if k not in ("name", "out"))
            raise UserError(
                f"Runs trained as one batched model may differ only in {allowed}; "
                f"these also differ in {', '.join(differing[:3])}."
            )
    if not task_class(cfgs[0].task).stacks:
        raise UserError(
            f"Batched runs support the text-lm task only, not {cfgs[0].task}; run them one by one."
        )
    if len({str(c.run_dir) for c in cfgs}) != len(cfgs):
        raise UserError("Batched runs need one folder each; give them different names.")


def check_schedule_lengths(lengths: list[int]) -> None:
    """Stacked members step together: one schedule length."""
    if len(set(lengths)) > 1:
        raise UserError(
            f"Batched runs need schedules of one length; these plan {sorted(set(lengths))} episodes "
            "(schedule.order insert draws it per seed); run them one by one."
        )


def make_members(models: list[torch.nn.Module], cfg: RunConfig) -> Single | Stacked:
    """One model: ``Single`` (compiled if ``cfg.model.compile``); several: ``Stacked``. Build it
    before anything keeps a model's parameters (stacking rebinds them)."""
    if len(models) == 1:
        return Single(models[0], cfg, compile=cfg.model.compile)
    return Stacked(models, cfg)
