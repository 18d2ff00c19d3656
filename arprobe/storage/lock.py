"""One writer per run folder: a lock file holding the writer's host and PID; and HDF5 files opened so
that a file system without file locks (NFS, some Lustre mounts) does not stop a run.

The writer lock is made with ``open(O_CREAT | O_EXCL)``, no ``fcntl``/``flock``: creating a file
exclusively is atomic on NFS (v3 and later) and on Lustre, so it works on a cluster's shared folder.
HDF5 itself takes an ``flock`` on every file it opens; where the file system refuses it (errno 37
ENOLCK, 38 ENOSYS, 95 EOPNOTSUPP) ``h5_file`` opens the file again with HDF5's locking off and says
so once per process — the writer lock above still keeps one writer per run.

``run``, ``--resume`` and ``--overwrite`` take it before touching a store. A lock whose process
is gone (a killed run) is stale and taken over; one held by a live process is refused with one
sentence, and so is one from another host (whose PID this one cannot check) until its writer has
not touched it for STALE_AFTER_S (writers touch it every episode), so a sweep re-run on other
cluster nodes can take over the runs of a killed one.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

import h5py

from arprobe.errors import UserError

LOCK_NAME = ".arprobe-writer.lock"
STALE_AFTER_S = 6 * 3600  # a lock from another host untouched this long belongs to a dead writer

# errno values HDF5 reports when the file system has no file locks (not a lock another process holds).
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)
LOCKING_OFF_NOTE = (
    "note: this file system refuses HDF5's file locks ({why}); arprobe opens its stores with HDF5 "
    "locking off (its own writer lock still allows one writer per run). Set HDF5_USE_FILE_LOCKING=FALSE "
    "to skip HDF5's attempt and this note."
)
_said_locking_off = False


def lock_unsupported(exc: OSError) -> str:
    """The reason, when ``exc`` is HDF5 failing to lock a file because the file system has no locks
    ("unable to lock file, errno = 37, error message = 'No locks available'"); else ""."""
    text = str(exc)
    if "unable to lock file" not in text.lower():
        return ""
    found = re.search(r"errno\s*=\s*(\d+)", text)
    code = int(found.group(1)) if found else getattr(exc, "errno", None)
    if code not in NO_LOCKS:
        return ""  # e.g. errno 11: another process holds a lock on this very file
    return f"errno {code}, {os.strerror(code)}"


def h5_file(path, mode: str, **kwargs) -> h5py.File:
    """``h5py.File(path, mode, **kwargs)``; where the file system refuses HDF5's file lock, the same
    open with ``locking=False`` after one note on stderr (once per process)."""
    global _said_locking_off
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as exc:
        why = lock_unsupported(exc)
        if not why or kwargs.get("locking") is False:
            raise
    if not _said_locking_off:
        _said_locking_off = True
        print(LOCKING_OFF_NOTE.format(why=why), file=sys.stderr)
    return h5py.File(path, mode, **{**kwargs, "locking": False})


class WriterLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> WriterLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_unless_stale()
                continue
            except OSError as exc:
                raise UserError(
                    f"Cannot write in '{self.path.parent}': {exc.strerror}; choose another --out."
                ) from None
            with os.fdopen(fd, "w") as f:
                started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": started}, f)
            self.held = True
            return self
        raise UserError(f"Another arprobe process took '{self.path.parent}' at the same moment; try again.")

    def _refuse_unless_stale(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
            host, pid = str(holder["host"]), int(holder["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            holder, host, pid = {}, socket.gethostname(), -1  # unreadable: a writer died while writing it
        if host != socket.gethostname():
            if self._silent_for() < STALE_AFTER_S:
                raise UserError(
                    f"'{self.path.parent}' is being written by process {pid} on host {host}; stop it first, "
                    f"or delete '{self.path}' if that run is gone."
                )
        elif pid > 0 and pid_alive(pid):
            raise UserError(
                f"'{self.path.parent}' is being written by process {pid} "
                f"(since {holder.get('started', '?')}); stop it first or choose another --name."
            )
        self.path.unlink(missing_ok=True)  # stale: its writer is gone

    def _silent_for(self) -> float:
        """Seconds since the holder last touched the lock (its writer touches it every episode)."""
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return float("inf")

    def touch(self) -> None:
        """Say the writer is alive: a lock on another host (which cannot be checked by PID) counts
        as stale once it has been silent for STALE_AFTER_S."""
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with ``pid`` exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
