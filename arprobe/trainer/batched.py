"""S models of one architecture trained as one: their parameters stacked along a leading member
axis, the forward ``torch.vmap(functional_call(...))`` over members, each member its own batch.

The machinery of the ``Stacked`` members strategy (``trainer.members``), with which the one episode
step (``trainer.episode.train_episode``) trains seeds together (``loop.run_many``) and pairwise
recovery's replays (T replays from one checkpoint, member i trained on document i).

Why one ordinary optimizer is S optimizers: Adam, AdamW and SGD update every element from that
element's gradient and state alone, so one ``torch.optim.Adam(fused=True)`` over the stacked
leaves [S, ...] is exactly S per-member Adams, as long as the members share lr and step count
(they step together; resetting the state resets all). Only gradient clipping looks across
elements: it is done here per member, over that member's own parameters.

Each member keeps its ordinary ``nn.Module``, whose parameters become views into the stacked
tensors (same storage): every optimizer step shows up in them, so recorders, checkpoints and
hooks work on the member module without copies.

What was measured (torch 2.13 CPU, transformers 5.24, GPT-NeoX): the vmapped forward and backward
run with ``attention_mask`` absent (right-padded documents need none, as in the ordinary loss);
SDPA has no CPU batching rule and falls back to a per-member loop (with a warning), eager attention
batches as bmm, so on CPU the stacked forward uses eager attention. On one CPU thread a vmapped
step of S members costs about what S separate steps cost: the step is compute-bound there (bmm at
the single-thread matmul rate), and vmap adds a copy of every linear layer's weight gradient into
the parameters' layout. The batched path pays off where one step does not fill the device (GPU).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch.func import functional_call

# The batching-rule warning of SDPA on CPU: the fallback (one call per member) is correct.
_SDPA_WARNING = "There is a performance drop because we have not yet implemented the batching rule"


@contextlib.contextmanager
def quiet_vmap():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SDPA_WARNING)
        yield


class StackedModels:
    """S member modules of one architecture whose parameters live in stacked [S, ...] leaves.

    ``members[s]``'s parameters are rebound to views ``stacked[name][s]``; buffers (rotary
    frequencies) are shared from member 0, which must equal the others'. Frozen parameters
    (``requires_grad`` False in the members) stay frozen in the stack.
    """

    def __init__(self, members: list[torch.nn.Module]):
        assert members, "no members"
        self.members = members
        self.S = len(members)
        first = members[0]
        # Tied parameters (GPT-2's embedding and unembedding) appear once, under their first name.
        self.aliases: dict[str, list[str]] = {}
        seen: dict[int, str] = {}
        for name, p in first.named_parameters(remove_duplicate=False):
            owner = seen.setdefault(id(p), name)
            self.aliases.setdefault(owner, []).append(name)
        self.names = list(self.aliases)
        # Linear weights are stored as [S, in, out] leaves (``params``) and used as their transposed
        # view [S, out, in] (``logical``): the weight gradient vmap's bmm produces has the leaf's
        # layout, so autograd accumulates it without a transposing copy (a fifth of a batched step
        # on CPU), and the optimizer still works on contiguous tensors.
        self.transposed = {
            f"{path}.weight" for path, m in first.named_modules() if isinstance(m, torch.nn.Linear)
        } & set(self.names)
        self.params: dict[str, torch.Tensor] = {}
        for name in self.names:
            tensors = [m.get_parameter(name) for m in members]
            shape = tensors[0].shape
            assert all(t.shape == shape for t in tensors), f"members differ in the shape of {name}"
            stacked = torch.stack([t.detach() for t in tensors])
            if name in self.transposed:
                stacked = stacked.transpose(1, 2).contiguous()
            self.params[name] = stacked.requires_grad_(tensors[0].requires_grad)
        for s, member in enumerate(members):
            for name, stacked in self.logical(self.params).items():
                view = torch.nn.Parameter(stacked.detach()[s], requires_grad=stacked.requires_grad)
                for alias in self.aliases[name]:
                    module_path, _, leaf = alias.rpartition(".")
                    setattr(member.get_submodule(module_path), leaf, view)
        self.buffers = {n: b for n, b in first.named_buffers()}
        # A skeleton that functional_call fills with the stacked parameters and the buffers.
        self.base = copy.deepcopy(first).to("meta")
        config = getattr(self.base, "config", None)
        on_cpu = next(iter(self.params.values())).device.type == "cpu"
        if on_cpu and getattr(config, "_attn_implementation", None) == "sdpa":
            # SDPA has no CPU batching rule (vmap loops over members); eager attention batches as bmm,
            # measured ~10% faster per step and eval here, and equal to SDPA to float tolerance.
            config._attn_implementation = "eager"

    def logical(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The members' parameters [S, *member shape] from the stored leaves (views, no copies)."""
        return {n: p.transpose(1, 2) if n in self.transposed else p for n, p in params.items()}

    def member_value(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """One member's slice of a leaf-laid-out tensor (a parameter or its optimizer state), in the
        member parameter's shape."""
        return tensor.t() if name in self.transposed else tensor

    def trainable(self) -> list[str]:
        return [n for n in self.names if self.params[n].requires_grad]

    def member_param(self, name: str) -> torch.Tensor:
        return self.members[0].get_parameter(name)

    def functional(self, params: dict[str, torch.Tensor]) -> Callable:
        """A callable with a model's keyword interface over ``params`` (one member's, inside vmap)."""

        def call(**kwargs):
            return functional_call(self.base, (params, self.buffers), args=(), kwargs=kwargs)

        return call

    @torch.no_grad()
    def load(self, state: dict[str, torch.Tensor | np.ndarray]) -> None:
        """Every member to the same parameters ``state`` (name -> array of one member's shape)."""
        for name, stacked in self.logical(self.params).items():
            value = torch.as_tensor(np.asarray(state[name]), device=stacked.device).to(stacked.dtype)
            stacked.copy_(value.expand_as(stacked))


class MemberOptimizer:
    """Member ``s``'s view of the stacked optimizer's state, in the shape ``capture_state`` reads
    (``state[param] -> {"step", "exp_avg", "exp_avg_sq"}``) keyed by the member's parameters."""

    def __init__(self, stack: StackedModels, optimizer: torch.optim.Optimizer, s: int):
        self.stack, self.optimizer, self.s = stack, optimizer, s

    @property
    def state(self) -> dict:
        member, out = self.stack.members[self.s], {}
        for name in self.stack.trainable():
            kept = self.optimizer.state.get(self.stack.params[name])
            if kept:
                out[member.get_parameter(name)] = {
                    k: (self.stack.member_value(name, v[self.s]) if k != "step" else v)
                    for k, v in kept.items()
                    if k != "max_exp_avg_sq"
                }
        return out


def set_optimizer_state(stack: StackedModels, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Every member's kept Adam state to the stored one (``saved["optim"]``, one member's)."""
    optimizer.state.clear()
    for name in stack.trainable():
        step = saved.get(f"{name}/step")
        if step is None or float(step) <= 0:
            continue
        p = stack.params[name]
        optimizer.state[p] = {
            "step": torch.tensor(float(step), dtype=torch.float32, device=p.device),
            **{key: _repeated(stack, name, saved[f"{name}/{key}"]) for key in ("exp_avg", "exp_avg_sq")},
        }


def _repeated(stack: StackedModels, name: str, value) -> torch.Tensor:
    """One member's array (member shape) in every member's slot of a tensor laid out like the leaf."""
    leaf = stack.params[name]
    out = torch.empty_like(leaf)
    logical = stack.logical({name: out})[name]
    logical.copy_(torch.as_tensor(np.asarray(value), device=leaf.device).to(leaf.dtype).expand_as(logical))
    return out


class GroupNorms:
    """Per-member, per-layer gradient norms [S, L] from the stacked gradients: what
    ``members.Single.grad_norms`` reads from one model, for every member at once."""

    def __init__(self, stack: StackedModels, groups: dict[str, list[str]], device: torch.device):
        self.stack = stack
        self.L = len(groups)
        owner = {n: i for i, g in enumerate(groups.values()) for n in g}
        self.names = [n for n in stack.trainable() if n in owner]
        self.owner = torch.tensor([owner[n] for n in self.names], dtype=torch.long, device=device)

    def __call__(self) -> torch.Tensor:
        S = self.stack.S
        squares = torch.stack(
            [_member_squares(self.stack.params[n].grad, S, self.owner.device) for n in self.names], 1
        )  # [S, P]
        out = squares.new_zeros(S, self.L)
        return out.index_add_(1, self.owner, squares).sqrt_()


def _member_squares(grad: torch.Tensor | None, S: int, device: torch.device) -> torch.Tensor:
    """[S] sum of squares of each member's slice of ``grad``, on ``device`` (the run's, also for a
    parameter without a gradient: a CPU zero would not stack with a GPU run's squares)."""
    if grad is None:
        return torch.zeros(S, device=device)
    flat = grad.reshape(S, -1).float()
    if flat.device.type == "cpu":
        # BLAS dot products, one per member, as Single.grad_norms takes them: 8x faster on
        # CPU than einsum or a batched matmul (which spent a quarter of a batched step here)
        return torch.stack([torch.dot(row, row) for row in flat])
    return torch.linalg.vector_norm(flat, dim=1).square()


@torch.no_grad()
def clip_per_member(stack: StackedModels, max_norm: float) -> None:
    """``clip_grad_norm_`` for every member over its own trainable parameters."""
    grads = [stack.params[n].grad for n in stack.trainable() if stack.params[n].grad is not None]
    if not grads:
        return
    S = stack.S
    total = torch.stack([_member_squares(g, S, g.device) for g in grads]).sum(0).sqrt()  # [S]
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype).view(S, *([1] * (g.dim() - 1))))


@torch.no_grad()
def evaluate_members(stack: StackedModels, tasks: list) -> torch.Tensor:
    """Eval rows [S, T]: every member's loss on each of its own task's clean documents (text
    tasks), ``eval_batch`` tokens' worth of documents of all members per vmapped forward."""
    doc_losses = type(tasks[0]).member_doc_losses  # a stacking task's per-document losses
    S = stack.S
    tokens = torch.stack([t.eval_tokens for t in tasks])  # [S, T, C]
    lengths = torch.stack([t.eval_lengths for t in tasks])  # [S, T]
    ignore_id = tasks[0].ignore_id
    chunk = max(1, tasks[0].eval_batch // S)

    def member_losses(params, tok, length):
        return doc_losses(stack.functional(params), tok, length, ignore_id)

    batched = torch.vmap(member_losses)
    rows = []
    with quiet_vmap():
        for lo in range(0, tokens.shape[1], chunk):
            params = stack.logical({n: p.detach() for n, p in stack.params.items()})
            rows.append(batched(params, tokens[:, lo : lo + chunk], lengths[:, lo : lo + chunk]))
    return torch.cat(rows, 1)
