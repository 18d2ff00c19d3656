"""Damaged and hostile stores, done for real against the CLI or the loop: a reader open at the end of a
run, truncated files, a flipped bit, malformed attributes, a write that fails inside HDF5, and a
store that asks for remote code."""

import json
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from arprobe.storage import RunStore
from arprobe.trainer.loop import resume, run
from tests.conftest import TINY, tiny_config
from tests.helpers import (
    cli,
    datasets_of,
    one_line_error,
    start_run,
    wait_for_episodes,
)


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
