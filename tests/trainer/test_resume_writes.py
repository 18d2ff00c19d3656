"""Resume writes scaled to the model (issue 23): when they happen (record.resume_every), what the
dry-run plan is told, and the background writer: one write at a time, atomic, waited for before the
store closes, its error raised in the loop as one sentence; a run resumed from a once-per-epoch
resume point equals the uninterrupted run bit for bit."""

import time

import h5py
import numpy as np
import pytest
import torch

from arprobe.errors import UserError
from arprobe.storage import RunStore
from arprobe.storage import resume as resume_module
from arprobe.storage.resume import (
    AUTO_EVERY_EPISODE_BYTES,
    ResumeWriter,
    read_resume,
    resume_path,
    resume_points,
    resume_write_plan,
    write_resume,
)
from tests.conftest import TINY, tiny_config

EPOCH = np.repeat([1, 2, 3], 5)  # T = 5, E = 3: K = 15


def written(due):
    return [k for k, d in enumerate(due) if d]


@pytest.mark.parametrize(
    "every, state_bytes, expected",
    [
        ("auto", AUTO_EVERY_EPISODE_BYTES - 1, list(range(16))),  # small: every episode, as before
        ("auto", AUTO_EVERY_EPISODE_BYTES, [5, 10]),  # large: the end of every epoch but the last
        ("epoch", 1, [5, 10]),
        ("episode", 10**12, list(range(16))),
        ("4", 1, [0, 4, 8, 12, 15]),
        ("5", 1, [0, 5, 10, 15]),
        ("0", 1, []),
    ],
)
def test_resume_points_by_policy_and_size(every, state_bytes, expected):
    assert written(resume_points(every, state_bytes, EPOCH)) == expected


def test_epochs_of_unequal_length_end_where_the_schedule_says():
    epoch = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])  # an insert order's epochs
    assert written(resume_points("epoch", 1, epoch)) == [3, 5]


@pytest.mark.parametrize("every", ["auto", "episode", "epoch", "3", "4", "0"])
@pytest.mark.parametrize("n_params", [5_000_000, 1_011_781_632])
def test_the_write_plan_counts_what_the_loop_writes(tmp_path, every, n_params):
    cfg = tiny_config(tmp_path, resume_every=every)
    n_bytes, n_writes = resume_write_plan(cfg, n_params, keep_optimizer=False)
    assert n_bytes == 4 * n_params + resume_module.RNG_BYTES
    epoch = np.repeat(np.arange(1, cfg.schedule.epochs + 1), cfg.data.n_docs)
    assert n_writes == int(resume_points(every, n_bytes, epoch).sum())


def test_the_write_plan_of_a_paper_sized_run():
    """Pythia-1B-sized (1.01e9 parameters), T = 25, E = 5, Adam moments kept: 12 GB a write, 4 writes."""
    from arprobe.trainer.config import load_config

    cfg = load_config(None, {"n_docs": 25, "epochs": 5, "reset_per_doc": False})
    n_bytes, n_writes = resume_write_plan(cfg, 1_011_781_632, keep_optimizer=True)
    assert n_bytes == 12 * 1_011_781_632 + resume_module.RNG_BYTES and n_writes == 4
    cfg.record.resume_every = "episode"
    assert resume_write_plan(cfg, 1_011_781_632, keep_optimizer=True)[1] == 126


def test_resume_every_is_checked_in_one_sentence(tmp_path):
    with pytest.raises(
        UserError, match=r"^record.resume_every must be auto, episode, epoch or a number .*'weekly'"
    ):
        tiny_config(tmp_path, resume_every="weekly")


# --- the file and the background writer ---------------------------------------------------------


def state(value: float):
    params = {"w": torch.full((3, 4), value), "b": torch.full((4,), value, dtype=torch.bfloat16)}
    optim = {"w/exp_avg": np.full((3, 4), value, np.float32), "w/step": np.float32(value)}
    return params, optim, np.arange(8, dtype=np.uint8)


def test_a_write_is_fsynced_then_renamed_and_a_failed_rename_keeps_the_old_point(tmp_path, monkeypatch):
    store = tmp_path / "run.h5"
    write_resume(store, "r", 1, {"w": np.ones(3, np.float32)}, {}, np.zeros(4, np.uint8))
    order = []
    real_replace = resume_module.os.replace
    monkeypatch.setattr(resume_module, "_fsync", lambda path: order.append(("fsync", path.name)))
    monkeypatch.setattr(
        resume_module.os, "replace", lambda a, b: (order.append(("rename", a.name)), real_replace(a, b))
    )
    write_resume(store, "r", 2, {"w": np.full(3, 2, np.float32)}, {}, np.zeros(4, np.uint8))
    assert order == [
        ("fsync", "run.resume.h5.tmp"),
        ("rename", "run.resume.h5.tmp"),
        ("fsync", tmp_path.name),
    ]

    def no_rename(a, b):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(resume_module.os, "replace", no_rename)
    with pytest.raises(OSError):
        write_resume(store, "r", 3, {"w": np.full(3, 3, np.float32)}, {}, np.zeros(4, np.uint8))
    episode, saved = read_resume(store, "r")
    assert episode == 2 and saved["model"]["w"].tolist() == [2, 2, 2]
    assert not resume_path(store).with_name("run.resume.h5.tmp").exists()


def test_large_values_are_written_in_blocks_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(resume_module, "_BLOCK_VALUES", 10)
    big = np.arange(7 * 6, dtype=np.float32).reshape(7, 6)
    write_resume(tmp_path / "run.h5", "r", 1, {"big": big}, {}, np.zeros(4, np.uint8))
    np.testing.assert_array_equal(read_resume(tmp_path / "run.h5", "r")[1]["model"]["big"], big)


def test_the_writer_copies_before_returning_and_writes_float32(tmp_path):
    writer = ResumeWriter(tmp_path / "run.h5", "r")
    params, optim, rng = state(1.5)
    writer.submit(4, params, optim, rng)
    params["w"].fill_(99.0)  # training goes on while the write is under way
    writer.wait()
    episode, saved = read_resume(tmp_path / "run.h5", "r")
    assert episode == 4 and writer.episode == 4 and writer.seconds > 0
    assert saved["model"]["w"].dtype == np.float32 and (saved["model"]["w"] == 1.5).all()
    assert saved["model"]["b"].dtype == np.float32 and (saved["model"]["b"] == 1.5).all()
    assert float(saved["optim"]["w/step"]) == 1.5 and saved["rng"].tolist() == list(range(8))


def test_the_next_write_waits_for_the_one_before(tmp_path, monkeypatch):
    log = []
    real = resume_module.write_resume

    def slow(store_path, run_id, episode, *args):
        log.append(("start", episode))
        time.sleep(0.2)
        real(store_path, run_id, episode, *args)
        log.append(("end", episode))

    monkeypatch.setattr(resume_module, "write_resume", slow)
    writer = ResumeWriter(tmp_path / "run.h5", "r")
    for episode in (1, 2, 3):
        writer.submit(episode, *state(float(episode)))
    writer.wait()
    assert log == [("start", 1), ("end", 1), ("start", 2), ("end", 2), ("start", 3), ("end", 3)]
    assert read_resume(tmp_path / "run.h5", "r")[0] == 3


def test_an_error_on_the_thread_is_one_sentence_in_the_caller(tmp_path, monkeypatch):
    writer = ResumeWriter(tmp_path / "run.h5", "r")
    writer.submit(1, *state(1.0))
    writer.wait()

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resume_module, "write_resume", full)
    writer.submit(2, *state(2.0))  # returns at once; the error comes with the next wait or submit
    with pytest.raises(UserError) as err:
        writer.wait()
    message = str(err.value)
    assert message.startswith(
        f"Writing the resume point of episode 2 to '{tmp_path / 'run.resume.h5'}' failed"
    )
    assert "No space left on device" in message and "the resume point of episode 1 is kept" in message
    assert "\n" not in message
    assert read_resume(tmp_path / "run.h5", "r")[0] == 1
    writer.wait()  # raised once


# --- in the loop ---------------------------------------------------------------------------------


def test_a_run_resumed_from_a_once_per_epoch_point_equals_the_uninterrupted_run(
    tmp_path, monkeypatch, tiny_run
):
    """T = 5, E = 3, resume_every = epoch: points after episodes 5 and 10. Killed in episode 9 (after
    8, not a write point), the run resumes from episode 5 and ends with the default run's store."""
    from arprobe.trainer import loop

    real = loop.train_episode

    def crash_at_9(*args, episode, **kwargs):
        if episode == 9:
            raise RuntimeError("power cut")
        return real(*args, episode=episode, **kwargs)

    monkeypatch.setattr(loop, "train_episode", crash_at_9)
    with pytest.raises(RuntimeError, match="power cut"):
        loop.run(tiny_config(tmp_path, resume_every="epoch"), progress=False)
    path = tmp_path / "tiny" / "run.h5"
    with RunStore(path) as store:
        assert store.completed_episodes == 8
    with h5py.File(path, "r") as h5, h5py.File(resume_path(path), "r") as point:
        assert int(point.attrs["episode"]) == 5 and point.attrs["run_id"] == h5.attrs["run_id"]
    monkeypatch.setattr(loop, "train_episode", real)
    assert loop.resume(path.parent, progress=False).status == "complete"
    with RunStore(path) as resumed, RunStore(tiny_run / "run.h5") as whole:
        assert resumed.completed_episodes == 3 * TINY["n_docs"]
        np.testing.assert_array_equal(resumed.eval_matrix(), whole.eval_matrix())
    assert not resume_path(path).exists()


def test_the_store_closes_after_the_last_write_ends(tmp_path, monkeypatch):
    from arprobe.storage.writer import RunWriter
    from arprobe.trainer import loop

    log = []
    real_write, real_close = resume_module.write_resume, RunWriter.close

    def slow(store_path, run_id, episode, *args):
        time.sleep(0.05)
        real_write(store_path, run_id, episode, *args)
        log.append(episode)

    def close(self, status, reason=""):
        log.append(status)
        real_close(self, status, reason)

    monkeypatch.setattr(resume_module, "write_resume", slow)
    monkeypatch.setattr(RunWriter, "close", close)
    result = loop.run(tiny_config(tmp_path, epochs=1), progress=False)
    assert result.status == "complete"
    assert log == [*range(TINY["n_docs"] + 1), "complete"]  # every episode (auto, a small model), then close
    assert not resume_path(result.path).exists()
    assert not resume_path(result.path).with_name("run.resume.h5.tmp").exists()


def test_a_failed_background_write_fails_the_run_in_one_sentence(tmp_path, monkeypatch):
    from arprobe.trainer import loop

    real = resume_module.write_resume

    def full_at_3(store_path, run_id, episode, *args):
        if episode == 3:
            raise OSError(28, "No space left on device")
        real(store_path, run_id, episode, *args)

    monkeypatch.setattr(resume_module, "write_resume", full_at_3)
    with pytest.raises(
        UserError, match=r"^Writing the resume point of episode 3 to .* failed \(OSError: .*No space"
    ):
        loop.run(tiny_config(tmp_path, epochs=1), progress=False)
    path = tmp_path / "tiny" / "run.h5"
    with RunStore(path) as store:
        assert store.status == "failed" and 3 <= store.completed_episodes <= 4
    with h5py.File(resume_path(path), "r") as h5:
        assert int(h5.attrs["episode"]) == 2  # the newest good point stays
