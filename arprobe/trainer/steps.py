"""The small public pieces of training: loss of a batch of documents, the eval matrix row, one
episode of M steps. The loop uses them, and so do probes that must train (pairwise recovery).

Loss everywhere: mean per-token cross-entropy over non-pad target tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE = -100


def doc_losses(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-document loss [B] of ``tokens`` [B, C] whose first ``lengths`` [B] tokens are real.

    Documents are right-padded, so causal attention never lets a real token see a pad and no
    attention mask is needed.
    """
    logits = model(input_ids=tokens).logits[:, :-1].float()  # [B, C-1, V]
    targets = tokens[:, 1:]
    positions = torch.arange(targets.shape[1], device=tokens.device)
    valid = positions[None, :] < (lengths[:, None] - 1)  # target j is real if j + 1 < length
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [B, C-1]
    return (nll * valid).sum(1) / valid.sum(1).clamp(min=1)


def eval_batch_size(configured: int, context_length: int) -> int:
    """Documents per eval forward: the configured size, or about 16k tokens per batch."""
    return configured or max(1, 16384 // context_length)


@torch.inference_mode()
def evaluate_docs(model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Loss of every document [T] in batches of ``batch_size`` — one row of the eval matrix.

    The model is put in eval mode for the pass; dropout is off in arprobe runs anyway, so this
    only matters for user models that keep it.
    """
    was_training = model.training
    model.eval()
    try:
        return torch.cat([doc_losses(model, tokens[i : i + batch_size], lengths[i : i + batch_size])
                          for i in range(0, tokens.shape[0], batch_size)])
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
    logits = model(input_ids=inputs).logits[:, :-1].float()
    return F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=IGNORE)
