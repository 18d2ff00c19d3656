"""Reliability round 2: readers at the wrong moment, damaged and hostile stores, two writers, a
full disk, signals. Each case is done for real against the CLI or the loop."""

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
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


def test_a_reader_open_at_the_end_does_not_fail_the_run(tmp_path):
    proc = start_run(tmp_path, "watched", epochs=2)
    path = tmp_path / "watched" / "run.h5"
    wait_for_episodes(path, 1, proc)
    with RunStore(path) as store:  # held open until after the writer has finished
        proc.wait(timeout=240)
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        assert store.status == "complete"  # the live status, read through the open handle
    with RunStore(path) as store:
        assert store.status == "complete" and store.completed_episodes == 2 * TINY["n_docs"]


@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.7, 0.999])
def test_a_truncated_store_is_refused_at_once(finished, tmp_path, fraction):
    cut = tmp_path / "cut.h5"
    data = finished.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    started = time.monotonic()
    line = one_line_error(cli("info", cut, timeout=30))
    assert time.monotonic() - started < 10
    assert line.startswith(f"arprobe info: error: '{cut}' is truncated: it has ")


def test_a_flipped_bit_in_the_eval_matrix_is_reported_not_analysed(finished, tmp_path):
    bad = tmp_path / "bad.h5"
    shutil.copy(finished, bad)
    with h5py.File(finished, "r") as h5:
        offset = h5["loss/eval"].id.get_chunk_info(0).byte_offset  # the first chunk's bytes on disk
    with open(bad, "r+b") as f:
        f.seek(offset + 5)
        byte = f.read(1)
        f.seek(offset + 5)
        f.write(bytes([byte[0] ^ 0x10]))
    line = one_line_error(cli("info", bad, timeout=60))
    assert f"'{bad}' is damaged: reading loss/eval failed (a checksum does not match" in line
    analyzed = cli("analyze", bad, "--probe", "recovery_score", timeout=60)
    assert analyzed.returncode == 1 and "Traceback" not in analyzed.stderr + analyzed.stdout
    record = json.loads((tmp_path / "report" / "recovery_score" / "result.json").read_text())
    assert record["status"] == "failed" and "a checksum does not match" in json.dumps(record)


def test_malformed_store_attributes_are_one_sentence(finished, tmp_path):
    cases = {
        "config": ("{not json", "has a config attribute that is not valid JSON"),
        "format_version": ("two", "has a malformed format_version attribute"),
        "format": ("something-else", "is an HDF5 file but not an arprobe run store"),
    }
    for attr, (value, message) in cases.items():
        bad = tmp_path / f"{attr}.h5"
        shutil.copy(finished, bad)
        with h5py.File(bad, "r+") as h5:
            h5.attrs[attr] = value
        assert message in one_line_error(cli("info", bad)), attr
    bad = tmp_path / "status.h5"
    shutil.copy(finished, bad)
    with h5py.File(bad, "r+") as h5:
        h5["state/status"][0] = b"exploded"
    assert "has an unknown status 'exploded'" in one_line_error(cli("info", bad))


def test_resume_never_takes_trust_remote_code_from_the_store(tmp_path, monkeypatch):
    import arprobe.trainer.loop as loop

    path = run(tiny_config(tmp_path, name="trusting", epochs=2), progress=False).path
    with h5py.File(path, "r+") as h5:
        config = json.loads(h5.attrs["config"])
        config["model"]["trust_remote_code"] = True
        h5.attrs["config"] = json.dumps(config)
        h5["state/status"][0] = b"stopped"
    seen = []
    real_prepare = loop.prepare
    monkeypatch.setattr(
        loop, "prepare", lambda cfg: seen.append(cfg.model.trust_remote_code) or real_prepare(cfg)
    )
    assert resume(path.parent, progress=False).status == "complete"
    assert seen == [False]


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


FAIL_INSIDE_A_WRITE = """
import sys
from arprobe.cli.main import main
from arprobe.storage.writer import RunWriter

append = RunWriter.append_recording


def failing(self, kind, name, episode, values):
    append(self, kind, name, episode, values)  # half of the episode is written, then the disk is full
    if episode == 3:
        raise RuntimeError("Unable to synchronously flush file (errno = 28, error message = 'No space left')")


RunWriter.append_recording = failing
sys.exit(main(sys.argv[1:]))
"""


def test_a_write_that_fails_inside_hdf5_leaves_a_store_any_reader_opens(tmp_path, finished):
    """The room check passed, then the write itself failed (h5py raises RuntimeError from a flush):
    one sentence, exit 1, and a store closed for every reader, with episodes 1..2 and resumable."""
    flags = [x for k, v in {**TINY, "epochs": 2}.items() for x in (f"--{k}", str(v))]
    driver = tmp_path / "driver.py"
    driver.write_text(FAIL_INSIDE_A_WRITE)
    result = subprocess.run(
        [
            sys.executable,
            str(driver),
            "run",
            "--out",
            str(tmp_path),
            "--name",
            "inside",
            "--no-progress",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    line = one_line_error(result, code=2)
    assert line.startswith("arprobe run: error: The run stopped: the disk is full (writing episode 3)")
    path = tmp_path / "inside" / "run.h5"
    with h5py.File(path, "r") as h5:  # an ordinary reader: no SWMR, no h5clear
        assert h5["state/status"][0] == b"failed" and int(h5["progress"][0]) == 2
    with RunStore(path) as store:
        assert store.status == "failed" and store.completed_episodes == 2
        np.testing.assert_array_equal(store.eval_matrix(), datasets_of(finished)["loss/eval"][:3])
    assert resume(path.parent, progress=False).status == "complete"
    np.testing.assert_array_equal(datasets_of(path)["loss/eval"], datasets_of(finished)["loss/eval"])


def test_an_offline_hub_id_is_one_sentence_in_seconds(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    line = one_line_error(
        cli(
            "run", "--out", tmp_path, "--model.name", "EleutherAI/pythia-14m", "--init", "pretrained", env=env
        )
    )
    assert time.monotonic() - started < 15
    assert (
        "Model 'EleutherAI/pythia-14m' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        in line
    )


def test_unreachable_hub_is_named(monkeypatch):
    from arprobe.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda endpoint, timeout=3.0: False)
    with pytest.raises(
        UserError, match=r"Model 'org/model' is not in the local Hugging Face cache and the hub"
    ):
        hub.check_hub_model("org/model")


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
