"""The resume point of a running run: one HDF5 file beside the store, replaced atomically, written
when the run's ``record.resume_every`` says and on a background thread.

``run.resume.h5`` holds the model, the kept optimizer state and the RNG after the newest resumable
episode. Each write goes to ``run.resume.h5.tmp``, is flushed to the disk (fsync) and renamed over
the old file, so a kill at any moment leaves either the old resume point or the new one, never half
of each. The file belongs to one store (``run_id``, written in both) and is deleted when the run
completes: a finished store carries no state it will never need (the resume point of the default
run would be 21 MB of its 80).

How often (``record.resume_every``, ``resume_points``): ``"auto"`` (the default) writes after every
episode while one write is under ``AUTO_EVERY_EPISODE_BYTES`` (200 MB: models up to about 50M
parameters, the CPU-sized ones) and once per epoch above it (Pythia-160M and up: 0.6 GB to 11 GB a
write, which after every episode would take longer than the episode's compute); ``"episode"``,
``"epoch"``, or a number N of episodes (``"0"``: never, the run cannot be resumed).

``ResumeWriter`` copies the state into CPU buffers it keeps (page-locked when the state is on a
GPU), then writes them on a background thread while training goes on. One write at a time: the
next one waits for the one before; the loop waits for the last one before it closes the store
(end, stop, signal); an error on the thread is raised in the loop as one sentence.

Stores written before this file existed keep two slots inside the store (``resume/``); the
writer still reads and writes those (``RunWriter.reopen_for_resume``, in the loop's thread).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import h5py
import numpy as np

from arprobe.errors import UserError
from arprobe.storage.lock import h5_file

FORMAT = "arprobe-resume"

# "auto": below this many bytes a write, a resume point after every episode; at or above, one per epoch.
AUTO_EVERY_EPISODE_BYTES = 200 * 2**20
# Values written per h5py call: h5py holds one lock for all its calls, so the loop's own store writes
# wait at most one block (64 MB) for the background writer, not one whole embedding matrix.
_BLOCK_VALUES = 16 * 2**20
# torch.Generator().get_state(): the RNG bytes of a resume point.
RNG_BYTES = 5056
POLICIES = ("auto", "episode", "epoch")


def resume_path(store_path: Path) -> Path:
    """``<run>/run.h5`` -> ``<run>/run.resume.h5``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".resume.h5")


# --- when -------------------------------------------------------------------------------------


def check_resume_every(value: str) -> str | None:
    """None when ``value`` is a valid ``record.resume_every``, else the sentence saying why not."""
    text = str(value).strip()
    if text in POLICIES or (text.isdigit()):
        return None
    return (
        f"record.resume_every must be auto, episode, epoch or a number of episodes (0: never); got '{value}'."
    )


def resumes(every: str) -> bool:
    """Whether a run with ``record.resume_every = every`` keeps a resume point at all."""
    text = str(every).strip()
    return not (text.isdigit() and int(text) == 0)


def resolved_policy(every: str, state_bytes: int) -> str | int:
    """``"episode"``, ``"epoch"`` or a number of episodes (0: never): what ``every`` means for a
    state of ``state_bytes`` bytes a write."""
    text = str(every).strip()
    if text.isdigit():
        return int(text)
    if text == "auto":
        return "episode" if state_bytes < AUTO_EVERY_EPISODE_BYTES else "epoch"
    return text


def resume_points(every: str, state_bytes: int, epoch) -> np.ndarray:
    """[K + 1] bool: whether a resume point is written after episode k (0: the initial state),
    for a schedule whose episode k (1-based) is in epoch ``epoch[k - 1]``.

    Every episode and every N episodes include the initial state and the last episode (the
    behaviour before ``"epoch"`` existed). Once per epoch writes after the last episode of each
    epoch but the final one: a run killed before the first write starts again from its seed (the same
    run), and after the final episode the run completes, which deletes the resume point. Skipping
    both saves two of E + 1 writes of a large model."""
    epoch = np.asarray(epoch)
    K = len(epoch)
    policy = resolved_policy(every, state_bytes)
    due = np.zeros(K + 1, bool)
    if policy == "episode":
        due[:] = True
    elif policy == "epoch":
        due[1:K] = epoch[1:] != epoch[:-1]  # episode k ends its epoch when episode k + 1 starts another
    elif policy:
        due[::policy] = True
        due[K] = True
    return due


def resume_write_plan(
    cfg, n_params: int, keep_optimizer: bool, *, n_trainable: int | None = None, episodes: int | None = None
) -> tuple[int, int]:
    """(bytes of one resume write, writes per run) for ``cfg`` and a model of ``n_params`` parameters
    (``n_trainable`` of them trained, default all) whose Adam moments are kept or not
    (``trainer.checkpoints.keeps_optimizer_state(cfg)``), over ``episodes`` episodes (default E x T;
    the plan passes the schedule's length). Values are written as float32, as ``resume_points``
    decides when; 0 writes when the run keeps no resume point."""
    trainable = n_params if n_trainable is None else n_trainable
    n_bytes = 4 * n_params + (8 * trainable if keep_optimizer else 0) + RNG_BYTES
    every = cfg.record.resume_every
    E, T = cfg.schedule.epochs, cfg.data.n_docs
    K = episodes if episodes is not None else E * T
    policy = resolved_policy(every, n_bytes)
    if policy == "episode":
        writes = K + 1
    elif policy == "epoch":
        writes = max(E - 1, 0)
    elif policy:
        writes = len(range(0, K + 1, policy)) + (1 if K % policy else 0)
    else:
        writes = 0
    return n_bytes, writes


# --- the file ---------------------------------------------------------------------------------


def write_resume(
    store_path: Path,
    run_id: str,
    episode: int,
    params: dict[str, np.ndarray],
    optim: dict[str, np.ndarray],
    rng: np.ndarray,
) -> None:
    """Replace the resume point with the state after ``episode``: write a temporary file, flush it
    to the disk, rename it over the old one (atomic), then flush the folder's entry."""
    final = resume_path(store_path)
    tmp = final.with_name(final.name + ".tmp")
    try:
        with h5_file(tmp, "w", libver="latest") as h5:
            h5.attrs.update({"format": FORMAT, "run_id": run_id, "episode": int(episode)})
            for name, value in params.items():
                _write_blocks(h5, f"model/{name}", value)
            for name, value in optim.items():
                _write_blocks(h5, f"optim/{name}", value)
            h5.create_dataset("rng", data=rng)
        _fsync(tmp)
        os.replace(tmp, final)
        _fsync(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_blocks(h5: h5py.File, name: str, value) -> None:
    value = np.asarray(value)
    if value.ndim == 0 or value.size <= _BLOCK_VALUES:
        h5.create_dataset(name, data=value)
        return
    ds = h5.create_dataset(name, shape=value.shape, dtype=value.dtype)
    rows = max(1, _BLOCK_VALUES // max(1, value[0].size))
    for start in range(0, value.shape[0], rows):
        ds[start : start + rows] = value[start : start + rows]


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # a folder some systems do not open: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # a folder's fsync is refused on some file systems
    finally:
        os.close(fd)


def read_resume(store_path: Path, run_id: str) -> tuple[int, dict] | None:
    """(episode, {"model", "optim", "rng"}) of the store's resume point, or None when there is none.

    A file of another run (an --overwrite'n folder, a copied store) or one that cannot be read is
    an error a user can fix, in one sentence."""
    path = resume_path(store_path)
    if not path.exists():
        return None
    try:
        with h5_file(path, "r") as h5:
            if h5.attrs.get("format") != FORMAT or str(h5.attrs.get("run_id", "")) != run_id:
                raise UserError(
                    f"'{path}' is not the resume point of '{store_path}' (another run wrote it); "
                    "remove it and start the run again with --overwrite."
                )
            episode = int(h5.attrs["episode"])
            state = {"model": {}, "optim": {}, "rng": h5["rng"][()]}
            for part in ("model", "optim"):
                if part in h5:
                    h5[part].visititems(
                        lambda n, o, part=part: (
                            state[part].__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
                        )
                    )
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(
            f"The resume point '{path}' cannot be read ({exc}); start the run again with --overwrite."
        ) from None
    return episode, state


def remove_resume(store_path: Path) -> None:
    """Delete the resume point (and a leftover temporary file)."""
    final = resume_path(store_path)
    final.unlink(missing_ok=True)
    final.with_name(final.name + ".tmp").unlink(missing_ok=True)


# --- the background writer -----------------------------------------------------------------------


class ResumeWriter:
    """Writes one run's resume points on a background thread, one at a time.

    ``submit`` waits for the write before it (raising its error, if any), copies the state into
    buffers this writer keeps (float32; page-locked when a value is on a GPU, so the copy is a DMA),
    and starts the next write; the caller may change the model as soon as ``submit`` returns.
    ``wait`` blocks until no write is under way. ``episode`` is the newest episode on disk and
    ``seconds`` how long its write took, copy included (whether another fits a stop's grace)."""

    def __init__(self, store_path: Path, run_id: str):
        self.store_path = Path(store_path)
        self.run_id = run_id
        self.episode: int | None = None
        self.seconds = 0.0
        self._buffers: dict = {}  # name -> float32 CPU tensor
        self._thread: threading.Thread | None = None
        self._error: tuple[int, BaseException] | None = None

    def submit(self, episode: int, params: dict, optim: dict, rng: np.ndarray) -> None:
        """Write the state after ``episode`` in the background: ``params`` and ``optim`` map names to
        tensors (any device, any float dtype) or numpy arrays."""
        self.wait()
        started = time.monotonic()
        staged_params = self._stage("model/", params)
        staged_optim = self._stage("optim/", optim)
        copy_seconds = time.monotonic() - started
        args = (episode, staged_params, staged_optim, np.array(rng, copy=True), copy_seconds)
        self._thread = threading.Thread(target=self._write, args=args, name="arprobe-resume", daemon=True)
        self._thread.start()

    def wait(self, *, raise_error: bool = True) -> None:
        """Block until the write under way (if any) is on disk; raise its error as one sentence."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None and raise_error:
            episode, exc = self._error
            self._error = None
            kept = (
                f"the resume point of episode {self.episode} is kept"
                if self.episode is not None
                else "no resume point was written before it"
            )
            detail = f"{type(exc).__name__}: {exc}".strip().rstrip(".")
            raise UserError(
                f"Writing the resume point of episode {episode} to '{resume_path(self.store_path)}' failed "
                f"({detail}); {kept} — free disk space or set record.resume_every, then resume the run."
            ) from None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _write(self, episode: int, params: dict, optim: dict, rng: np.ndarray, copy_seconds: float) -> None:
        started = time.monotonic()
        try:
            write_resume(self.store_path, self.run_id, episode, params, optim, rng)
        except BaseException as exc:  # raised in the loop's thread by the next submit or wait
            self._error = (episode, exc)
        else:
            self.episode, self.seconds = episode, copy_seconds + time.monotonic() - started

    def _stage(self, prefix: str, values: dict) -> dict[str, np.ndarray]:
        """float32 numpy copies of ``values`` in this writer's buffers (device copies waited for)."""
        import torch  # here: readers of stores import this module and need no torch

        out: dict[str, np.ndarray] = {}
        devices = set()
        for name, value in values.items():
            if not isinstance(value, torch.Tensor):
                value = np.asarray(value)
                if value.ndim == 0:  # a scalar (Adam's step count): no buffer
                    out[name] = value.copy()
                    continue
                value = torch.from_numpy(value)
            key = prefix + name
            buffer = self._buffers.get(key)
            if buffer is None or buffer.shape != value.shape:
                pin = value.is_cuda
                buffer = torch.empty(value.shape, dtype=torch.float32, pin_memory=pin)
                self._buffers[key] = buffer
            buffer.copy_(value.detach(), non_blocking=value.is_cuda)
            if value.is_cuda:
                devices.add(value.device)
            out[name] = buffer.numpy()
        for device in devices:
            torch.cuda.current_stream(device).synchronize()
        return out
