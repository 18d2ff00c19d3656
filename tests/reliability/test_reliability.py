"""Runs that survive SIGKILL, resume bit for bit, read live, stay deterministic, and refuse
bad situations clearly. Each test does the thing for real: a real run killed from outside."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from arprobe.errors import UserError
from arprobe.storage import RunStore
from arprobe.trainer.loop import resume, run
from tests.conftest import TINY, tiny_config
from tests.helpers import LONG, datasets_of, start_run, wait_for_episodes

T = TINY["n_docs"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    result = run(tiny_config(out, name="base", **LONG), progress=False)
    return result.path


@pytest.mark.parametrize(
    "kill_after, extra",
    [
        (2, {}),
        (13, {}),
        (7, {"reset_per_doc": "false", "record.resume_every": 3}),  # Adam state carried over, resume 3 back
    ],
)
def test_sigkill_leaves_a_consistent_store_that_resumes_bit_for_bit(
    tmp_path, uninterrupted, kill_after, extra
):
    if extra:
        uninterrupted = run(tiny_config(tmp_path / "base", name="base", **LONG, **extra), progress=False).path
    proc = start_run(tmp_path, "killed", **extra)
    path = tmp_path / "killed" / "run.h5"
    seen = wait_for_episodes(path, kill_after, proc)
    # live reading: another process reads the store while the run is still writing it
    info = subprocess.run(
        [sys.executable, "-m", "arprobe", "info", str(path)], capture_output=True, text=True, timeout=120
    )
    assert info.returncode == 0 and "status:     running" in info.stdout, info.stderr
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    with RunStore(path) as store:
        assert store.status == "running"
        k = store.completed_episodes
        assert k >= seen
        loss = store.eval_matrix()
        doc = store.schedule().doc
        assert (
            loss.shape == (k + 1, T)
            and len(doc) == k
            and store.train_loss().shape == (k, TINY["steps_per_doc"])
        )
        assert np.isfinite(loss).all()
        episodes, _ = store.weights("unembed")
        np.testing.assert_array_equal(episodes, np.arange(k + 1))
        assert all(e <= k for e in store.checkpoint_episodes())
        base = datasets_of(uninterrupted)
        np.testing.assert_array_equal(loss, base["loss/eval"][: k + 1])  # no half-written rows

    result = resume(tmp_path / "killed", progress=False)
    assert result.status == "complete"
    resumed, base = datasets_of(path), datasets_of(uninterrupted)
    assert resumed.keys() == base.keys()
    for name in base:
        np.testing.assert_array_equal(resumed[name], base[name], err_msg=name)
    with RunStore(path) as store:
        assert store.status == "complete" and store.completed_episodes == T * LONG["epochs"]


def test_same_seed_same_store(tmp_path, uninterrupted):
    again = run(tiny_config(tmp_path, name="again", **LONG), progress=False)
    a, b = datasets_of(uninterrupted), datasets_of(again.path)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    other = run(tiny_config(tmp_path, name="other", seed=1, epochs=1), progress=False)
    assert not np.array_equal(datasets_of(other.path)["loss/eval"][:2], a["loss/eval"][:2])


def test_divergence_stops_cleanly(tmp_path):
    result = run(
        tiny_config(tmp_path, name="nan", **{"optim.name": "sgd", "lr": 1e12, "epochs": 2}), progress=False
    )
    assert result.status == "diverged"
    assert "try a lower optim.lr" in result.stop_reason and "episode" in result.stop_reason
    with RunStore(result.path) as store:
        assert store.status == "diverged" and "NaN" in store.stop_reason
        assert np.isfinite(store.eval_matrix()).all()  # only good episodes are in the store


def test_resume_refuses_a_complete_run(uninterrupted):
    with pytest.raises(UserError, match="already complete; nothing to resume"):
        resume(uninterrupted.parent, progress=False)


def test_disk_estimate_refuses_and_dry_run_writes_nothing(tmp_path, monkeypatch):
    import shutil

    from arprobe.trainer import plan

    out = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "arprobe", "run", "--dry-run", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "store estimate:" in result.stdout and "per episode" in result.stdout
    assert not out.exists()
    monkeypatch.setattr(
        plan.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    )
    # Refused before anything is built: the least store of 15 episodes (their losses and the weights/all
    # sketch, 15 x 262,216 bytes, and 640 bytes of tokens) is 3.9 MB ...
    with pytest.raises(
        UserError, match=r"The store of 15 episodes needs at least 3.9 MB but only 1.0 KB is free"
    ):
        run(tiny_config(tmp_path, name="full"), progress=False)
    # ... and, were that check passed, by the estimate of the prepared run.
    import arprobe.trainer.loop as loop

    monkeypatch.setattr(loop, "check_scale", lambda cfg, run_dir=None: None)
    with pytest.raises(UserError, match=r"The store needs about .* MB but only 1.0 KB is free"):
        run(tiny_config(tmp_path, name="full"), progress=False)
    assert not (tmp_path / "full").exists()


@pytest.mark.parametrize(
    "shape",
    [
        {},  # the tiny default recording
        {"epochs": 2, "sketch_dim": 4096, "activation_docs": "0,1,2", "grads": "blocks.0.attn,blocks.1.mlp"},
        {"epochs": 2, "reset_per_doc": False, "checkpoints": "2", "weights": "unembed,blocks.0.attn"},
        {"epochs": 1, "context_length": 48, "max_shift": 4, "resume_every": 0, "all_weights_dim": 0},
    ],
)
def test_size_estimate_is_an_upper_bound_of_real_stores(tmp_path, shape):
    from arprobe.trainer.loop import _layout, _recorder, prepare
    from arprobe.trainer.plan import estimate_store_bytes

    cfg = tiny_config(tmp_path, **shape)
    setup = prepare(cfg)
    estimate = estimate_store_bytes(_layout(setup, _recorder(setup)), setup)["total"]
    actual = run(cfg, progress=False).path.stat().st_size
    assert actual <= estimate <= 1.35 * actual, (actual, estimate)
