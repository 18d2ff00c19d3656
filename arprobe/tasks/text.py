"""Causal language modelling on text documents (the paper's setting).

A document is a row of token ids. Its clean form — what the eval matrix and the online loss
measure — is the C-token window starting at ``window_start`` (0 unless the window is shifted).
Training windows add the paper's data randomness (Sec. 3.3): a shift of the window by a random
s in [−S, +S] tokens, and masking of input tokens with probability p.

Loss everywhere: mean per-token cross-entropy over non-pad target tokens. Pad positions are
known by length; with ``ignore_id`` (``compat = "authors"``: the pad id, as the released code
masks labels) every target equal to that id is ignored too, also inside a document.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from arprobe.errors import UserError
from arprobe.models.hub import check_hub_model, looks_like_path, resolve_ladder_name
from arprobe.models.naming import bridge_names
from arprobe.models.text import (
    PYTHIA_PRESETS,
    build_model,
    ce_rows,
    disable_dropout,
    freeze_first_blocks,
    resolve_device,
    use_autocast,
)
from arprobe.tasks.base import Prepared, Task
from arprobe.tasks.text_data import load_texts, select_documents
from arprobe.tasks.tokenizer import (
    default_cache_dir,
    ensure_pad_token,
    load_tokenizer,
    pad_token_as_released,
    train_bpe_tokenizer,
)

IGNORE = -100
# vmap's warning where an op has no batching rule and runs once per batch element
_NO_BATCHING_RULE = "There is a performance drop because we have not yet implemented the batching rule"


class TextLM(Task):
    name = "text-lm"
    stacks = True  # members may share the eval pass: ``member_doc_losses``, vmapped (trainer.batched)
    keeps_token_windows = True

    @staticmethod
    def member_doc_losses(model, tokens, lengths, ignore_id=None) -> torch.Tensor:
        """Per-document losses [B] (``doc_losses``): what a stacked eval vmaps over members."""
        return doc_losses(model, tokens, lengths, ignore_id)

    def __init__(
        self,
        tokens: torch.Tensor,  # int64 [T, W] token ids, right-padded; W = C + 2S
        lengths: torch.Tensor,  # int64 [T] real tokens per row
        *,
        context_length: int,  # C
        max_shift: int = 0,  # S: the training window moves by s in [−S, +S]
        mask_prob: float = 0.0,  # p: probability of replacing an input token with mask_id
        mask_id: int = 0,
        eval_batch: int = 0,  # documents per eval forward (0: about 16k tokens)
        window_start: torch.Tensor | None = None,  # int64 [T] start of each clean window (default 0)
        ignore_id: int | None = None,  # targets equal to this id are left out of every loss (None: none)
    ):
        self.tokens, self.lengths = tokens, lengths
        self.n_docs = tokens.shape[0]
        self.context_length, self.max_shift, self.mask_prob, self.mask_id = (
            context_length,
            max_shift,
            mask_prob,
            mask_id,
        )
        self.eval_batch = eval_batch_size(eval_batch, context_length)
        self.ignore_id = ignore_id
        if window_start is None:
            window_start = torch.zeros_like(lengths)
        self.window_start = window_start
        # Python ints once: reading a device tensor every step would sync the GPU.
        self._lengths = lengths.tolist()
        self._starts = window_start.tolist()
        C = context_length
        idx = window_start[:, None] + torch.arange(C, device=tokens.device)[None, :]
        self.eval_tokens = torch.gather(tokens, 1, idx.clamp(max=tokens.shape[1] - 1))  # [T, C]
        self.eval_lengths = (lengths - window_start).clamp(min=0, max=C)  # [T]

    @classmethod
    def from_documents(cls, docs, cfg, *, device, mask_id: int, pad_id: int | None = None) -> TextLM:
        """From ``tasks.text_data.Documents`` (or the arrays a store keeps) and a RunConfig. With
        ``cfg.compat == "authors"`` targets equal to ``pad_id`` are ignored, as in the released code."""
        authors = cfg.compat == "authors"
        assert pad_id is not None or not authors, "compat authors needs the pad id"
        return cls(
            torch.as_tensor(np.asarray(docs.tokens), dtype=torch.long, device=device),
            torch.as_tensor(np.asarray(docs.lengths), dtype=torch.long, device=device),
            context_length=cfg.data.context_length,
            max_shift=cfg.data.max_shift,
            mask_prob=cfg.data.mask_prob,
            mask_id=mask_id,
            eval_batch=cfg.eval_batch_size,
            window_start=torch.as_tensor(np.asarray(docs.window_start), dtype=torch.long, device=device),
            ignore_id=pad_id if authors else None,
        )

    # --- the lifecycle ----------------------------------------------------------------------

    @classmethod
    def prepare(cls, cfg) -> Prepared:
        """Documents, tokenizer (trained BPE or the model's own), model and names."""
        d, m = cfg.data, cfg.model
        authors = (
            cfg.compat == "authors"
        )  # the released code's choices (README, "Fidelity to the released code")
        m.name = resolve_ladder_name(m.name)  # "default/5m": a size of a ladder `arprobe pretrain` built
        if m.name not in PYTHIA_PRESETS:
            # Checked before the tokenizer, which would otherwise be the first to trip on the model.
            if looks_like_path(m.name) and not Path(m.name).expanduser().exists():
                raise UserError(f"Model path '{m.name}' does not exist.")
            check_hub_model(m.name, m.revision)
        texts, provenance = load_texts(d, keep_blank=authors)
        tokenizer, tokenizer_name = _text_tokenizer(cfg, texts)
        pad_id = pad_token_as_released(tokenizer, tokenizer_name) if authors else ensure_pad_token(tokenizer)
        docs = select_documents(
            texts,
            tokenizer,
            n_docs=d.n_docs,
            context_length=d.context_length,
            max_shift=d.max_shift,
            min_tokens=d.min_tokens,
            seed=cfg.seed,
            pad_id=pad_id,
            compat=cfg.compat,
        )
        loaded = build_model(
            m,
            vocab_size=len(tokenizer),
            seed=cfg.seed,
            max_positions=d.context_length,
            resize_embeddings=authors,
        )
        device = resolve_device(m.device)
        mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else pad_id
        model_info = dict(loaded.provenance)
        model_info.update(
            tokenizer=getattr(tokenizer, "name_or_path", "")
            if tokenizer_name != "bpe"
            else f"bpe-{d.vocab_size} trained on the documents' source",
            vocab_size=len(tokenizer),
            data=provenance,
            mask_id=int(mask_id),
            pad_id=int(pad_id),
            task=cfg.task,
        )
        attn = loaded.model.config._attn_implementation
        names = bridge_names(loaded.model, tokenizer, loaded.bridge_name)
        # The bridge forces eager attention on the config it boots from, which its skeleton shares
        # with our model; keep the model's own (sdpa: faster, and what model_info says).
        loaded.model.config._attn_implementation = attn
        return Prepared(
            model=loaded.model,
            tokenizer=tokenizer,
            names=names,
            task=cls.from_documents(docs, cfg, device=device, mask_id=mask_id, pad_id=pad_id),
            texts=docs.texts,
            model_info=model_info,
            device=device,
            data_provenance=provenance,
            n_dropped=docs.n_dropped,
        )

    @classmethod
    def from_store(cls, store, cfg, *, model: torch.nn.Module, device: torch.device) -> TextLM:
        return cls.from_documents(
            _Arrays(store.doc_arrays()),
            cfg,
            device=device,
            mask_id=int(store.model_info.get("mask_id", 0)),
            pad_id=store.model_info.get("pad_id"),
        )

    @classmethod
    def model_from_info(cls, info: dict, cfg) -> torch.nn.Module:
        """A GPT-NeoX-like Hugging Face model of the stored config, with a fixed class."""
        # Here: transformers is only needed to rebuild a model (replays), not for the losses.
        from transformers import AutoConfig, AutoModelForCausalLM

        hf_config = dict(info["hf_config"])
        model_type = hf_config.pop("model_type")
        drop = ("architectures", "transformers_version", "auto_map")
        config = AutoConfig.for_model(model_type, **{k: v for k, v in hf_config.items() if k not in drop})
        attn = info.get("attn_implementation") or "sdpa"
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
        disable_dropout(model)
        freeze_first_blocks(model, cfg.model.freeze_blocks)
        use_autocast(model, cfg.model.autocast)
        return model

    @classmethod
    def position_mask(cls, arrays: dict[str, np.ndarray], n_docs: int, n_positions: int) -> np.ndarray:
        """Position j of a document's clean window is real while j < its tokens past the window
        start (documents are right-padded)."""
        real = np.clip(np.asarray(arrays["lengths"]) - np.asarray(arrays["window_start"]), 0, n_positions)
        return np.arange(n_positions)[None, :] < real[:, None]

    # --- training -------------------------------------------------------------------------

    def training_batch(self, doc: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """(input_ids [1, C], labels [1, C]) for one step of document ``doc``.

        The window starts at window_start + s, s uniform in [−S, +S], kept inside the real
        tokens (a document no longer than C is never shifted); inputs are replaced by the mask
        token with probability p while labels keep the real tokens.
        """
        C, length = self.context_length, self._lengths[doc]
        offset = self._starts[doc]
        if self.max_shift:
            s = int(torch.randint(-self.max_shift, self.max_shift + 1, (1,), generator=generator))
            offset = min(max(offset + s, 0), max(length - C, 0))
        window = self.tokens[doc, offset : offset + C]
        labels = window.clone()
        labels[max(min(C, length - offset), 0) :] = IGNORE
        if self.ignore_id is not None:
            labels[window == self.ignore_id] = IGNORE
        inputs = window
        if self.mask_prob:
            hit = torch.rand(window.shape, generator=generator) < self.mask_prob
            inputs = torch.where(hit.to(window.device), torch.full_like(window, self.mask_id), window)
        return {"input_ids": inputs[None], "labels": labels[None]}

    def batch_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-token cross-entropy over the non-ignored labels of one window."""
        targets = F.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE)  # position j predicts label j + 1
        return token_nll(model(input_ids=batch["input_ids"]).logits, targets, reduction="mean")

    # --- evaluation -----------------------------------------------------------------------

    def eval_losses(
        self, model: torch.nn.Module, after_batch: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        return evaluate_docs(
            model, self.eval_tokens, self.eval_lengths, self.eval_batch, after_batch, ignore_id=self.ignore_id
        )

    def forward_docs(self, model: torch.nn.Module, docs: list[int]) -> None:
        idx = torch.as_tensor(docs, device=self.tokens.device)
        model(input_ids=self.eval_tokens[idx])

    def per_document_grads(
        self, model: torch.nn.Module, params: dict[str, torch.Tensor], *, chunk: int, method: str = "vmap"
    ) -> Iterator[list[torch.Tensor]]:
        return per_document_grads(
            model,
            params,
            self.eval_tokens,
            self.eval_lengths,
            chunk=chunk,
            method=method,
            ignore_id=self.ignore_id,
        )

    def store_arrays(self) -> dict[str, np.ndarray]:
        return {
            "tokens": self.tokens.cpu().numpy().astype(np.int32),
            "lengths": self.lengths.cpu().numpy().astype(np.int32),
            "window_start": self.window_start.cpu().numpy().astype(np.int32),
        }


def _text_tokenizer(cfg, texts: list[str]):
    """(tokenizer, its name): ``data.tokenizer``, where "auto" means the model's own for a hub id
    or path (also for random init of its architecture) and a BPE trained on the documents for a
    size preset, which has none."""
    d, m = cfg.data, cfg.model
    name = d.tokenizer
    if name == "auto":
        name = "bpe" if m.name in PYTHIA_PRESETS else m.name
    if name == "bpe":
        return train_bpe_tokenizer(texts, d.vocab_size, cache_dir=default_cache_dir()), name
    revision = m.revision if name == m.name else ""
    return load_tokenizer(name, revision=revision, trust_remote_code=m.trust_remote_code), name


class _Arrays:
    """Attribute view of a store's ``docs`` arrays, as ``from_documents`` reads them."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.__dict__.update(arrays)


# --- the loss, shared by training, evaluation and per-document gradients ----------------------


def eval_batch_size(configured: int, context_length: int) -> int:
    """Documents per eval forward: the configured size, or about 16k tokens per batch."""
    return configured or max(1, 16384 // context_length)


def doc_losses(
    model: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, ignore_id: int | None = None
) -> torch.Tensor:
    """Per-document loss [B] of ``tokens`` [B, C] whose first ``lengths`` [B] tokens are real.

    Documents are right-padded, so causal attention never lets a real token see a pad and no
    attention mask is needed.
    """
    return losses_from_logits(model(input_ids=tokens).logits, tokens, lengths, ignore_id)


def losses_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, ignore_id: int | None = None
) -> torch.Tensor:
    """Per-document loss [B] from ``logits`` [B, C, V] of ``tokens`` [B, C], ``lengths`` [B] real;
    targets equal to ``ignore_id`` are left out too."""
    B, C = tokens.shape
    positions = torch.arange(C, device=tokens.device)
    valid = positions[None, :] < (lengths[:, None] - 1)  # the target of position j (token j + 1) is real
    if ignore_id is not None:
        valid = valid & (F.pad(tokens[:, 1:], (0, 1)) != ignore_id)
    targets = torch.where(valid, F.pad(tokens[:, 1:], (0, 1)), IGNORE)  # [B, C], last position never a target
    nll = token_nll(logits, targets).view(B, C)
    return nll.sum(1) / valid.sum(1).clamp(min=1)


def token_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Cross-entropy [B·C] of ``logits`` [B, C, V] against ``targets`` [B, C] (0 where a target is
    IGNORE), or its mean over the other targets with ``reduction="mean"``.

    On the contiguous [B·C, V] view: log-softmax along the last axis, no copy of the logits.
    Slicing off the last position first and reducing over a transposed axis, as before, was
    4.5x slower on CPU (a quarter of an eval pass; docs/performance.md). Per-token losses of
    logits that need no gradient (evaluation) are taken ``ce_rows`` rows at a time: each row's
    loss is computed alone either way, so the pieces give the same numbers as one call, with one
    float32 copy of a piece beside the logits instead of two of the whole. Under autograd the
    pieces would cost more than they save (each piece's backward writes a zero gradient of all
    the logits: per-document gradients took 1.3 s instead of 0.85 s), so there it is one call.
    """
    flat, target = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    rows = ce_rows(flat.shape[-1], flat.device.type)
    if reduction != "none" or flat.shape[0] <= rows or flat.requires_grad:
        return F.cross_entropy(flat.float(), target, reduction=reduction, ignore_index=IGNORE)
    return torch.cat(
        [
            F.cross_entropy(
                flat[i : i + rows].float(), target[i : i + rows], reduction="none", ignore_index=IGNORE
            )
            for i in range(0, flat.shape[0], rows)
        ]
    )


@torch.inference_mode()
def evaluate_docs(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    batch_size: int,
    after_batch: Callable[[int, int], None] | None = None,
    ignore_id: int | None = None,
) -> torch.Tensor:
    """Loss of every document [T] in batches of ``batch_size`` — one row of the eval matrix.

    The model is put in eval mode for the pass; dropout is off in arprobe runs anyway, so this
    only matters for user models that keep it.
    """
    was_training = model.training
    model.eval()
    try:
        losses = []
        for i in range(0, tokens.shape[0], batch_size):
            losses.append(
                doc_losses(model, tokens[i : i + batch_size], lengths[i : i + batch_size], ignore_id)
            )
            if after_batch is not None:
                after_batch(i, i + len(losses[-1]))
        return torch.cat(losses)
    finally:
        model.train(was_training)


@contextlib.contextmanager
def batched_attention(device: torch.device) -> Iterator[None]:
    """Attention that ``vmap(grad(...))`` batches, around a per-document gradient pass on ``device``.

    SDPA's fused kernels have no vmap batching rule for their backward (on CPU, nor for the
    forward), so under vmap PyTorch runs them once per document, with a warning. Off CPU (CUDA)
    the math backend is forced: plain matmuls and softmax, which vmap batches, one pass per chunk
    instead of one per document, and no warning to hide. On CPU the per-document fallback is kept
    and its warning alone filtered: it computes bit for bit what the per-document loop does, so
    CPU recordings stay as they were (the math backend differs from it in the last bits, with no
    clear gain there: 0.8 and 1.3 s against 1.6 and 1.0 s for the tiny model's five documents in
    two measurements on a loaded CPU).
    """
    if device.type == "cpu":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NO_BATCHING_RULE)
            yield
    else:
        with sdpa_kernel([SDPBackend.MATH]):
            yield


def per_document_grads(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],  # parameter name in ``model`` -> the parameter
    tokens: torch.Tensor,  # [T, C]
    lengths: torch.Tensor,  # [T]
    *,
    chunk: int,
    method: str = "vmap",
    ignore_id: int | None = None,
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
                loss = doc_losses(model, tokens[t : t + 1], lengths[t : t + 1], ignore_id)[0]
                grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
                rows.append(
                    [g if g is not None else torch.zeros_like(params[n]) for g, n in zip(grads, names)]
                )
            yield [torch.stack(column) for column in zip(*rows)]
        return
    assert method == "vmap", f"unknown per-document gradient method {method!r}"

    def loss_of(p: dict[str, torch.Tensor], doc: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, args=(), kwargs={"input_ids": doc[None]}).logits
        return losses_from_logits(logits, doc[None], length[None], ignore_id)[0]

    detached = {n: params[n].detach() for n in names}
    per_doc = vmap(grad(loss_of), in_dims=(None, 0, 0))
    for lo in range(0, T, chunk):
        # grad() differentiates w.r.t. ``detached`` whatever the outer mode; no_grad keeps autograd
        # from also recording a graph for every other (requires_grad) weight of the model.
        with torch.no_grad(), batched_attention(tokens.device):
            grads = per_doc(detached, tokens[lo : lo + chunk], lengths[lo : lo + chunk])
        yield [grads[n] for n in names]
