"""A store on a file system without file locks (NFS, some Lustre mounts): HDF5's lock call fails
with errno 37, and the run goes on with HDF5 locking off, saying so once; arprobe's own writer
lock uses no fcntl/flock at all."""

import errno
import fcntl

import h5py
import pytest

import arprobe.storage.lock as lock_module
from arprobe.storage import RunStore
from arprobe.storage.lock import WriterLock, h5_file, lock_unsupported
from tests.conftest import tiny_config

NOLCK = (
    "[Errno 37] Unable to synchronously create file (unable to lock file, errno = 37, "
    "error message = 'No locks available')"
)
HELD = (
    "[Errno 11] Unable to synchronously open file (unable to lock file, errno = 11, "
    "error message = 'Resource temporarily unavailable')"
)


@pytest.fixture
def no_file_locks(monkeypatch):
    """h5py.File as on NFS without lockd: every open that would lock fails as HDF5 fails there."""
    real = h5py.File
    calls = {"refused": 0, "unlocked": 0}

    def file(path, mode="r", *args, locking=None, **kwargs):
        if locking is not False:
            calls["refused"] += 1
            raise OSError(errno.ENOLCK, NOLCK)
        calls["unlocked"] += 1
        return real(path, mode, *args, locking=False, **kwargs)

    monkeypatch.setattr(h5py, "File", file)
    monkeypatch.setattr(lock_module, "_said_locking_off", False)
    return calls


def test_a_run_on_a_file_system_without_locks_completes_and_says_so_once(
    tmp_path, no_file_locks, capsys, one_thread
):
    from arprobe.trainer.loop import run

    result = run(tiny_config(tmp_path), progress=False)
    assert result.status == "complete" and result.completed_episodes == 15
    err = capsys.readouterr().err
    assert err.count("refuses HDF5's file locks (errno 37, No locks available)") == 1
    assert "HDF5_USE_FILE_LOCKING=FALSE" in err
    assert no_file_locks["refused"] >= 1 and no_file_locks["unlocked"] >= no_file_locks["refused"]
    with RunStore(result.path) as store:  # readers too
        assert store.status == "complete" and store.completed_episodes == 15
    assert capsys.readouterr().err == ""  # the note is not repeated


def test_a_lock_another_process_holds_is_not_ignored(tmp_path, monkeypatch):
    def held(*args, **kwargs):
        raise OSError(errno.EAGAIN, HELD)

    monkeypatch.setattr(h5py, "File", held)
    with pytest.raises(OSError, match="errno = 11"):
        h5_file(tmp_path / "x.h5", "w")


def test_lock_failures_are_told_apart():
    assert lock_unsupported(OSError(errno.ENOLCK, NOLCK)) == "errno 37, No locks available"
    assert lock_unsupported(OSError(errno.EAGAIN, HELD)) == ""
    assert lock_unsupported(OSError(errno.ENOENT, "Unable to open file (file not found)")) == ""


def test_the_writer_lock_takes_no_fcntl_lock(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refused)
    monkeypatch.setattr(fcntl, "lockf", refused)
    monkeypatch.setattr(fcntl, "fcntl", refused)
    with WriterLock(tmp_path) as lock:
        assert lock.held and lock.path.exists()
    assert not lock.path.exists()
