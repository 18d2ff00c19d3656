"""One writer per run folder: a lock file holding the writer's host and PID.

``run``, ``--resume`` and ``--overwrite`` take it before touching a store. A lock whose process
is gone (a killed run) is stale and taken over; one held by a live process is refused with one
sentence, and so is one from another host (whose PID this one cannot check) until its writer has
not touched it for STALE_AFTER_S (writers touch it every episode), so a sweep re-run on other
cluster nodes can take over the runs of a killed one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import time
from pathlib import Path

from arprobe.errors import UserError

LOCK_NAME = ".arprobe-writer.lock"
STALE_AFTER_S = 6 * 3600  # a lock from another host untouched this long belongs to a dead writer


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
