"""Small public training functions for probes that must train (pairwise recovery).

A probe reads a store, asks for the model at a checkpoint, and takes steps on documents
without importing the loop:

    model, ctx = model_from_checkpoint(store, episode)
    snapshot = snapshot_params(model)
    for i in docs:
        restore_params(model, snapshot)
        train_on_document(model, ctx, i)
        losses = evaluate(model, ctx)          # [T]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from arprobe.trainer import steps
from arprobe.trainer.config import RunConfig, config_from_dict


@dataclass
class TrainingContext:
    cfg: RunConfig
    tokens: torch.Tensor  # int64 [T, C + s] on device
    lengths: torch.Tensor  # int64 [T]
    device: torch.device
    mask_id: int


def model_from_checkpoint(
    store, episode: int, device: str = "auto"
) -> tuple[torch.nn.Module, TrainingContext]:
    """The run's model with the weights of its checkpoint at ``episode``, in train mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from arprobe.trainer.models import resolve_device

    cfg = config_from_dict(store.config)
    checkpoint = store.checkpoint(episode)  # raises a clear error if it was not recorded
    info = store.model_info
    hf_config = dict(info["hf_config"])
    model_type = hf_config.pop("model_type")
    config = AutoConfig.for_model(
        model_type,
        **{k: v for k, v in hf_config.items() if k not in ("architectures", "transformers_version")},
    )
    model = AutoModelForCausalLM.from_config(config)
    state = {name: torch.from_numpy(np.asarray(value)) for name, value in checkpoint["model"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, f"checkpoint has parameters the model lacks: {unexpected[:3]}"
    # Only non-persistent buffers and tied weights may be absent from a parameter checkpoint.
    tied = {n for n in missing if n.endswith("lm_head.weight") or "embed_out" in n}
    assert not (set(missing) - tied), f"checkpoint lacks parameters: {sorted(set(missing) - tied)[:3]}"
    dev = resolve_device(device if device != "auto" else cfg.model.device)
    model.to(dev).train()
    tokens, lengths, _ = store.docs()
    ctx = TrainingContext(
        cfg=cfg,
        tokens=torch.as_tensor(tokens, dtype=torch.long, device=dev),
        lengths=torch.as_tensor(lengths, dtype=torch.long, device=dev),
        device=dev,
        mask_id=int(info.get("mask_id", 0)),
    )
    return model, ctx


def snapshot_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter, kept in memory to restore between trials."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def restore_params(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    for n, p in model.named_parameters():
        p.copy_(snapshot[n])


def train_on_document(
    model: torch.nn.Module, ctx: TrainingContext, doc: int, n_steps: int | None = None, seed: int = 0
) -> np.ndarray:
    """``n_steps`` (default M) steps on one document with the run's optimizer and learning rate,
    the optimizer fresh as in an episode with reset. Returns the step losses [n_steps]."""
    cfg = ctx.cfg
    n_steps = n_steps or cfg.schedule.steps_per_doc
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = steps.make_optimizer(trainable, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    C = cfg.data.context_length
    losses = []
    for _ in range(n_steps):
        inputs, labels = steps.training_window(
            ctx.tokens[doc],
            int(ctx.lengths[doc]),
            C,
            max_shift=cfg.data.max_shift,
            mask_prob=cfg.data.mask_prob,
            mask_id=ctx.mask_id,
            generator=generator,
        )
        loss = steps.step_loss(model, inputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).float().cpu().numpy()


def evaluate(model: torch.nn.Module, ctx: TrainingContext) -> np.ndarray:
    """Loss of every document [T], as in a row of the eval matrix."""
    C = ctx.cfg.data.context_length
    batch = steps.eval_batch_size(ctx.cfg.eval_batch_size, C)
    return steps.evaluate_docs(model, ctx.tokens[:, :C], ctx.lengths.clamp(max=C), batch).cpu().numpy()
