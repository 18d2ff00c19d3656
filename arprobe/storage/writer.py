"""The run store's writer, used by the trainer.

Every dataset is created up front (SWMR forbids creating objects later), then the file is
switched to single-writer/multi-reader mode. Each episode appends one row to every per-episode
dataset, flushes, and only then bumps ``progress``: a reader (or a crash) never sees a row the
counter does not cover.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from arprobe import __version__
from arprobe.errors import UserError
from arprobe.storage.config_toml import CONFIG_FILE, write_config_toml
from arprobe.storage.lock import h5_file
from arprobe.storage.recordings import Recording, snapshot_kinds
from arprobe.storage.recover import clear_write_flags, read_superblock
from arprobe.storage.resume import read_resume, remove_resume, write_resume
from arprobe.storage.schema import EPISODE_FILL, FORMAT, FORMAT_VERSION, chunk_shape

STOP_REASON_BYTES = 2048


@dataclass
class StoreLayout:
    """Shapes of everything the run will write; fixed before the first episode."""

    n_docs: int  # T
    steps_per_doc: int  # M
    layer_names: list[str]  # L parameter groups of stats/grad_norm, TransformerLens names
    recordings: list[Recording] = field(default_factory=list)  # the recording table (weights, grads, ...)
    planned_doc: np.ndarray | None = None  # int32 [K] the whole schedule, stored up front
    planned_epoch: np.ndarray | None = None  # int32 [K]
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # HF param name -> shape
    optim_shapes: dict[str, tuple[int, ...]] = field(
        default_factory=dict
    )  # "<param>/<state>" (kept Adam state)
    rng_bytes: int = 0  # size of the saved RNG state
    resume: bool = True  # keep a resume point beside the store while it runs (storage/resume.py)

    @property
    def checkpoints(self) -> bool:
        return any(r.kind == "checkpoints" for r in self.recordings)

    def snapshot_recordings(self) -> list[Recording]:
        """Recordings stored as ``<kind>/<name>/values`` next to ``<kind>/<name>/episodes``."""
        kinds = snapshot_kinds()
        return [r for r in self.recordings if r.kind in kinds]


def _writer_identity() -> dict:
    return {"writer_host": socket.gethostname(), "writer_pid": os.getpid()}


def _refuse_if_writer_alive(path: Path) -> None:
    """A store whose writer process still runs on this host must not get a second writer."""
    with h5_file(path, "r", libver="latest", swmr=True) as h5:
        host, pid = str(h5.attrs.get("writer_host", "")), int(h5.attrs.get("writer_pid", -1))
    if host == socket.gethostname() and pid > 0 and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        raise UserError(f"'{path}' is still being written by process {pid}; stop it before resuming.")


def _grow(group: h5py.Group, name: str, row_shape: tuple[int, ...], dtype, fill=None) -> h5py.Dataset:
    dtype = np.dtype(dtype)
    return group.create_dataset(
        name,
        shape=(0, *row_shape),
        maxshape=(None, *row_shape),
        dtype=dtype,
        chunks=chunk_shape(tuple(row_shape), dtype.itemsize),
        fillvalue=fill,
        fletcher32=True,  # a flipped bit in a loss matrix or a snapshot is reported, not analysed
    )


def _append(ds: h5py.Dataset, row) -> int:
    """Append one row along axis 0; returns its index."""
    n = ds.shape[0]
    ds.resize(n + 1, axis=0)
    ds[n] = row
    return n


class RunWriter:
    """Creates ``run.h5`` and appends one episode at a time.

    Usage: ``RunWriter.create(...)``, then ``append_episode`` per episode, then ``close(status)``.
    """

    def __init__(self, path: Path, h5: h5py.File, layout: StoreLayout):
        self.path, self.h5, self.layout = path, h5, layout
        self.completed = 0

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        layout: StoreLayout,
        config_json: str,
        seed: int,
        docs: dict[
            str, np.ndarray
        ],  # docs/<name>: what the task keeps of the documents (tokens, lengths, ...)
        texts: list[str],
        model_info: dict,
        initial_eval: np.ndarray,  # float32 [T], row 0 of the eval matrix
    ) -> RunWriter:
        path = Path(path)
        remove_resume(path)  # a resume point of a run this one replaces (--overwrite)
        h5 = h5_file(path, "w", libver="latest")
        try:
            cls._create_datasets(h5, layout)
            h5.attrs.update(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "arprobe_version": __version__,
                    "config": config_json,
                    "status": "running",
                    "completed_episodes": 0,
                    "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "seed": seed,
                    "n_docs": layout.n_docs,
                    "steps_per_doc": layout.steps_per_doc,
                    "stop_reason": "",
                    "run_id": uuid.uuid4().hex,  # ties the resume point beside the store to it
                    **_writer_identity(),
                }
            )
            for name, values in docs.items():
                h5[f"docs/{name}"] = values
            h5.create_dataset("docs/text", data=np.array(texts, dtype=object), dtype=h5py.string_dtype())
            h5.create_group("model").attrs["info"] = json.dumps(model_info, sort_keys=True, default=str)
            _append(h5["loss/eval"], initial_eval.astype(np.float32))
            h5.flush()
            h5.swmr_mode = True
            write_config_toml(path.parent, json.loads(config_json))  # the resolved config, for people
        except BaseException:
            h5.close()
            path.unlink(missing_ok=True)
            (path.parent / CONFIG_FILE).unlink(missing_ok=True)
            raise
        return cls(path, h5, layout)

    @staticmethod
    def _create_datasets(h5: h5py.File, lay: StoreLayout) -> None:
        M, L = lay.steps_per_doc, len(lay.layer_names)
        _grow(h5, "schedule/doc", (), np.int32)
        _grow(h5, "schedule/epoch", (), np.int32)
        if lay.planned_doc is not None:
            h5["schedule/planned_doc"] = np.asarray(lay.planned_doc, dtype=np.int32)
            h5["schedule/planned_epoch"] = np.asarray(lay.planned_epoch, dtype=np.int32)
        _grow(h5, "loss/eval", (lay.n_docs,), np.float32)
        _grow(h5, "loss/train", (M,), np.float32)
        _grow(h5, "stats/grad_norm", (M, L), np.float32).attrs["layers"] = json.dumps(lay.layer_names)
        _grow(h5, "stats/lr", (M,), np.float32)
        h5.create_dataset("progress", data=np.zeros(1, dtype=np.int64))
        # The live status, writable in SWMR mode (attributes are not): what readers trust.
        h5.create_dataset("state/status", data=np.array([b"running"], dtype="S16"))
        h5.create_dataset("state/stop_reason", data=np.array([b""], dtype=f"S{STOP_REASON_BYTES}"))
        for rec in lay.snapshot_recordings():
            g = h5.require_group(rec.kind).create_group(rec.name)
            _grow(g, "values", rec.row_shape, np.float32)
            _grow(g, "episodes", (), np.int32, fill=EPISODE_FILL)
            g.attrs.update(
                {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in rec.describe().items()}
            )
        if lay.checkpoints:
            ck = h5.require_group("checkpoints")
            (rec,) = [r for r in lay.recordings if r.kind == "checkpoints"]
            ck.attrs.update(rec.describe())
            _grow(ck, "episodes", (), np.int32, fill=EPISODE_FILL)
            for name, shape in lay.param_shapes.items():
                _grow(ck.require_group("model"), name, shape, np.float32)
            for name, shape in lay.optim_shapes.items():
                _grow(ck.require_group("optim"), name, shape, np.float32)
            _grow(ck, "rng", (lay.rng_bytes,), np.uint8)

    # --- per episode ----------------------------------------------------------------------

    def append_episode(
        self,
        *,
        doc: int,
        epoch: int,
        eval_row: np.ndarray,  # [T]
        train_loss: np.ndarray,  # [M]
        grad_norm: np.ndarray,  # [M, L]
        lr: np.ndarray,  # [M]
    ) -> None:
        h5 = self.h5
        _append(h5["schedule/doc"], doc)
        _append(h5["schedule/epoch"], epoch)
        _append(h5["loss/eval"], eval_row)
        _append(h5["loss/train"], train_loss)
        _append(h5["stats/grad_norm"], grad_norm)
        _append(h5["stats/lr"], lr)

    def append_recording(self, kind: str, name: str, episode: int, values: np.ndarray) -> None:
        """One snapshot of recording ``kind``/``name`` (a snapshot kind of the table) taken at ``episode``."""
        g = self.h5[kind][name]
        _append(g["values"], values)
        _append(g["episodes"], episode)  # written after the values: -1 until they are there

    def append_checkpoint(
        self,
        episode: int,
        params: dict[str, np.ndarray],
        optim: dict[str, np.ndarray],
        rng: np.ndarray | None,
    ) -> None:
        ck = self.h5["checkpoints"]
        for name, value in params.items():
            _append(ck["model"][name], value)
        for name, value in optim.items():
            _append(ck["optim"][name], value)
        if rng is not None:
            _append(ck["rng"], rng)
        _append(ck["episodes"], episode)

    def write_resume(
        self, episode: int, params: dict[str, np.ndarray], optim: dict[str, np.ndarray], rng: np.ndarray
    ) -> None:
        """Replace the resume point beside the store with the state after (committed) ``episode``."""
        if "resume" not in self.h5:
            write_resume(self.path, str(self.h5.attrs["run_id"]), episode, params, optim, rng)
            return
        # A store written before the resume file: overwrite the older of its two slots, the
        # episode number last, after a flush.
        rs = self.h5["resume"]
        slot = int(np.argmin(rs["episodes"][:]))
        for name, value in params.items():
            rs["model"][name][slot] = value
        for name, value in optim.items():
            rs["optim"][name][slot] = value
        rs["rng"][slot] = rng
        self.h5.flush()
        rs["episodes"][slot] = episode
        rs["episodes"].flush()

    @classmethod
    def reopen_for_resume(cls, path: Path, layout: StoreLayout) -> tuple[RunWriter, int, dict | None]:
        """Open an unfinished store, cut it back to its newest resume checkpoint and continue.

        Returns the writer, the episode to continue after, and the saved state
        {"model": {param: array}, "optim": {key: array}, "rng": uint8 array}, or None when the run
        stopped before its first resume slot (continue from the initial weights).
        """
        _refuse_if_writer_alive(path)
        try:
            h5 = h5_file(path, "r+", libver="latest")
        except OSError:
            # A killed writer leaves the superblock marked "open for SWMR write".
            clear_write_flags(path)
            h5 = h5_file(path, "r+", libver="latest")
        try:
            completed = int(h5["progress"][0])
            point = cls._resume_point(path, h5, completed)
            if point is not None:
                episode, state = point
            elif layout.resume or "resume" in h5 or completed == 0:
                # Killed before the first resume slot was written: the run restarts from its
                # initial weights, which the seed (or the pretrained source) gives again.
                episode, state = 0, None
            else:
                raise UserError(
                    f"'{path}' has no resume checkpoint (record.resume_every was 0) and {completed} episodes "
                    "done; start the run again (--overwrite)."
                )
            cls._truncate(h5, episode)
            h5.attrs["status"] = "running"
            h5.attrs["stop_reason"] = ""
            if "state" in h5:
                h5["state/status"][0] = b"running"
                h5["state/stop_reason"][0] = b""
            h5.attrs.update(_writer_identity())
            h5.flush()
            h5.swmr_mode = True
        except BaseException:
            h5.close()
            raise
        writer = cls(Path(path), h5, layout)
        writer.completed = episode
        return writer, episode, state

    @classmethod
    def _resume_point(cls, path: Path, h5: h5py.File, completed: int) -> tuple[int, dict] | None:
        """The newest usable resume point: the file beside the store, or (stores written before it
        existed) the newer of the two slots inside it."""
        if "resume" in h5:
            slots = h5["resume/episodes"][:]
            usable = [(int(e), i) for i, e in enumerate(slots) if 0 <= e <= completed]
            if not usable:
                return None
            episode, slot = max(usable)
            return episode, cls._read_resume_slot(h5["resume"], slot)
        point = read_resume(path, str(h5.attrs.get("run_id", "")))
        return point if point is not None and 0 <= point[0] <= completed else None

    @staticmethod
    def _read_resume_slot(rs: h5py.Group, slot: int) -> dict:
        state = {
            "model": {n: rs["model"][n][slot] for n in rs.get("model", {})},
            "optim": {},
            "rng": rs["rng"][slot],
        }
        if "optim" in rs:
            rs["optim"].visititems(
                lambda n, o: state["optim"].__setitem__(n, o[slot]) if isinstance(o, h5py.Dataset) else None
            )
        return state

    @staticmethod
    def _truncate(h5: h5py.File, episode: int) -> None:
        """Drop everything recorded after ``episode``: it will be recomputed."""
        for name in ("schedule/doc", "schedule/epoch", "loss/train", "stats/grad_norm", "stats/lr"):
            h5[name].resize(episode, axis=0)
        h5["loss/eval"].resize(episode + 1, axis=0)
        groups = [h5[kind][name] for kind in snapshot_kinds() if kind in h5 for name in h5[kind]]
        if "checkpoints" in h5:
            groups.append(h5["checkpoints"])
        for group in groups:
            episodes = group["episodes"][:]
            keep = 0
            while keep < len(episodes) and 0 <= episodes[keep] <= episode:
                keep += 1
            group.visititems(
                lambda n, o, keep=keep: o.resize(keep, axis=0) if isinstance(o, h5py.Dataset) else None
            )
        h5["progress"][0] = episode

    def commit(self, episode: int) -> None:
        """Make everything appended so far visible: flush the rows, then bump the counter."""
        self.h5.flush()
        self.h5["progress"][0] = episode
        self.h5["progress"].flush()
        self.completed = episode

    def close(self, status: str, stop_reason: str = "") -> None:
        """Record the final status, then close. The status datasets are written in SWMR mode, so a
        reader holding the file open cannot make this fail; the root attributes (for readers of
        format 1) are set after closing, skipped if the file cannot be reopened."""
        try:
            self.set_status(status, stop_reason)
            self.h5.flush()
        except (OSError, RuntimeError):
            pass  # the disk filled up mid-write: what was committed before stays readable
        finally:
            try:
                self.h5.close()
            except (OSError, RuntimeError):
                pass
        leave_closed(self.path)
        try:
            # locking=False: a reader's shared lock must not fail the run (issue: errno 11 at close)
            with h5py.File(self.path, "r+", libver="latest", locking=False) as h5:
                h5.attrs["status"] = status
                h5.attrs["completed_episodes"] = self.completed
                h5.attrs["stop_reason"] = stop_reason
        except OSError:
            pass
        if status == "complete":
            remove_resume(self.path)  # nothing left to resume

    def set_status(self, status: str, stop_reason: str = "") -> None:
        if "state" in self.h5:
            self.h5["state/status"][0] = status.encode()
            self.h5["state/stop_reason"][0] = stop_reason.encode()[:STOP_REASON_BYTES]


def leave_closed(path: Path) -> None:
    """Make a store whose close failed (a write that hit a full disk) openable by any HDF5 reader:
    clear the "open for SWMR write" flags its writer leaves, and give the file back the length its
    superblock records when the failed write left it shorter (a sparse extension: no disk blocks).
    What was committed before the failure is on disk; the reader cuts at the episode counter."""
    try:
        superblock = read_superblock(path)
        if superblock.get("flags"):
            clear_write_flags(path)
        if path.stat().st_size < superblock.get("eof", 0):
            os.truncate(path, superblock["eof"])
    except (OSError, ValueError):
        pass  # a file the failure left unrecognisable: the reader will say so in one sentence
