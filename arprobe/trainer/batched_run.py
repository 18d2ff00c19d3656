"""S runs trained as one vmapped model, each writing its own ordinary store.

``run_batched(cfgs)`` is ``loop.run`` for several configs at once: every run is prepared as usual
(its documents, schedule, model init, recorder and store from its own seed), the models are
stacked (``trainer.batched.StackedModels``), and each episode trains every member on its own
document, evaluates all members in one vmapped pass, then hands each store the ordinary
``loop.finish_episode`` (check, record, checkpoint, commit). The stores have the layout of separate
runs and numbers equal to theirs to float tolerance (tests/test_batched.py).

What is batchable: runs whose configs are equal except for ``BATCHABLE`` — the seed (documents,
init, schedule, data randomness), the order of the documents and the data randomness
(``schedule.order``, ``schedule.shuffle_until``, ``data.mask_prob``, ``data.max_shift``) — and
whose schedules have the same number of episodes (``insert`` schedules may not). Everything else
changes a shape, the lr (one optimizer steps all members with one lr), the step count or the
recording, and is refused. Text tasks only (the batched eval computes text losses).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from arprobe.errors import UserError
from arprobe.trainer.config import RunConfig
from arprobe.values import flatten

# Options that may differ between runs trained as one model.
BATCHABLE = (
    "seed",
    "name",
    "out",
    "schedule.order",
    "schedule.shuffle_until",
    "data.mask_prob",
    "data.max_shift",
)


def batch_key(cfg: RunConfig) -> str:
    """Runs with equal keys may be trained as one model (their schedule lengths permitting)."""
    import json

    flat = flatten(cfg.to_dict())
    return json.dumps({k: v for k, v in flat.items() if k not in BATCHABLE}, sort_keys=True, default=str)


def check_batchable(cfgs: list[RunConfig]) -> None:
    """A clear error unless ``cfgs`` may be trained as one batched model."""
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
    if cfgs[0].task != "text-lm":
        raise UserError(
            f"Batched runs support the text-lm task only, not {cfgs[0].task}; run them one by one."
        )


class _Signals:
    stop_signal: int | None = None


def run_batched(cfgs: list[RunConfig], *, progress: bool = True, overwrite: bool = False) -> list:
    """Train every config of ``cfgs`` as one member of a vmapped model; returns one ``RunResult``
    per config, in order, each with the stores of separate runs."""
    from arprobe.storage.lock import WriterLock
    from arprobe.trainer import loop
    from arprobe.trainer.batched import MemberOptimizer, StackedModels, make_stacked_optimizer
    from arprobe.trainer.plan import check_disk_space, estimate_store_bytes

    check_batchable(cfgs)
    if len({str(c.run_dir) for c in cfgs}) != len(cfgs):
        raise UserError("Batched runs need one folder each; give them different names.")
    for cfg in cfgs:
        loop._check_out_folder(Path(cfg.out))
        store_path = cfg.run_dir / "run.h5"
        if store_path.exists() and not overwrite:
            raise UserError(loop._existing_store_message(store_path, cfg))
    setups = [loop.prepare(cfg) for cfg in cfgs]
    lengths = {len(s.schedule) for s in setups}
    if len(lengths) > 1:
        raise UserError(
            f"Batched runs need schedules of one length; these plan {sorted(lengths)} episodes "
            "(schedule.order insert draws it per seed); run them one by one."
        )
    stack = StackedModels([s.model for s in setups])  # before the recorders: they keep the parameters
    o = cfgs[0].optim
    optimizer = make_stacked_optimizer(stack, o.name, o.lr, o.weight_decay, decay_rule=cfgs[0].compat)
    recorders = [loop._recorder(s) for s in setups]
    writers, locks, states = [], [], []
    try:
        for s, (setup, recorder) in enumerate(zip(setups, recorders)):
            layout = loop._layout(setup, recorder)
            run_dir = setup.cfg.run_dir
            check_disk_space(run_dir, estimate_store_bytes(layout, setup))
            loop.make_run_dir(run_dir)
            locks.append(WriterLock(run_dir).acquire())
            writers.append(loop._create_store(setup, recorder, layout, run_dir / "run.h5"))
            generator = torch.Generator().manual_seed(setup.cfg.seed)
            state = loop._State(
                MemberOptimizer(stack, optimizer, s), generator, [writers[-1].h5["loss/eval"][0]]
            )
            state.lock = locks[-1]
            states.append(state)
            loop._write_resume_if_due(setup, writers[-1], state, 0)
    except BaseException:
        for writer in writers:
            writer.close("failed", "the batched run could not start")
        for lock in locks:
            lock.release()
        raise
    return _drive_batched(setups, writers, recorders, states, stack, optimizer, locks, progress=progress)


def _drive_batched(setups, writers, recorders, states, stack, optimizer, locks, *, progress: bool) -> list:
    """The episode loop of every member, each store closed with its own status; summaries."""
    from arprobe.trainer import loop

    started = time.perf_counter()
    S = len(setups)
    outcome: list[tuple[str, str] | None] = [None] * S  # (status, reason) once a member's run ended
    signals = _Signals()
    try:
        with loop._stop_on_signals(signals):
            _train_batched(setups, writers, recorders, states, stack, optimizer, outcome, signals, progress)
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        status = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
        for s in range(S):
            outcome[s] = outcome[s] or (status, reason)
        raise
    finally:
        for s in range(S):
            status, reason = outcome[s] or ("failed", "the batched run ended early")
            try:
                writers[s].close(status, reason)
            finally:
                locks[s].release()
    seconds = time.perf_counter() - started
    return [
        loop.summarise(setup, writer, state, *outcome[s], seconds)
        for s, (setup, writer, state) in enumerate(zip(setups, writers, states))
    ]


def _train_batched(setups, writers, recorders, states, stack, optimizer, outcome, signals, progress) -> None:
    from tqdm.auto import tqdm

    from arprobe.trainer import loop
    from arprobe.trainer.batched import GroupNorms, evaluate_members, train_batched_episode
    from arprobe.trainer.episode import TrainingRules

    first = setups[0]
    K = len(first.schedule)
    rules = TrainingRules.from_config(first.cfg, K)
    norms = GroupNorms(stack, first.names.parameter_groups(first.model), first.device)
    tasks = [s.task for s in setups]
    for setup in setups:
        setup.model.train()
    bar = tqdm(total=K, desc=f"episodes ×{len(setups)}", unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        for k in range(1, K + 1):
            docs = [int(s.schedule.doc[k - 1]) for s in setups]
            log = train_batched_episode(
                stack,
                optimizer,
                tasks,
                docs,
                episode=k,
                rules=rules,
                generators=[st.generator for st in states],
                grad_norms=norms,
            )
            train_loss = log.losses.cpu().numpy()  # [S, M]
            grad_norm = log.grad_norms.cpu().numpy()  # [S, M, L]
            eval_rows = evaluate_members(stack, tasks).cpu().numpy()  # [S, T]
            for s, setup in enumerate(setups):
                if outcome[s] is not None:  # diverged or out of disk: trained on, no longer written
                    continue
                outcome[s] = loop.finish_episode(
                    setup,
                    writers[s],
                    recorders[s],
                    states[s],
                    k,
                    train_loss[s],
                    grad_norm[s],
                    log.lrs,
                    eval_row=eval_rows[s],
                )
            bar.update(1)
            if all(o is not None for o in outcome):
                return
            if signals.stop_signal is not None:
                for s in range(len(setups)):
                    states[s].stop_signal = signals.stop_signal
                    outcome[s] = outcome[s] or (
                        "stopped",
                        loop.stopped_reason(writers[s], signals.stop_signal),
                    )
                return
            bar.set_postfix(mean_eval=f"{np.mean(eval_rows):.3f}")
    finally:
        bar.close()
    for s in range(len(setups)):
        outcome[s] = outcome[s] or ("complete", "")
