"""One writer per store: a second writer is refused while the first lives, and a lock left by another
host is refused until it has been silent long."""

import json
import os
import time

import pytest

from arprobe.errors import UserError
from arprobe.storage.lock import LOCK_NAME
from tests.conftest import TINY
from tests.helpers import (
    cli,
    one_line_error,
    start_run,
    wait_for_episodes,
)


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    from arprobe.storage.lock import WriterLock

    proc = start_run(tmp_path, "busy", epochs=60)  # 300 episodes: still running when the second comes
    wait_for_episodes(tmp_path / "busy" / "run.h5", 1, proc)
    try:
        flags = [x for k, v in {**TINY, "epochs": 1}.items() for x in (f"--{k}", v)]
        second = cli(
            "run", "--out", tmp_path, "--name", "busy", "--overwrite", "--no-progress", *flags, timeout=120
        )
        line = one_line_error(second)
        assert f"is being written by process {proc.pid}" in line
        assert proc.poll() is None  # the first writer was not disturbed
    finally:
        proc.kill()
        proc.wait()
    assert (tmp_path / "busy" / LOCK_NAME).exists()  # a killed writer leaves its lock ...
    with WriterLock(tmp_path / "busy"):  # ... which is stale, and taken over
        holder = json.loads((tmp_path / "busy" / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
    assert not (tmp_path / "busy" / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_refused_until_it_has_been_silent_long(tmp_path):
    from arprobe.storage.lock import STALE_AFTER_S, WriterLock

    lock_file = tmp_path / LOCK_NAME
    lock_file.write_text(json.dumps({"host": "node-7", "pid": 1, "started": "2026-01-01T00:00:00+00:00"}))
    with pytest.raises(UserError, match=r"is being written by process 1 on host node-7; stop it first"):
        WriterLock(tmp_path).acquire()
    silent = time.time() - STALE_AFTER_S - 60  # its writer stopped touching it: a dead node's run
    os.utime(lock_file, (silent, silent))
    with WriterLock(tmp_path) as lock:
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        before = lock_file.stat().st_mtime
        os.utime(lock_file, (before - 100, before - 100))
        lock.touch()  # what the loop does after every episode
        assert lock_file.stat().st_mtime > before - 50
    assert not lock_file.exists()
