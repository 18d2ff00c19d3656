"""The cyclic fine-tuning loop: setup, then one loop over episodes whose phases read at a glance.

    for each episode k (document schedule[k]):
        train: M steps on the document (batch 1), optimizer reset if asked
        evaluate: the loss of all T documents, batched          -> loss/eval row k
        record: weights / activations / per-document grads / checkpoint, as configured
        commit: flush, bump the episode counter
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arprobe.errors import UserError
from arprobe.storage import RunWriter, StoreLayout
from arprobe.trainer import steps
from arprobe.trainer.config import RunConfig
from arprobe.trainer.naming import ModelNames, bridge_names, capture
from arprobe.trainer.recorders import Recorder
from arprobe.trainer.schedules import make_schedule

log = logging.getLogger(__name__)


@dataclass
class Setup:
    """Everything the loop needs, built once."""

    cfg: RunConfig
    model: torch.nn.Module
    tokenizer: object
    names: ModelNames
    tokens: torch.Tensor  # int64 [T, C + s] on device
    lengths: torch.Tensor  # int64 [T] on device
    texts: list[str]
    schedule_doc: np.ndarray  # int32 [K]
    schedule_epoch: np.ndarray  # int32 [K]
    model_info: dict
    device: torch.device
    mask_id: int
    data_provenance: str
    n_dropped: int


@dataclass
class RunResult:
    path: Path
    status: str
    completed_episodes: int
    seconds: float
    recovery_scores: np.ndarray  # RS(n), n = 1..E-1
    online_loss: float  # mean over epochs 2..E


def prepare(cfg: RunConfig) -> Setup:
    """Data, tokenizer, model and names: everything before the first episode."""
    from arprobe.trainer.data import load_texts, looks_like_path, select_documents
    from arprobe.trainer.models import build_model, freeze_first_blocks, resolve_device
    from arprobe.trainer.tokenizer import default_cache_dir, ensure_pad_token, load_tokenizer, train_bpe_tokenizer

    d, m = cfg.data, cfg.model
    if m.init == "pretrained" and looks_like_path(m.name) and not Path(m.name).expanduser().exists():
        # Checked before the tokenizer, which would otherwise be the first to trip on the path.
        raise UserError(f"Model path '{m.name}' does not exist.")
    texts, provenance = load_texts(d)
    tokenizer_name = d.tokenizer
    if tokenizer_name == "auto":
        tokenizer_name = m.name if m.init == "pretrained" else "bpe"
    if tokenizer_name == "bpe":
        tokenizer = train_bpe_tokenizer(texts, d.vocab_size, cache_dir=default_cache_dir())
    else:
        tokenizer = load_tokenizer(tokenizer_name, revision=m.revision if tokenizer_name == m.name else "",
                                   trust_remote_code=m.trust_remote_code)
    pad_id = ensure_pad_token(tokenizer)
    docs = select_documents(texts, tokenizer, n_docs=d.n_docs, context_length=d.context_length, max_shift=d.max_shift,
                            min_tokens=d.min_tokens, seed=cfg.seed, pad_id=pad_id)
    loaded = build_model(m, vocab_size=len(tokenizer), seed=cfg.seed, max_positions=d.context_length)
    if m.freeze_blocks:
        freeze_first_blocks(loaded.model, m.freeze_blocks)
    device = resolve_device(m.device)
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else pad_id
    schedule_doc, schedule_epoch = make_schedule(
        cfg.schedule.order, d.n_docs, cfg.schedule.epochs, cfg.seed,
        shuffle_until=cfg.schedule.shuffle_until, repeat_docs=cfg.schedule.repeat_docs,
        insert_min=cfg.schedule.insert_min, insert_max=cfg.schedule.insert_max,
    )
    model_info = dict(loaded.provenance)
    model_info["tokenizer"] = getattr(tokenizer, "name_or_path", "") if tokenizer_name != "bpe" else f"bpe-{d.vocab_size} trained on the documents' source"
    model_info["vocab_size"] = len(tokenizer)
    model_info["data"] = provenance
    model_info["mask_id"] = int(mask_id)
    return Setup(
        cfg=cfg, model=loaded.model, tokenizer=tokenizer, names=bridge_names(loaded.model, tokenizer, loaded.bridge_name),
        tokens=torch.as_tensor(docs.tokens, dtype=torch.long, device=device),
        lengths=torch.as_tensor(docs.lengths, dtype=torch.long, device=device),
        texts=docs.texts, schedule_doc=schedule_doc, schedule_epoch=schedule_epoch, model_info=model_info,
        device=device, mask_id=mask_id, data_provenance=provenance, n_dropped=docs.n_dropped,
    )


def run(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> RunResult:
    """Train, record and write ``<out>/<name>/run.h5``; returns the headline numbers."""
    from arprobe.recovery import online_loss, recovery_scores

    run_dir = cfg.run_dir
    store_path = run_dir / "run.h5"
    if store_path.exists() and not overwrite:
        raise UserError(f"'{store_path}' already exists; choose another --name or pass --overwrite.")
    setup = prepare(cfg)
    created_dir = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        writer, recorder = _open_store(setup, store_path)
    except BaseException:
        if created_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    started = time.perf_counter()
    status, reason = "failed", ""
    try:
        status, reason = _train(setup, writer, recorder, progress=progress)
    except KeyboardInterrupt:
        status, reason = "failed", "interrupted"
        raise
    except BaseException as exc:
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        writer.close(status, reason)
    loss_eval = np.asarray(recorder.loss_eval)
    k = writer.completed
    scores = recovery_scores(loss_eval[: k + 1], setup.schedule_doc[:k])
    train = np.asarray(recorder.loss_train)
    online = online_loss(train[:k], setup.schedule_epoch[:k]).mean_after_first_epoch if k else float("nan")
    return RunResult(path=store_path, status=status, completed_episodes=k, seconds=time.perf_counter() - started,
                     recovery_scores=scores, online_loss=online)


def _open_store(setup: Setup, store_path: Path) -> tuple[RunWriter, Recorder]:
    cfg = setup.cfg
    recorder = Recorder(setup)
    initial_eval = steps.evaluate_docs(setup.model, setup.tokens[:, : cfg.data.context_length], setup.lengths.clamp(max=cfg.data.context_length),
                                       steps.eval_batch_size(cfg.eval_batch_size, cfg.data.context_length)).cpu().numpy()
    layout = StoreLayout(
        n_docs=cfg.data.n_docs,
        token_width=setup.tokens.shape[1],
        steps_per_doc=cfg.schedule.steps_per_doc,
        layer_names=recorder.layer_names,
        **recorder.layout_fields(),
    )
    writer = RunWriter.create(
        store_path, layout=layout, config_json=cfg.to_json(), seed=cfg.seed,
        tokens=setup.tokens.cpu().numpy(), lengths=setup.lengths.cpu().numpy(), texts=setup.texts,
        model_info=setup.model_info, initial_eval=initial_eval,
    )
    recorder.loss_eval.append(initial_eval)
    recorder.record_initial(writer)
    writer.commit(0)
    return writer, recorder


def _train(setup: Setup, writer: RunWriter, recorder: Recorder, *, progress: bool) -> tuple[str, str]:
    """The episode loop. Returns (status, reason)."""
    from tqdm.auto import tqdm

    cfg, model = setup.cfg, setup.model
    C, M = cfg.data.context_length, cfg.schedule.steps_per_doc
    eval_tokens, eval_lengths = setup.tokens[:, :C], setup.lengths.clamp(max=C)
    batch = steps.eval_batch_size(cfg.eval_batch_size, cfg.data.context_length)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = steps.make_optimizer(trainable, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    total_steps = len(setup.schedule_doc) * M
    model.train()

    bar = tqdm(total=len(setup.schedule_doc), desc="episodes", unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        for k, (doc, epoch) in enumerate(zip(setup.schedule_doc, setup.schedule_epoch), start=1):
            # train: M steps on one document, batch size 1
            if cfg.optim.reset_per_doc:
                steps.reset_optimizer(optimizer)
            losses, grad_norms, lrs = [], [], []
            for j in range(M):
                lr = steps.lr_at((k - 1) * M + j, total_steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.lr_schedule)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                inputs, labels = steps.training_window(
                    setup.tokens[doc], int(setup.lengths[doc]), C, max_shift=cfg.data.max_shift,
                    mask_prob=cfg.data.mask_prob, mask_id=setup.mask_id, generator=generator)
                loss = steps.step_loss(model, inputs, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norms.append(recorder.group_grad_norms())
                if cfg.optim.grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.grad_clip)
                optimizer.step()
                losses.append(loss.detach())
                lrs.append(lr)
            train_loss = torch.stack(losses).float().cpu().numpy()

            # evaluate: the loss of every document after this episode
            eval_row = steps.evaluate_docs(model, eval_tokens, eval_lengths, batch).cpu().numpy()

            if not (np.isfinite(train_loss).all() and np.isfinite(eval_row).all()):
                bar.close()
                last = recorder.last_checkpoint
                return "diverged", (
                    f"loss became {train_loss[~np.isfinite(train_loss)][:1].tolist() or eval_row[~np.isfinite(eval_row)][:1].tolist()} "
                    f"in episode {k}; last good checkpoint: episode {last}; try a lower optim.lr"
                )

            # record and commit
            writer.append_episode(doc=int(doc), epoch=int(epoch), eval_row=eval_row, train_loss=train_loss,
                                  grad_norm=torch.stack(grad_norms).cpu().numpy(), lr=np.asarray(lrs, dtype=np.float32))
            recorder.loss_eval.append(eval_row)
            recorder.loss_train.append(train_loss)
            recorder.after_episode(writer, k, generator, optimizer)
            writer.commit(k)
            bar.update(1)
            bar.set_postfix(epoch=int(epoch), doc=int(doc), loss=f"{train_loss[-1]:.3f}", mean_eval=f"{eval_row.mean():.3f}")
    finally:
        bar.close()
    return "complete", ""


def format_summary(result: RunResult, epochs: int) -> str:
    """The headline numbers a person reads after `arprobe run`."""
    lines = [f"status: {result.status} ({result.completed_episodes} episodes, {result.seconds:.1f} s)"]
    if len(result.recovery_scores):
        scores = "  ".join(f"RS({n})={s:.3f}" if not math.isnan(s) else f"RS({n})=n/a"
                           for n, s in enumerate(result.recovery_scores, start=1))
        lines.append(f"recovery score per epoch: {scores}")
    if not math.isnan(result.online_loss):
        lines.append(f"mean online loss, epochs 2..{epochs}: {result.online_loss:.4f}")
    lines.append(f"store: {result.path}")
    return "\n".join(lines)
