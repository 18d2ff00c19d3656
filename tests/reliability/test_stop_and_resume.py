"""Runs stopped from outside, done for real: SIGTERM and SIGINT end the run after its episode and it
resumes bit for bit; a kill before the first resume slot, a full disk, and where the resume point lives."""

import re
import resource
import shutil
import signal
import time

import h5py
import numpy as np
import pytest

from arprobe.errors import UserError
from arprobe.storage import RunStore
from arprobe.storage.lock import LOCK_NAME
from arprobe.storage.resume import resume_path
from arprobe.trainer.loop import resume, run
from tests.conftest import TINY, tiny_config
from tests.helpers import cli, datasets_of, one_line_error, start_run, wait_for_episodes


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    return run(tiny_config(out, name="base", epochs=2), progress=False).path


def stopped_by_sigterm(out, name):
    """A two-epoch run started as a process and sent SIGTERM after its second episode: (process, store)."""
    proc = start_run(out, name, epochs=2)
    path = out / name / "run.h5"
    wait_for_episodes(path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    return proc, path


def test_sigterm_stops_after_the_episode_and_resumes_bit_for_bit(tmp_path, finished):
    proc, path = stopped_by_sigterm(tmp_path, "term")
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM after episode" in stderr and f"arprobe run --resume {path.parent}" in stderr
    with RunStore(path) as store:
        assert store.status == "stopped" and 2 <= store.completed_episodes < 2 * TINY["n_docs"]
    assert resume(path.parent, progress=False).status == "complete"
    done, base = datasets_of(path), datasets_of(finished)
    np.testing.assert_array_equal(done["loss/eval"], base["loss/eval"])
    np.testing.assert_array_equal(done["weights/all/values"], base["weights/all/values"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_run_exits_within_seconds_of_its_episode_ending(tmp_path, finished, signum):
    # resume_every 4: the stop writes the resume point of its last episode, which the rolling one may lack
    proc = start_run(tmp_path, "prompt", epochs=2, **{"record.resume_every": 4})
    path = tmp_path / "prompt" / "run.h5"
    wait_for_episodes(path, 2, proc)
    sent = time.monotonic()
    proc.send_signal(signum)
    proc.wait(timeout=120)
    exited = time.monotonic()
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 128 + signum, stderr[-2000:]
    name = signal.Signals(signum).name
    found = re.search(rf"stopped by {name} after episode (\d+), ([0-9.]+) s after the signal;", stderr)
    assert found, stderr[-2000:]
    episode_ended = sent + float(found[2])  # the episode under way finished, its resume point written
    assert episode_ended <= exited + 0.1  # the run's own clock agrees with ours (0.1 s of rounding)
    # The store is closed and the process gone within seconds (the interpreter's teardown alone took
    # 4-10 s on a loaded 2-core machine before the stop skipped it).
    assert exited - episode_ended < 10, (exited - episode_ended, stderr[-2000:])
    with h5py.File(path, "r") as h5:  # closed cleanly: an ordinary reader opens it
        assert h5["state/status"][0] == b"stopped" and int(h5["progress"][0]) == int(found[1])
    with h5py.File(resume_path(path), "r") as h5:
        assert int(h5.attrs["episode"]) == int(found[1])
    assert resume(path.parent, progress=False).status == "complete"
    np.testing.assert_array_equal(datasets_of(path)["loss/eval"], datasets_of(finished)["loss/eval"])


def test_killed_before_the_first_resume_slot_resumes_from_the_start(tmp_path, finished):
    path = run(tiny_config(tmp_path, name="early", epochs=2), progress=False).path
    with h5py.File(path, "r+") as h5:  # as if killed right after the store was created
        from arprobe.storage.writer import RunWriter

        RunWriter._truncate(h5, 0)
        h5["state/status"][0] = b"running"
    assert not resume_path(path).exists()  # deleted when the run completed: as if never written
    result = resume(path.parent, progress=False)
    assert result.status == "complete"
    np.testing.assert_array_equal(datasets_of(path)["loss/eval"], datasets_of(finished)["loss/eval"])


def _limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes_it(tmp_path, finished):
    flags = [x for k, v in {**TINY, "epochs": 2}.items() for x in (f"--{k}", v)]
    limit = int(finished.stat().st_size * 0.85)  # the disk fills during the run
    result = cli("run", "--out", tmp_path, "--name", "full", "--no-progress", *flags, timeout=240,
                 preexec_fn=_limit_file_size(limit))  # fmt: skip
    line = one_line_error(result, code=1)
    assert line.startswith("arprobe run: error: the run stopped: the disk is full (writing episode")
    assert "more — free that much under" in line
    path = tmp_path / "full" / "run.h5"
    with RunStore(path) as store:
        assert store.status == "failed"
        k = store.completed_episodes
        assert 0 < k < 2 * TINY["n_docs"]
        np.testing.assert_array_equal(store.eval_matrix(), datasets_of(finished)["loss/eval"][: k + 1])
    assert resume(path.parent, progress=False).status == "complete"
    np.testing.assert_array_equal(datasets_of(path)["loss/eval"], datasets_of(finished)["loss/eval"])


def test_the_resume_point_lives_beside_the_store_until_the_run_completes(tmp_path, finished):
    _, path = stopped_by_sigterm(tmp_path, "side")
    with h5py.File(path, "r") as h5:
        assert "resume" not in h5  # not in the store: the finished store does not carry it
        run_id = h5.attrs["run_id"]
    with h5py.File(resume_path(path), "r") as h5:
        assert h5.attrs["run_id"] == run_id and 0 <= h5.attrs["episode"] <= 2 * TINY["n_docs"]
    # A resume point that belongs to another run is refused, naming the file.
    other = tmp_path / "other"
    shutil.copytree(path.parent, other)
    with h5py.File(resume_path(other / "run.h5"), "r+") as h5:
        h5.attrs["run_id"] = "0" * 32
    (other / LOCK_NAME).unlink(missing_ok=True)
    with pytest.raises(UserError, match=r"run.resume.h5' is not the resume point of .*another run wrote it"):
        resume(other, progress=False)
    assert resume(path.parent, progress=False).status == "complete"
    assert not resume_path(path).exists()
    np.testing.assert_array_equal(datasets_of(path)["loss/eval"], datasets_of(finished)["loss/eval"])
