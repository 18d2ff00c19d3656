"""The cyclic fine-tuning loop: setup, then one loop over episodes whose phases read at a glance.

for each episode k (document schedule.doc[k - 1] of each run):
    train: the episode step (trainer.episode.train_episode): M steps on the document
    evaluate: the loss of all T documents, batched          -> loss/eval row k
    record: whatever the recording table says is due (weights, grads, activations, checkpoint)
    commit: flush, bump the episode counter; then the rolling resume slot

The loop runs a list of one or more runs: one config trains a plain model (``members.Single``);
several batchable configs (seeds trained together) train as members of one stacked model
(``members.Stacked``), each run with its own ordinary store, recorder, lock and status. Everything
after the training step and the eval is ``finish_episode``, per run.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arprobe.errors import UserError
from arprobe.models.naming import ModelNames
from arprobe.science.recovery import online_loss, recovery_score_notes, recovery_scores
from arprobe.science.schedule import Schedule
from arprobe.storage import RunStore, RunWriter, StoreLayout, resolve_store_path
from arprobe.storage.lock import WriterLock
from arprobe.storage.resume import ResumeWriter, resume_points, resumes
from arprobe.tasks.base import Task
from arprobe.tasks.registry import task_class
from arprobe.trainer.callbacks import Callbacks
from arprobe.trainer.checkpoints import capture_state, keeps_optimizer_state, restore_state, state_tensors
from arprobe.trainer.config import RunConfig, config_from_dict, training_differences
from arprobe.trainer.episode import TrainingRules, train_episode
from arprobe.trainer.members import Single, Stacked, check_batchable, check_schedule_lengths, make_members
from arprobe.trainer.plan import (
    check_disk_space,
    check_scale,
    data_note,
    estimate_store_bytes,
    human_bytes,
    plan,
    store_layout,
)
from arprobe.trainer.precision import LostUpdates, use_tf32
from arprobe.trainer.recorders import Recorder
from arprobe.trainer.schedules import schedule_from_config


@dataclass
class Setup:
    """Everything the loop needs, built once."""

    cfg: RunConfig
    model: torch.nn.Module
    tokenizer: object
    names: ModelNames
    task: Task
    schedule: Schedule  # the whole planned schedule
    texts: list[str]
    model_info: dict
    device: torch.device
    data_provenance: str
    n_dropped: int
    threads: int


@dataclass
class RunResult:
    path: Path
    status: str
    completed_episodes: int
    seconds: float
    recovery_scores: np.ndarray  # RS(n), n = 1..E-1; NaN where undefined
    online_loss: float  # mean over epochs 2..E
    stop_reason: str = ""
    data_note: str = ""  # documents dropped as too short / padded
    recovery_notes: list[str] | None = None  # why an RS(n) is undefined ("" where defined)
    threads: int = 0
    signal: int | None = None  # the signal that stopped the run, if one did
    signal_at: float | None = None  # when it arrived (time.monotonic()), to say how long the stop took


def set_threads(threads: int) -> int:
    """Torch's CPU threads: ``threads``, or every core this process may run on (its affinity mask,
    which is what a container or `taskset` grants, not the machine's core count)."""
    n = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def prepare(cfg: RunConfig) -> Setup:
    """Data, model, names and the task: everything before the first episode. The run's task
    (``arprobe.tasks`` entry points) builds its own; the loop adds the schedule and threads."""
    threads = set_threads(cfg.threads)
    prepared = task_class(cfg.task).prepare(cfg)
    use_tf32(cfg, prepared.device)
    return Setup(
        cfg=cfg,
        model=prepared.model,
        tokenizer=prepared.tokenizer,
        names=prepared.names,
        task=prepared.task,
        schedule=schedule_from_config(cfg, cfg.data.n_docs),
        texts=prepared.texts,
        model_info=prepared.model_info,
        device=prepared.device,
        data_provenance=prepared.data_provenance,
        n_dropped=prepared.n_dropped,
        threads=threads,
    )


def run(cfg: RunConfig, *, progress: bool = True, overwrite: bool = False, callbacks=None) -> RunResult:
    """Train, record and write ``<out>/<name>/run.h5``; returns the headline numbers. ``callbacks``:
    objects told of every step and episode (``trainer.callbacks``), after ``cfg.report_to``'s loggers."""
    return run_many([cfg], progress=progress, overwrite=overwrite, callbacks=callbacks)[0]


def run_many(
    cfgs: list[RunConfig], *, progress: bool = True, overwrite: bool = False, callbacks=None
) -> list[RunResult]:
    """Train every config of ``cfgs`` into its own ordinary store; one ``RunResult`` per config, in
    order (``callbacks``: see ``run``; each run tells them its own name). Several configs must be
    batchable (``members.check_batchable``): they train as members of one stacked model, and their
    stores equal separate runs' to float tolerance (tests/trainer/test_batched.py)."""
    if len(cfgs) > 1:
        check_batchable(cfgs)
    for cfg in cfgs:
        _check_out_folder(Path(cfg.out))
        store_path = cfg.run_dir / "run.h5"
        if store_path.exists() and not overwrite:
            raise UserError(_existing_store_message(store_path, cfg))
        check_scale(cfg, cfg.run_dir)  # before anything is allocated: the least memory and disk it needs
    setups = [prepare(cfg) for cfg in cfgs]
    check_schedule_lengths([len(s.schedule) for s in setups])
    members = make_members([s.model for s in setups], cfgs[0])  # before the recorders keep parameters
    runs: list[_Run] = []
    try:
        for s, setup in enumerate(setups):
            runs.append(_open_run(setup, members, s, callbacks))
    except BaseException:
        for opened in runs:
            opened.outcome = ("failed", "the run could not start")
            _close(opened)
        raise
    return _drive(runs, members, start=0, progress=progress)


def _open_run(setup: Setup, members: Single | Stacked, s: int, callbacks=None) -> _Run:
    """Member ``s``'s recorder, folder, lock and new store, its first resume point and its callbacks."""
    recorder = _recorder(setup)
    layout = _layout(setup, recorder)
    run_dir = setup.cfg.run_dir
    check_disk_space(run_dir, estimate_store_bytes(layout, setup))
    created_dir = make_run_dir(run_dir)
    lock = WriterLock(run_dir).acquire()  # before anything is written: a live writer is never overwritten
    try:
        writer = _create_store(setup, recorder, layout, run_dir / "run.h5")
    except BaseException:
        lock.release()
        if created_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    generator = torch.Generator().manual_seed(setup.cfg.seed)
    state = _State(members.member_optimizer(s), generator, [writer.h5["loss/eval"][0]], lock=lock)
    _plan_resume(setup, recorder, writer, state)
    opened = _Run(setup, recorder, writer, state)
    try:
        _write_resume_if_due(setup, writer, state, 0)
        opened.callbacks = Callbacks.for_run(setup.cfg, layout.layer_names, callbacks)
        opened.callbacks.start(setup.cfg, writer.path, len(setup.schedule), 0)
    except BaseException:
        opened.outcome = ("failed", "the run could not start")
        _close(opened)
        raise
    return opened


def make_run_dir(run_dir: Path) -> bool:
    """Create the run folder (and its parents); True if it did not exist. One sentence if it cannot."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"Cannot create the run folder '{run_dir}': {exc.strerror}; choose another --out."
        ) from None
    return created


def _check_out_folder(out: Path) -> None:
    """--out must be a folder (or not exist yet) that this process can write in."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file, not a folder; give a folder that holds runs.")
    folder = out
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"Cannot write under '{folder}' (for --out '{out}'); choose another --out.")


def _existing_store_message(store_path: Path, cfg: RunConfig) -> str:
    try:
        with RunStore(store_path) as store:
            differences = training_differences(store.config, cfg.to_dict())
    except UserError:
        differences = []
    if differences:
        shown = "; ".join(differences[:3]) + (" ..." if len(differences) > 3 else "")
        return (
            f"'{store_path}' holds a run of another config ({shown}); choose another --name or --out, "
            "or pass --overwrite to replace it."
        )
    return f"'{store_path}' already exists; choose another --name, pass --overwrite, or --resume it."


def dry_run(cfg: RunConfig, readers=None) -> str:
    """The plan and the store-size estimate, without training or writing anything; ``readers``: see
    ``plan``."""
    return plan(cfg, readers).text


def resume(
    run: str | Path, *, progress: bool = True, trust_remote_code: bool = False, callbacks=None
) -> RunResult:
    """Continue an unfinished run from its newest resume checkpoint, with its stored config.

    The finished store is the one an uninterrupted run would have written (bit for bit on CPU):
    the schedule is redrawn from the seed, and model, optimizer and RNG state come from the store
    (or, for a run stopped before its first resume checkpoint, from the seed, as at the start).
    ``model.trust_remote_code`` is never taken from a store: it is the caller's flag. ``callbacks``:
    see ``run``.
    """
    store_path = resolve_store_path(run)
    with RunStore(store_path) as store:
        status, stored = store.status, store.config
    if status == "complete":
        raise UserError(f"'{store_path}' is already complete; nothing to resume.")
    cfg = config_from_dict(stored)
    cfg.model.trust_remote_code = trust_remote_code
    setup = prepare(cfg)
    members = make_members([setup.model], cfg)
    recorder = _recorder(setup)
    layout = _layout(setup, recorder)
    lock = WriterLock(store_path.parent).acquire()
    try:
        writer, episode, saved = RunWriter.reopen_for_resume(store_path, layout)
    except BaseException:
        lock.release()
        raise
    generator = torch.Generator().manual_seed(cfg.seed)
    if saved is not None:
        restore_state(saved, setup.model, members.optimizer, generator)
    state = _State(members.optimizer, generator, list(writer.h5["loss/eval"][: episode + 1]), lock=lock)
    _plan_resume(setup, recorder, writer, state)
    if saved is None:
        _write_resume_if_due(setup, writer, state, 0)
    resumed = _Run(setup, recorder, writer, state)
    try:
        resumed.callbacks = Callbacks.for_run(cfg, layout.layer_names, callbacks)
        resumed.callbacks.start(cfg, writer.path, len(setup.schedule), episode)
    except BaseException:
        resumed.outcome = ("stopped", _resume_hint(writer, "not continued", " (its loggers could not start)"))
        _close(resumed)
        raise
    return _drive([resumed], members, start=episode, progress=progress)[0]


@dataclass
class _State:
    """What changes as a run goes, besides the model."""

    optimizer: torch.optim.Optimizer  # the run's view of the optimizer state (what a checkpoint keeps)
    generator: torch.Generator
    loss_eval: list  # rows [T] of the eval matrix so far
    last_checkpoint: int | None = None
    stop_signal: int | None = None  # SIGTERM / SIGHUP / SIGINT received: stop after this episode
    signal_at: float | None = None  # when it arrived (time.monotonic())
    lock: WriterLock | None = None  # the run folder's writer lock, touched after every episode
    resume_episode: int | None = None  # the episode of the newest resume point on disk
    resume_seconds: float = 0.0  # how long writing it took: whether another fits a stop's grace
    resume_due: np.ndarray | None = None  # [K + 1] whether a resume point is written after episode k
    resume_bytes: int = 0  # bytes of one resume point
    resume: ResumeWriter | None = None  # the background writer (None: a store with resume slots inside)


@dataclass
class _Run:
    """One run of the loop: its setup, recorder, store and state; ``outcome`` once it ended."""

    setup: Setup
    recorder: Recorder
    writer: RunWriter
    state: _State
    outcome: tuple[str, str] | None = None  # (status, reason)
    callbacks: Callbacks | None = None  # report_to's loggers and the caller's callbacks


@dataclass
class _Stop:
    """The signal that asks every run of the loop to stop after the current episode."""

    stop_signal: int | None = None
    signal_at: float | None = None  # when it arrived (time.monotonic())


def _recorder(setup: Setup) -> Recorder:
    return Recorder(setup.model, setup.names, setup.task, setup.cfg, setup.schedule, setup.device)


def _drive(runs: list[_Run], members: Single | Stacked, *, start: int, progress: bool) -> list[RunResult]:
    """Run the loop from episode ``start`` + 1, close every store with its run's status, summarise."""
    started = time.perf_counter()
    stop = _Stop()
    try:
        with _stop_on_signals(stop):
            _train(runs, members, stop, start=start, progress=progress)
    except KeyboardInterrupt:
        _end(runs, lambda r: ("stopped", _resume_hint(r.writer, "interrupted")))
        raise
    except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError for a flush that hits a full disk
        if not _disk_full(exc):
            failed = ("failed", f"{type(exc).__name__}: {exc}")
            _end(runs, lambda r: failed)
            raise
        ended = _end(runs, lambda r: ("failed", _disk_full_reason(r.setup, r.writer, r.recorder))) or runs
        raise UserError(f"The run stopped: {ended[0].outcome[1]}.") from None
    except BaseException as exc:
        failed = ("failed", f"{type(exc).__name__}: {exc}")
        _end(runs, lambda r: failed)
        raise
    finally:
        for r in runs:
            if r.state.stop_signal is None:  # a signal after the last episode is still reported
                r.state.stop_signal, r.state.signal_at = stop.stop_signal, stop.signal_at
            _close(r)
    seconds = time.perf_counter() - started
    return [summarise(r.setup, r.writer, r.state, *r.outcome, seconds) for r in runs]


def _end(runs: list[_Run], outcome) -> list[_Run]:
    """Give every run still going the outcome ``outcome(run)``; returns those runs."""
    going = [r for r in runs if r.outcome is None]
    for r in going:
        r.outcome = outcome(r)
    return going


def _close(run: _Run) -> None:
    status, reason = run.outcome or ("failed", "the run ended early")
    if run.state.resume is not None:  # a write under way ends before the store closes (and may delete it)
        run.state.resume.wait(raise_error=False)
    try:
        run.writer.close(status, reason)
    finally:
        run.state.lock.release()
        if run.callbacks is not None:
            run.callbacks.end(run.writer.path, status, run.writer.completed, reason)  # never raises


def summarise(setup: Setup, writer: RunWriter, state: _State, status: str, reason: str, seconds: float):
    """The headline numbers of a closed run."""
    k = writer.completed
    loss_eval = np.asarray(state.loss_eval)[: k + 1]
    done = setup.schedule.head(k)
    online = online_loss(loss_eval, done.doc, done.epoch).mean_after_first_epoch if k else float("nan")
    return RunResult(
        path=writer.path,
        status=status,
        completed_episodes=k,
        seconds=seconds,
        recovery_scores=recovery_scores(loss_eval, done.doc),
        online_loss=online,
        stop_reason=reason,
        data_note=data_note(setup),
        recovery_notes=recovery_score_notes(loss_eval, done.doc),
        threads=setup.threads,
        signal=state.stop_signal,
        signal_at=state.signal_at,
    )


@contextlib.contextmanager
def _stop_on_signals(state: _Stop):
    """SIGTERM, SIGHUP and a first Ctrl-C ask the loop to stop after the current episode (the store
    then says ``stopped`` and can be resumed); a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum, _frame):
        if signum == signal.SIGINT and state.stop_signal == signal.SIGINT:
            raise KeyboardInterrupt
        if state.stop_signal is None:
            state.signal_at = time.monotonic()
        state.stop_signal = signum

    wanted = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, ask) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _resume_hint(writer: RunWriter, what: str, when: str = "") -> str:
    return (
        f"{what} after episode {writer.completed}{when}; the store holds every episode up to it — "
        f"continue with: arprobe run --resume {writer.path.parent}"
    )


def _disk_full(exc: OSError | RuntimeError) -> bool:
    text = str(exc)
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or any(
        word in text for word in ("No space left", "File too large", "Disk quota", "errno = 28", "errno = 27")
    )


def _disk_full_reason(setup: Setup, writer: RunWriter, recorder: Recorder, short: int = 0) -> str:
    per_episode = estimate_store_bytes(_layout(setup, recorder), setup)["per_episode"]
    left = len(setup.schedule) - writer.completed
    need = max(per_episode * left, short)
    return (
        f"the disk is full (writing episode {writer.completed + 1}); the rest of the run needs about "
        f"{human_bytes(need)} more — free that much under '{writer.path.parent}', then "
        f"continue with: arprobe run --resume {writer.path.parent}"
    )


# Room kept free beyond an episode's own rows: HDF5 allocates whole chunks (up to 64 KiB of
# small rows per dataset) and rewrites some metadata as datasets grow.
_SLACK_BYTES = 1 << 20


def _room_missing(writer: RunWriter, recorder: Recorder, episode: int, resume_due: np.ndarray | None) -> int:
    """Bytes missing to write ``episode`` (0 when there is room): its recordings, checkpoint and
    losses, and the new resume point beside the store (written before the old one goes), against
    the free disk space; the store's part also against the file-size limit (RLIMIT_FSIZE)."""
    store = _SLACK_BYTES + sum(r.nbytes // max(len(r.episodes), 1) for r in recorder.table if r.due(episode))
    beside = 2 * recorder.state_bytes if resume_due is not None and resume_due[episode] else 0
    missing = store + beside - shutil.disk_usage(writer.path.parent).free
    try:
        import resource  # POSIX only
    except ImportError:
        return max(missing, 0)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        missing = max(missing, store - (limit - writer.path.stat().st_size))
    return max(missing, 0)


def _layout(setup: Setup, recorder: Recorder) -> StoreLayout:
    return store_layout(setup, recorder)


def _create_store(setup: Setup, recorder: Recorder, layout: StoreLayout, store_path: Path) -> RunWriter:
    cfg = setup.cfg
    writer = RunWriter.create(
        store_path,
        layout=layout,
        config_json=cfg.to_json(),
        seed=cfg.seed,
        docs=setup.task.store_arrays(),
        texts=setup.texts,
        model_info=setup.model_info,
        initial_eval=setup.task.eval_losses(setup.model).cpu().numpy(),
    )
    _record(writer, recorder, 0)
    writer.commit(0)
    return writer


def _record(writer: RunWriter, recorder: Recorder, episode: int) -> None:
    for recording in recorder.due(episode):
        writer.append_recording(
            recording.kind, recording.name, episode, recorder.capture[recording.key](episode)
        )


def _plan_resume(setup: Setup, recorder: Recorder, writer: RunWriter, state: _State) -> None:
    """When this run writes its resume point (``storage.resume.resume_points``: record.resume_every
    against the bytes of one write), and the background writer that writes it."""
    state.resume_bytes = recorder.state_bytes
    state.resume_due = resume_points(setup.cfg.record.resume_every, state.resume_bytes, setup.schedule.epoch)
    if "resume" not in writer.h5:  # a store written before the file beside it: slots inside, written here
        state.resume = ResumeWriter(writer.path, str(writer.h5.attrs["run_id"]))


def _write_resume_if_due(setup: Setup, writer: RunWriter, state: _State, episode: int) -> None:
    """The rolling resume checkpoint, written only for committed episodes."""
    if state.resume_due is not None and state.resume_due[episode]:
        _write_resume(setup, writer, state, episode)


def _write_resume(setup: Setup, writer: RunWriter, state: _State, episode: int) -> None:
    """Start writing the resume point after ``episode`` (copied now, written in the background); a
    store with resume slots inside it is written here and now."""
    keep = keeps_optimizer_state(setup.cfg)
    if state.resume is not None:
        _wait_resume(state)  # the one before: its buffers are reused, its error raised here
        params, optim = state_tensors(setup.model, state.optimizer, keep)
        state.resume.submit(episode, params, optim, state.generator.get_state().numpy())
        return
    started = time.monotonic()
    saved = capture_state(setup.model, state.optimizer, state.generator, keep)
    writer.write_resume(episode, saved["model"], saved["optim"], saved["rng"])
    state.resume_episode, state.resume_seconds = episode, time.monotonic() - started


def _wait_resume(state: _State) -> None:
    """Wait for the resume write under way; one sentence if it failed."""
    if state.resume is not None:
        state.resume.wait()
        state.resume_episode, state.resume_seconds = state.resume.episode, state.resume.seconds


# Of the 30 s SLURM gives by default between SIGTERM and SIGKILL, what a stop may spend on an extra
# resume point; closing the store and exiting take well under a second after it.
STOP_GRACE_S = 20.0
# The write rate a stop assumes before the run has timed a resume write of its own.
_ASSUMED_WRITE_BYTES_PER_S = 200e6


def _resume_on_stop(setup: Setup, writer: RunWriter, state: _State) -> None:
    """After a signal: wait for the resume write under way, then write the resume point of the last
    committed episode when the newest one is older (record.resume_every other than every episode) and
    writing it, judged by how long the last one took, fits the grace."""
    if not resumes(setup.cfg.record.resume_every):
        return
    _wait_resume(state)
    if state.resume_episode == writer.completed:
        return
    took = state.resume_seconds or state.resume_bytes / _ASSUMED_WRITE_BYTES_PER_S
    if time.monotonic() - state.signal_at + took <= STOP_GRACE_S:
        _write_resume(setup, writer, state, writer.completed)
        _wait_resume(state)


def _train(runs: list[_Run], members: Single | Stacked, stop: _Stop, *, start: int, progress: bool) -> None:
    """The episode loop from episode ``start`` + 1; gives every run its outcome (status, reason)."""
    # lazy: tqdm takes seconds to import; only this path needs it
    from tqdm.auto import tqdm

    first = runs[0].setup  # the runs share the rules and the architecture (members.check_batchable)
    K = len(first.schedule)
    rules = TrainingRules.from_config(first.cfg, K)
    norms = members.grad_norms(first.names.parameter_groups(first.model), first.device)
    tasks = [r.setup.task for r in runs]
    for model in members.modules:
        model.train()
    LostUpdates(members.optimizer, first.cfg.optim.lr, first.cfg.model.dtype)  # warns once, then detaches
    desc = "episodes" if len(runs) == 1 else f"episodes ×{len(runs)}"
    bar = tqdm(total=K, initial=start, desc=desc, unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        for k in range(start + 1, K + 1):
            log = train_episode(
                members,
                tasks,
                [int(r.setup.schedule.doc[k - 1]) for r in runs],
                episode=k,
                rules=rules,
                generators=[r.state.generator for r in runs],
                grad_norms=norms,
            )
            train_loss = log.losses.cpu().numpy()  # [S, M]
            grad_norm = log.grad_norms.cpu().numpy()  # [S, M, L]
            eval_rows = _evaluate(runs, members, k)  # [S, T]
            for s, r in enumerate(runs):
                if r.outcome is None:  # a member that diverged or ran out of disk trains on, unwritten
                    losses = train_loss[s], grad_norm[s], log.lrs, eval_rows[s]
                    before = r.state.loss_eval[-1]  # the eval row before this episode
                    r.outcome = finish_episode(r.setup, r.writer, r.recorder, r.state, k, *losses)
                    if r.outcome is None and r.callbacks:  # what the store got, once it is committed
                        where = int(r.setup.schedule.doc[k - 1]), int(r.setup.schedule.epoch[k - 1])
                        r.callbacks.episode(k, *where, *losses, before)
            if all(r.outcome is not None for r in runs):
                return
            bar.update(1)
            if stop.stop_signal is not None:
                for r in runs:
                    r.state.stop_signal, r.state.signal_at = stop.stop_signal, stop.signal_at
                    if r.outcome is None:
                        _resume_on_stop(r.setup, r.writer, r.state)
                        r.outcome = ("stopped", stopped_reason(r.writer, stop.stop_signal, stop.signal_at))
                return
            bar.set_postfix(
                epoch=int(first.schedule.epoch[k - 1]),
                loss=f"{train_loss[:, -1].mean():.3f}",
                mean_eval=f"{eval_rows.mean():.3f}",
            )
    finally:
        bar.close()
    _end(runs, lambda r: ("complete", ""))


def _evaluate(runs: list[_Run], members: Single | Stacked, k: int) -> np.ndarray:
    """[S, T] every run's eval row after episode ``k``; where the members evaluate their own modules,
    the recorded activations come from this forward (else from a forward of their own, later)."""
    with contextlib.ExitStack() as hooks:
        after = None
        if members.feeds_eval_hooks:
            after = [hooks.enter_context(r.recorder.activations_from_eval(k)) for r in runs]
        return members.evaluate([r.setup.task for r in runs], after).cpu().numpy()


def stopped_reason(writer: RunWriter, signum: int, signal_at: float | None = None) -> str:
    """Why the run stopped, and (given when the signal came) how long finishing the episode took."""
    took = "" if signal_at is None else f", {time.monotonic() - signal_at:.1f} s after the signal"
    return _resume_hint(writer, f"stopped by {signal.Signals(signum).name}", took)


def finish_episode(
    setup: Setup,
    writer: RunWriter,
    recorder: Recorder,
    state: _State,
    k: int,
    train_loss: np.ndarray,  # [M]
    grad_norm: np.ndarray,  # [M, L]
    lrs: np.ndarray,  # [M]
    eval_row: np.ndarray,  # [T] every document after this episode
) -> tuple[str, str] | None:
    """Everything after episode ``k``'s training and eval: check, record, commit. Returns
    (status, reason) when the run ends here (diverged, disk full), else None."""
    doc, epoch = int(setup.schedule.doc[k - 1]), int(setup.schedule.epoch[k - 1])
    if not (np.isfinite(train_loss).all() and np.isfinite(eval_row).all()):
        return "diverged", _divergence(setup.cfg, k, epoch, state.last_checkpoint)
    short = _room_missing(writer, recorder, k, state.resume_due)
    if short:  # stop before writing: a write that fails half-way can leave HDF5 unreadable
        return "failed", _disk_full_reason(setup, writer, recorder, short)
    # record, then commit: readers and crashes only ever see whole episodes
    writer.append_episode(
        doc=doc, epoch=epoch, eval_row=eval_row, train_loss=train_loss, grad_norm=grad_norm, lr=lrs
    )
    state.loss_eval.append(eval_row)
    _record(writer, recorder, k)
    if recorder.checkpoint_due(k):
        saved = capture_state(setup.model, state.optimizer, state.generator, keeps_optimizer_state(setup.cfg))
        writer.append_checkpoint(k, saved["model"], saved["optim"], saved["rng"])
        state.last_checkpoint = k
    writer.commit(k)
    _write_resume_if_due(setup, writer, state, k)
    if state.lock is not None:
        state.lock.touch()
    return None


def _divergence(cfg: RunConfig, k: int, epoch: int, last_checkpoint: int | None) -> str:
    last = last_checkpoint if last_checkpoint is not None else "none"
    return (
        f"the loss became NaN or infinite in episode {k} (epoch {epoch}); the last good checkpoint "
        f"is episode {last} and the store holds episodes up to {k - 1}; "
        f"try a lower optim.lr (now {cfg.optim.lr:g})"
    )


def format_summary(result: RunResult) -> str:
    """The headline numbers a person reads after `arprobe run`."""
    lines = [
        f"status: {result.status} ({result.completed_episodes} episodes, {result.seconds:.1f} s, "
        f"{result.threads} torch thread{'s' if result.threads != 1 else ''})"
    ]
    if result.data_note:
        lines.append(f"documents: {result.data_note}")
    if len(result.recovery_scores):
        scores = "  ".join(
            f"RS({n})={s:.3f}" if not math.isnan(s) else f"RS({n})=undefined"
            for n, s in enumerate(result.recovery_scores, start=1)
        )
        lines.append(f"recovery score per epoch: {scores}")
        for note in result.recovery_notes or []:
            if note and "no document was trained" not in note:
                lines.append(f"  {note}")
    if not math.isnan(result.online_loss):
        lines.append(f"mean online loss, epochs 2..E: {result.online_loss:.4f}")
    if result.stop_reason:
        lines.append(f"stopped: {result.stop_reason}")
    lines.append(f"store: {result.path}")
    return "\n".join(lines)
