"""Device memory a run needs, from shapes alone, and the memory a device has free.

``device_memory(cfg, shape)`` lists what one run holds on its device — weights, gradients,
optimizer state, one training step's activations, the eval batch's logits, the per-document
gradient chunks — from a ``ModelShape`` (counted on the meta device: nothing is loaded). Weights,
gradients and optimizer state stay for the whole run; the others come and go in turn, so the
peak is the first three plus the largest of the rest (``peak_bytes``). ``free_memory_bytes`` is
the one place free memory is measured; ``members_that_fit`` picks batch sizes from it.

The activation estimate is Korthikanti et al. (2022, "Reducing activation recomputation"),
34·C·d + 5·H·C² bytes per block at 16-bit (doubled for float32: an upper bound, since SDPA's
fused kernels on a GPU keep no C×C scores), plus the logits: three float32 [C, vocab] copies
(the logits, cross-entropy's log-softmax and its gradient), which dominate for small models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from arprobe.errors import UserError

if TYPE_CHECKING:
    import torch

# A CUDA context, cuBLAS workspaces and the caching allocator's rounding: kept free beside the plan.
CUDA_RESERVE = 1 << 30


@dataclass(frozen=True)
class ModelShape:
    """What the memory and time of a run depend on, read off a model (any device, meta included)."""

    n_params: int  # every parameter value
    n_trainable: int  # values the optimizer updates
    d_model: int
    n_layers: int
    n_heads: int
    vocab: int  # rows of the output embedding: the logits' last axis
    param_bytes: int  # bytes of one weight value (model.dtype)
    act_bytes: int  # bytes of one activation value: 2 under bf16 autocast or 16-bit weights, else 4

    @classmethod
    def of(cls, model: torch.nn.Module, cfg) -> ModelShape:
        config = getattr(model, "config", None)

        def field(*keys: str) -> int:
            return next((int(getattr(config, k)) for k in keys if getattr(config, k, None) is not None), 0)

        out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        vocab = int(out.weight.shape[0]) if out is not None else field("vocab_size")
        params = list(model.parameters())
        param_bytes = params[0].element_size() if params else 4
        half = param_bytes == 2 or cfg.model.autocast == "bfloat16"
        return cls(
            n_params=sum(p.numel() for p in params),
            n_trainable=sum(p.numel() for p in params if p.requires_grad),
            d_model=field("hidden_size", "n_embd", "d_model"),
            n_layers=field("num_hidden_layers", "n_layer", "num_layers"),
            n_heads=field("num_attention_heads", "n_head"),
            vocab=vocab,
            param_bytes=param_bytes,
            act_bytes=2 if half else 4,
        )


def step_activation_bytes(shape: ModelShape, tokens: int, batch: int = 1) -> int:
    """Bytes autograd keeps for one forward of ``batch`` sequences of ``tokens`` (module docstring)."""
    C, d, H, L = tokens, shape.d_model, max(shape.n_heads, 1), shape.n_layers
    per_block = (34 * C * d + 5 * H * C * C) * shape.act_bytes // 2
    logits = 3 * 4 * C * shape.vocab
    return batch * (L * per_block + logits)


def optimizer_values_per_weight(cfg) -> int:
    """State values per trainable weight: Adam's two moments; SGD (no momentum here) none."""
    return 2 if cfg.optim.name == "adam" else 0


def state_bytes(shape: ModelShape, cfg) -> dict[str, int]:
    """{weights, gradients, optimizer state}: what one model holds for the whole run."""
    pb = shape.param_bytes
    return {
        "weights": shape.n_params * pb,
        "gradients": shape.n_trainable * pb,
        "optimizer state": optimizer_values_per_weight(cfg) * shape.n_trainable * pb,
    }


def eval_batch(cfg) -> int:
    """Documents per eval forward as configured: ``tasks.text.eval_batch_size`` (about 16k tokens)."""
    return cfg.eval_batch_size or max(1, 16384 // cfg.data.context_length)


def eval_chunk(cfg) -> int:
    """Documents in one eval forward: the eval batch, at most T."""
    return min(eval_batch(cfg), cfg.data.n_docs)


def device_memory(
    cfg, shape: ModelShape, *, members: int = 1, grad_values: int = 0, grad_chunk: int = 0
) -> dict[str, tuple[int, str]]:
    """{part: (bytes, what sets them)} on the run's device for ``members`` models trained as one
    (``--batch-seeds``); ``grad_values``: parameters of the largest per-document gradient recording
    (0: none), ``grad_chunk`` documents at a time (0: ``most_grad_chunk``). Parts "weights",
    "gradients", "optimizer state" are held throughout; the rest in turn."""
    from arprobe.models.text import ce_rows  # lazy: the model module imports torch

    S, C, T = members, cfg.data.context_length, cfg.data.n_docs
    times = f" x {S} members" if S > 1 else ""
    held = state_bytes(shape, cfg)
    optim = "Adam: 2 values per trainable weight" if cfg.optim.name == "adam" else "SGD keeps none"
    pb, d, L, V = shape.param_bytes, shape.d_model, shape.n_layers, shape.vocab
    parts = {
        "weights": (S * held["weights"], f"{shape.n_params:,} values x {pb} B{times}"),
        "gradients": (S * held["gradients"], f"{shape.n_trainable:,} trainable x {pb} B{times}"),
        "optimizer state": (S * held["optimizer state"], optim + times),
        "one step's activations": (
            S * step_activation_bytes(shape, C),
            f"C={C} x d_model {d} x {L} blocks, logits C x vocab {V:,}{times}",
        ),
    }
    B = eval_chunk(cfg)
    # inference mode: one block's activations at a time; the float32 logits and the log-softmax of
    # as many of their rows as one cross-entropy call takes (a GPU's budget: the larger one)
    rows = min(B * C, ce_rows(shape.vocab, "cuda"))
    copies = (
        "x 2 float32 copies" if rows == B * C else f"in float32, + the log-softmax of {rows:,} rows at a time"
    )
    parts["the eval batch's logits"] = (
        S * 4 * (B * C + rows) * shape.vocab,
        f"{B} of T={T} docs x C={C} x vocab {shape.vocab:,} {copies}{times}",
    )
    if grad_values:
        chunk = grad_chunk or most_grad_chunk(cfg)
        parts["per-document gradients"] = (
            chunk * document_grad_bytes(shape, C, grad_values),
            f"{chunk} doc(s) at once x ({grad_values:,} gradient values + one step's activations)",
        )
    return parts


HELD = ("weights", "gradients", "optimizer state")


def most_grad_chunk(cfg) -> int:
    """Documents per pass of the per-document gradients when memory allows: a backward keeps several
    times a forward's activations, so a quarter of the eval batch, at most T."""
    return min(max(1, eval_batch(cfg) // 4), cfg.data.n_docs)


def document_grad_bytes(shape: ModelShape, tokens: int, grad_values: int) -> int:
    """Bytes one document adds to a per-document gradient pass: its float32 gradient of
    ``grad_values`` values and one training step's activations."""
    return 4 * grad_values + step_activation_bytes(shape, tokens)


def grad_chunk_that_fits(cfg, shape: ModelShape, grad_values: int, room: int) -> int:
    """Documents per per-document gradient pass: ``most_grad_chunk``, fewer when that many would not
    fit in ``room`` bytes (what is free beside everything the run holds); at least one (the recorder
    halves further if the device still runs out)."""
    one = document_grad_bytes(shape, cfg.data.context_length, grad_values)
    return max(1, min(most_grad_chunk(cfg), room // one))


def peak_bytes(parts: dict[str, tuple[int, str]]) -> int:
    """The most in use at once: what is held throughout plus the largest of what comes and goes."""
    held = sum(parts[p][0] for p in HELD if p in parts)
    passing = [size for p, (size, _) in parts.items() if p not in HELD]
    return held + max(passing, default=0)


def free_memory_bytes(device: torch.device | str) -> int:
    """Bytes this process could still allocate on ``device`` now: on a GPU ``torch.cuda.mem_get_info``'s
    free bytes plus what PyTorch's caching allocator holds unused (reserved, not allocated); on a CPU
    the machine's available memory (MemAvailable), or its control group's room when lower."""
    import torch  # here: `arprobe info` imports the plan, and this module, without torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    return host_available_bytes()


def host_available_bytes() -> int:
    """Memory this process could still take: /proc/meminfo's MemAvailable (the total where there is
    none), capped by the cgroup v2 limit minus its usage."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()  # "max" when unset
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def members_that_fit(cfg, shape: ModelShape, free: int, most: int, shared: int = 0) -> int:
    """The most models (0..``most``) trained as one whose peak memory, with ``shared`` bytes beside
    them, fits in ``free`` bytes; 0 when not even one does."""
    fit = 0
    for n in range(1, most + 1):
        if shared + peak_bytes(device_memory(cfg, shape, members=n)) > free:
            break
        fit = n
    return fit


def check_members_fit(
    cfg, shape: ModelShape, members: int, device: str, free: int, flag: str = "--batch-seeds"
) -> None:
    """Refuse ``members`` batched models that do not fit in ``free`` bytes, naming the most that do."""
    need = peak_bytes(device_memory(cfg, shape, members=members))
    if need <= free:
        return
    fit = members_that_fit(cfg, shape, free, members)
    advice = f"use {flag} {fit} or fewer" if fit > 1 else f"drop {flag} (one run at a time)"
    if fit < 1:
        advice = "one run alone does not fit either; use a smaller model, context or optim.name sgd"
    raise UserError(
        f"{flag} {members} needs {human_bytes(need)} on {device} with {human_bytes(free)} free; {advice}."
    )


def human_bytes(n: float) -> str:
    """1234567 -> "1.2 MB" (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def replays_that_fit(model, cfg, n_docs: int, device) -> int:
    """Replays (``trainer.api.pairwise_rows``'s ``batch``) that fit on ``device`` at once, 1..``n_docs``:
    each a stacked member with its weights, gradients, optimizer state, one step's activations and
    eval logits, beside the replay's own model and its optimizer state."""
    shape = ModelShape.of(model, cfg)
    held = state_bytes(shape, cfg)
    free = free_memory_bytes(device) - (CUDA_RESERVE if str(device).startswith("cuda") else 0)
    shared = held["weights"] + held["optimizer state"]
    return max(1, members_that_fit(cfg, shape, free, n_docs, shared))
