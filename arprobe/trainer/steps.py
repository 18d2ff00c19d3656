"""The small public pieces of training: loss of a batch of documents, the eval matrix row, one
episode of M steps. The loop uses them, and so do probes that must train (pairwise recovery).

Loss everywhere: mean per-token cross-entropy over non-pad target tokens.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

IGNORE = -100


def doc_losses(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-document loss [B] of ``tokens`` [B, C] whose first ``lengths`` [B] tokens are real.

    Documents are right-padded, so causal attention never lets a real token see a pad and no
    attention mask is needed.
    """
    return losses_from_logits(model(input_ids=tokens).logits, tokens, lengths)


def losses_from_logits(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-document loss [B] from ``logits`` [B, C, V] of ``tokens`` [B, C] with ``lengths`` [B] real tokens."""
    B, C = tokens.shape
    positions = torch.arange(C, device=tokens.device)
    valid = positions[None, :] < (lengths[:, None] - 1)  # the target of position j (token j + 1) is real
    targets = torch.where(valid, F.pad(tokens[:, 1:], (0, 1)), IGNORE)  # [B, C], last position never a target
    nll = _token_nll(logits, targets).view(B, C)
    return nll.sum(1) / valid.sum(1).clamp(min=1)


def _token_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Cross-entropy [B·C] of ``logits`` [B, C, V] against ``targets`` [B, C] (0 where a target is
    IGNORE), or its mean over the other targets with ``reduction="mean"``.

    On the contiguous [B·C, V] view: log-softmax along the last axis, no copy of the logits.
    Slicing off the last position first and reducing over a transposed axis, as before, was
    4.5x slower on CPU (a quarter of an eval pass; docs/performance.md).
    """
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        reduction=reduction,
        ignore_index=IGNORE,
    )


def eval_batch_size(configured: int, context_length: int) -> int:
    """Documents per eval forward: the configured size, or about 16k tokens per batch."""
    return configured or max(1, 16384 // context_length)


@torch.inference_mode()
def evaluate_docs(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    batch_size: int,
    after_batch: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Loss of every document [T] in batches of ``batch_size`` — one row of the eval matrix.

    ``after_batch(start, stop)``, if given, runs after the forward of documents start..stop-1
    (the recorder reads activation hooks there instead of running its own forward).
    The model is put in eval mode for the pass; dropout is off in arprobe runs anyway, so this
    only matters for user models that keep it.
    """
    was_training = model.training
    model.eval()
    try:
        losses = []
        for i in range(0, tokens.shape[0], batch_size):
            losses.append(doc_losses(model, tokens[i : i + batch_size], lengths[i : i + batch_size]))
            if after_batch is not None:
                after_batch(i, i + len(losses[-1]))
        return torch.cat(losses)
    finally:
        model.train(was_training)


def lr_at(step: int, total_steps: int, lr: float, min_lr: float, schedule: str) -> float:
    """Learning rate of global step ``step`` (0-based): constant, or cosine from lr to min_lr."""
    if schedule == "constant" or total_steps <= 1:
        return lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * step / (total_steps - 1)))


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    # The fused Adam kernel makes one pass over memory instead of ~10: 3.5x faster on CPU,
    # where the optimizer step was a quarter of a small run.
    if name == "adam":
        adam = torch.optim.AdamW if weight_decay else torch.optim.Adam
        return adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=True)


def reset_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Forget Adam's moments and step count, as a fresh optimizer per document would."""
    optimizer.state.clear()


def training_window(
    tokens: torch.Tensor,  # [C + s] one document, padded
    length: int,
    context_length: int,
    *,
    max_shift: int,
    mask_prob: float,
    mask_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [1, C], labels [1, C]) for one step, with the paper's data randomness (Sec. 3.3).

    The window starts at a random offset in [0, s] (kept inside the real tokens); inputs are
    replaced by ``mask_id`` with probability p while labels keep the real next tokens.
    """
    offset = 0
    if max_shift:
        top = max(0, min(max_shift, length - 2))
        offset = int(torch.randint(0, top + 1, (1,), generator=generator))
    window = tokens[offset : offset + context_length]
    real = min(context_length, length - offset)
    labels = window.clone()
    labels[real:] = IGNORE
    inputs = window
    if mask_prob:
        hit = torch.rand(window.shape, generator=generator) < mask_prob
        inputs = torch.where(hit.to(window.device), torch.full_like(window, mask_id), window)
    return inputs[None], labels[None]


def step_loss(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over non-ignored labels of one [1, C] window."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # position j predicts label j + 1
    return _token_nll(model(input_ids=inputs).logits, targets, reduction="mean")


def per_document_grads(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],  # parameter name in ``model`` -> the parameter
    tokens: torch.Tensor,  # [T, C]
    lengths: torch.Tensor,  # [T]
    *,
    chunk: int,
    method: str = "vmap",
) -> Iterator[list[torch.Tensor]]:
    """Gradient of every document's loss w.r.t. ``params`` at the current weights, ``chunk``
    documents at a time: yields one [n, *shape] tensor per parameter, in ``params`` order.

    ``vmap``: per-sample gradients in one vectorised pass per chunk (``torch.func``: functional_call
    + vmap(grad)); on CPU 1.9x faster than ``loop`` at C = 64 and 1.0-1.25x at C = 256, never
    slower (docs/performance.md). ``loop``: one forward and backward per document with
    ``torch.autograd.grad``, for models whose forward vmap cannot batch.
    """
    names, T = list(params), tokens.shape[0]
    if method == "loop":
        for lo in range(0, T, chunk):
            rows = []
            for t in range(lo, min(lo + chunk, T)):
                loss = doc_losses(model, tokens[t : t + 1], lengths[t : t + 1])[0]
                grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
                rows.append(
                    [g if g is not None else torch.zeros_like(params[n]) for g, n in zip(grads, names)]
                )
            yield [torch.stack(column) for column in zip(*rows)]
        return
    assert method == "vmap", f"unknown per-document gradient method {method!r}"
    from torch.func import functional_call, grad, vmap

    def loss_of(p: dict[str, torch.Tensor], doc: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, args=(), kwargs={"input_ids": doc[None]}).logits
        return losses_from_logits(logits, doc[None], length[None])[0]

    detached = {n: params[n].detach() for n in names}
    per_doc = vmap(grad(loss_of), in_dims=(None, 0, 0))
    for lo in range(0, T, chunk):
        # grad() differentiates w.r.t. ``detached`` whatever the outer mode; no_grad keeps autograd
        # from also recording a graph for every other (requires_grad) weight of the model.
        with torch.no_grad(), warnings.catch_warnings():
            # CPU attention has no vmap batching rule; the per-document fallback is measured and fine.
            warnings.filterwarnings(
                "ignore",
                message="There is a performance drop because we have not yet implemented the batching rule",
            )
            grads = per_doc(detached, tokens[lo : lo + chunk], lengths[lo : lo + chunk])
        yield [grads[n] for n in names]
