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
from arprobe.trainer.naming import ModelNames, bridge_names
from arprobe.trainer.plan import check_disk_space, estimate_store_bytes
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
    stop_reason: str = ""
    data_note: str = ""  # documents dropped as too short / padded


def prepare(cfg: RunConfig) -> Setup:
    """Data, tokenizer, model and names: everything before the first episode."""
    from arprobe.trainer.data import load_texts, looks_like_path, select_documents
    from arprobe.trainer.models import PYTHIA_PRESETS, build_model, resolve_device
    from arprobe.trainer.tokenizer import (
        default_cache_dir,
        ensure_pad_token,
        load_tokenizer,
        train_bpe_tokenizer,
    )

    d, m = cfg.data, cfg.model
    if m.init == "pretrained" and looks_like_path(m.name) and not Path(m.name).expanduser().exists():
        # Checked before the tokenizer, which would otherwise be the first to trip on the path.
        raise UserError(f"Model path '{m.name}' does not exist.")
    texts, provenance = load_texts(d)
    tokenizer_name = d.tokenizer
    if tokenizer_name == "auto":
        # A hub id or path brings its own tokenizer (also for random init of its architecture);
        # a size preset has none, so one is trained on the documents.
        tokenizer_name = "bpe" if m.name in PYTHIA_PRESETS else m.name
    if tokenizer_name == "bpe":
        tokenizer = train_bpe_tokenizer(texts, d.vocab_size, cache_dir=default_cache_dir())
    else:
        tokenizer = load_tokenizer(
            tokenizer_name,
            revision=m.revision if tokenizer_name == m.name else "",
            trust_remote_code=m.trust_remote_code,
        )
    pad_id = ensure_pad_token(tokenizer)
    docs = select_documents(
        texts,
        tokenizer,
        n_docs=d.n_docs,
        context_length=d.context_length,
        max_shift=d.max_shift,
        min_tokens=d.min_tokens,
        seed=cfg.seed,
        pad_id=pad_id,
    )
    loaded = build_model(m, vocab_size=len(tokenizer), seed=cfg.seed, max_positions=d.context_length)
    device = resolve_device(m.device)
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else pad_id
    schedule_doc, schedule_epoch = make_schedule(
        cfg.schedule.order,
        d.n_docs,
        cfg.schedule.epochs,
        cfg.seed,
        shuffle_until=cfg.schedule.shuffle_until,
        repeat_docs=cfg.schedule.repeat_docs,
        insert_min=cfg.schedule.insert_min,
        insert_max=cfg.schedule.insert_max,
    )
    model_info = dict(loaded.provenance)
    model_info["tokenizer"] = (
        getattr(tokenizer, "name_or_path", "")
        if tokenizer_name != "bpe"
        else f"bpe-{d.vocab_size} trained on the documents' source"
    )
    model_info["vocab_size"] = len(tokenizer)
    model_info["data"] = provenance
    model_info["mask_id"] = int(mask_id)
    attn = loaded.model.config._attn_implementation
    names = bridge_names(loaded.model, tokenizer, loaded.bridge_name)
    # The bridge forces eager attention on the config it boots from, which its skeleton shares with
    # our model; keep the model's own (sdpa: faster, and what model_info says).
    loaded.model.config._attn_implementation = attn
    return Setup(
        cfg=cfg,
        model=loaded.model,
        tokenizer=tokenizer,
        names=names,
        tokens=torch.as_tensor(docs.tokens, dtype=torch.long, device=device),
        lengths=torch.as_tensor(docs.lengths, dtype=torch.long, device=device),
        texts=docs.texts,
        schedule_doc=schedule_doc,
        schedule_epoch=schedule_epoch,
        model_info=model_info,
        device=device,
        mask_id=mask_id,
        data_provenance=provenance,
        n_dropped=docs.n_dropped,
    )


def run(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False) -> RunResult:
    """Train, record and write ``<out>/<name>/run.h5``; returns the headline numbers."""
    run_dir = cfg.run_dir
    store_path = run_dir / "run.h5"
    if store_path.exists() and not overwrite:
        raise UserError(
            f"'{store_path}' already exists; choose another --name, pass --overwrite, or --resume it."
        )
    setup = prepare(cfg)
    recorder = Recorder(setup)
    layout = _layout(setup, recorder)
    check_disk_space(run_dir, estimate_store_bytes(layout, setup))
    created_dir = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        writer = _create_store(setup, recorder, layout, store_path)
    except BaseException:
        if created_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    optimizer, generator = _fresh_state(setup)
    recorder.after_commit(writer, 0, generator, optimizer)
    return _drive(setup, writer, recorder, optimizer, generator, start=0, progress=progress)


def dry_run(cfg: RunConfig) -> str:
    """The plan and the store-size estimate, without training or writing anything."""
    from arprobe.trainer.plan import format_plan

    setup = prepare(cfg)
    recorder = Recorder(setup)
    layout = _layout(setup, recorder)
    return format_plan(setup, layout, estimate_store_bytes(layout, setup))


def resume(run: str | Path, *, progress: bool = True) -> RunResult:
    """Continue an unfinished run from its newest resume checkpoint, with its stored config.

    The finished store is the one an uninterrupted run would have written (bit for bit on CPU):
    the schedule is redrawn from the seed, and model, optimizer and RNG state come from the store.
    """
    from arprobe.storage import RunStore, resolve_store_path
    from arprobe.trainer.config import config_from_dict

    store_path = resolve_store_path(run)
    with RunStore(store_path) as store:
        status, stored = store.status, store.config
    if status == "complete":
        raise UserError(f"'{store_path}' is already complete; nothing to resume.")
    cfg = config_from_dict(stored)
    setup = prepare(cfg)
    recorder = Recorder(setup)
    writer, episode, state = RunWriter.reopen_for_resume(store_path, _layout(setup, recorder))
    optimizer, generator = _fresh_state(setup)
    recorder.restore(state, optimizer, generator)
    recorder.loss_eval.extend(writer.h5["loss/eval"][: episode + 1])
    recorder.loss_train.extend(writer.h5["loss/train"][:episode])
    return _drive(setup, writer, recorder, optimizer, generator, start=episode, progress=progress)


def _fresh_state(setup: Setup) -> tuple[torch.optim.Optimizer, torch.Generator]:
    cfg = setup.cfg
    trainable = [p for p in setup.model.parameters() if p.requires_grad]
    optimizer = steps.make_optimizer(trainable, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay)
    return optimizer, torch.Generator().manual_seed(cfg.seed)


def _drive(
    setup: Setup, writer: RunWriter, recorder: Recorder, optimizer, generator, *, start: int, progress: bool
) -> RunResult:
    """Run the loop from episode ``start`` + 1, close the store with its status, summarise."""
    from arprobe.science.recovery import online_loss, recovery_scores

    started = time.perf_counter()
    status, reason = "failed", ""
    try:
        status, reason = _train(setup, writer, recorder, optimizer, generator, start=start, progress=progress)
    except KeyboardInterrupt:
        status, reason = "failed", "interrupted"
        raise
    except BaseException as exc:
        status, reason = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        writer.close(status, reason)
    k = writer.completed
    loss_eval = np.asarray(recorder.loss_eval)[: k + 1]
    scores = recovery_scores(loss_eval, setup.schedule_doc[:k])
    online = (
        online_loss(loss_eval, setup.schedule_doc[:k], setup.schedule_epoch[:k]).mean_after_first_epoch
        if k
        else float("nan")
    )
    from arprobe.trainer.plan import data_note

    return RunResult(
        path=writer.path,
        status=status,
        completed_episodes=k,
        seconds=time.perf_counter() - started,
        recovery_scores=scores,
        online_loss=online,
        stop_reason=reason,
        data_note=data_note(setup),
    )


def _layout(setup: Setup, recorder: Recorder) -> StoreLayout:
    cfg = setup.cfg
    return StoreLayout(
        n_docs=cfg.data.n_docs,
        token_width=setup.tokens.shape[1],
        steps_per_doc=cfg.schedule.steps_per_doc,
        layer_names=recorder.layer_names,
        **recorder.layout_fields(),
    )


def _create_store(setup: Setup, recorder: Recorder, layout: StoreLayout, store_path: Path) -> RunWriter:
    cfg = setup.cfg
    C = cfg.data.context_length
    initial_eval = (
        steps.evaluate_docs(
            setup.model,
            setup.tokens[:, :C],
            setup.lengths.clamp(max=C),
            steps.eval_batch_size(cfg.eval_batch_size, C),
        )
        .cpu()
        .numpy()
    )
    writer = RunWriter.create(
        store_path,
        layout=layout,
        config_json=cfg.to_json(),
        seed=cfg.seed,
        tokens=setup.tokens.cpu().numpy(),
        lengths=setup.lengths.cpu().numpy(),
        texts=setup.texts,
        model_info=setup.model_info,
        initial_eval=initial_eval,
    )
    recorder.loss_eval.append(initial_eval)
    recorder.record_initial(writer)
    writer.commit(0)
    return writer


def _train(
    setup: Setup,
    writer: RunWriter,
    recorder: Recorder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    *,
    start: int,
    progress: bool,
) -> tuple[str, str]:
    """The episode loop from episode ``start`` + 1. Returns (status, reason)."""
    from tqdm.auto import tqdm

    cfg, model = setup.cfg, setup.model
    C, M = cfg.data.context_length, cfg.schedule.steps_per_doc
    eval_tokens, eval_lengths = setup.tokens[:, :C], setup.lengths.clamp(max=C)
    doc_lengths = setup.lengths.tolist()  # once: reading a device tensor every step would sync the GPU
    batch = steps.eval_batch_size(cfg.eval_batch_size, C)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    n_episodes = len(setup.schedule_doc)
    total_steps = n_episodes * M
    model.train()

    bar = tqdm(
        total=n_episodes, initial=start, desc="episodes", unit="ep", disable=not progress, dynamic_ncols=True
    )
    try:
        for k in range(start + 1, n_episodes + 1):
            doc, epoch = int(setup.schedule_doc[k - 1]), int(setup.schedule_epoch[k - 1])
            # train: M steps on one document, batch size 1
            if cfg.optim.reset_per_doc:
                steps.reset_optimizer(optimizer)
            losses, grad_norms, lrs = [], [], []
            for j in range(M):
                lr = steps.lr_at(
                    (k - 1) * M + j, total_steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.lr_schedule
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                inputs, labels = steps.training_window(
                    setup.tokens[doc],
                    doc_lengths[doc],
                    C,
                    max_shift=cfg.data.max_shift,
                    mask_prob=cfg.data.mask_prob,
                    mask_id=setup.mask_id,
                    generator=generator,
                )
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

            # evaluate: the loss of every document after this episode (recorded activations come from this forward)
            with recorder.activations_from_eval(k) as after_batch:
                eval_row = (
                    steps.evaluate_docs(model, eval_tokens, eval_lengths, batch, after_batch).cpu().numpy()
                )

            if not (np.isfinite(train_loss).all() and np.isfinite(eval_row).all()):
                return "diverged", (
                    f"the loss became NaN or infinite in episode {k} (epoch {epoch}); the last good checkpoint "
                    f"is episode {recorder.last_checkpoint if recorder.last_checkpoint is not None else 'none'} "
                    f"and the store holds episodes up to {k - 1}; try a lower optim.lr (now {cfg.optim.lr:g})"
                )

            # record, then commit: readers and crashes only ever see whole episodes
            writer.append_episode(
                doc=doc,
                epoch=epoch,
                eval_row=eval_row,
                train_loss=train_loss,
                grad_norm=torch.stack(grad_norms).cpu().numpy(),
                lr=np.asarray(lrs, dtype=np.float32),
            )
            recorder.loss_eval.append(eval_row)
            recorder.loss_train.append(train_loss)
            recorder.after_episode(writer, k, generator, optimizer)
            writer.commit(k)
            recorder.after_commit(writer, k, generator, optimizer)
            bar.update(1)
            bar.set_postfix(
                epoch=epoch, doc=doc, loss=f"{train_loss[-1]:.3f}", mean_eval=f"{eval_row.mean():.3f}"
            )
    finally:
        bar.close()
    return "complete", ""


def format_summary(result: RunResult) -> str:
    """The headline numbers a person reads after `arprobe run`."""
    lines = [f"status: {result.status} ({result.completed_episodes} episodes, {result.seconds:.1f} s)"]
    if result.data_note:
        lines.append(f"documents: {result.data_note}")
    if len(result.recovery_scores):
        scores = "  ".join(
            f"RS({n})={s:.3f}" if not math.isnan(s) else f"RS({n})=n/a"
            for n, s in enumerate(result.recovery_scores, start=1)
        )
        lines.append(f"recovery score per epoch: {scores}")
    if not math.isnan(result.online_loss):
        lines.append(f"mean online loss, epochs 2..E: {result.online_loss:.4f}")
    if result.stop_reason:
        lines.append(f"stopped: {result.stop_reason}")
    lines.append(f"store: {result.path}")
    return "\n".join(lines)
