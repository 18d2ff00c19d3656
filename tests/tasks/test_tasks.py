"""The text task: clean windows, two-sided window shift, masking, and its losses."""

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import torch

from arprobe.tasks.text import IGNORE, TextLM
from tests.helpers import FIXTURES, install_dist_info


def task(lengths, width=14, C=8, S=3, mask_prob=0.0):
    tokens = torch.arange(len(lengths) * width).view(len(lengths), width) % 1000
    lengths = torch.tensor(lengths)
    tokens = torch.where(torch.arange(width)[None] < lengths[:, None], tokens, 0)
    starts = torch.clamp(lengths - C, 0, S)
    return TextLM(tokens, lengths, context_length=C, max_shift=S, mask_prob=mask_prob, mask_id=999,
                  window_start=starts)  # fmt: skip


def test_the_clean_window_is_the_document_for_eval():
    t = task([14, 9, 5])  # window starts: min(14 - 8, 3) = 3, min(9 - 8, 3) = 1, 0
    np.testing.assert_array_equal(t.eval_tokens[0], np.arange(3, 11))
    np.testing.assert_array_equal(t.eval_tokens[1], 14 + np.arange(1, 9))
    np.testing.assert_array_equal(t.eval_lengths, [8, 8, 5])


def test_window_shift_is_two_sided_and_stays_inside_the_document():
    t = task([14, 9, 5])
    g = torch.Generator().manual_seed(0)
    starts = {d: set() for d in range(3)}
    for _ in range(400):
        for d in range(3):
            batch = t.training_batch(d, g)
            first = int(batch["input_ids"][0, 0]) - 14 * d
            starts[d].add(first)
            real = (batch["labels"] != IGNORE).sum().item()
            assert real == min(8, [14, 9, 5][d] - first)
    # doc 0: clean start 3, s in [-3, 3] -> 0..6, all inside 14 tokens (14 - 8 = 6)
    assert starts[0] == set(range(0, 7))
    # doc 1 (9 tokens): 1 + s clipped to [0, 1]; doc 2 (shorter than C) never moves
    assert starts[1] == {0, 1} and starts[2] == {0}


def test_masking_replaces_inputs_not_labels():
    t = task([14], S=0, mask_prob=0.5)
    batch = t.training_batch(0, torch.Generator().manual_seed(1))
    hit = batch["input_ids"][0] == 999
    assert 0 < hit.sum() < 8
    np.testing.assert_array_equal(batch["labels"][0], np.arange(0, 8))


# --- the task seam: registry, masks, a third-party task ------------------------------------------


def test_text_position_mask_counts_tokens_past_the_window_start():
    arrays = {"lengths": np.array([14, 9, 5, 2]), "window_start": np.array([3, 1, 0, 3])}
    mask = TextLM.position_mask(arrays, 4, 8)  # real positions: min(14-3, 8)=8, 8, 5, max(2-3, 0)=0
    assert mask.shape == (4, 8) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(1), [8, 8, 5, 0])
    np.testing.assert_array_equal(mask[2], [True] * 5 + [False] * 3)  # a prefix: text is right-padded


def test_builtin_tasks_come_from_the_entry_point_group_and_unknown_ones_are_named():
    from arprobe.errors import UserError
    from arprobe.tasks.image import ImageClassification, ImageLM
    from arprobe.tasks.registry import task_class, task_registry

    assert {"text-lm", "image-lm", "image-classification"} <= set(task_registry().names())
    assert task_registry().source("text-lm") == "arprobe"
    assert (task_class("text-lm"), task_class("image-lm")) == (TextLM, ImageLM)
    assert task_class("image-classification") is ImageClassification
    with pytest.raises(UserError) as err:
        task_class("text_lm")
    assert str(err.value).startswith("Unknown task 'text_lm'. Did you mean 'text-lm'? Available: ")


def test_the_generic_registry_checks_names_and_the_base_class():
    from arprobe.errors import UserError
    from arprobe.registry import Registry
    from arprobe.tasks.base import Task

    registry = Registry("arprobe.nowhere", base=Task, kind="task", discover=False)
    registry.register("toy-task", "json:JSONDecoder", source="toy-dist")  # hyphens: a task name may have them
    registry.register("text-lm", TextLM)
    assert registry.names() == ["text-lm", "toy-task"]
    with pytest.raises(UserError) as err:
        registry.load("toy-task")
    assert str(err.value) == (
        "Could not load task plugin 'toy-task' (json:JSONDecoder, from toy-dist): "
        "it is not a subclass of arprobe.tasks.base.Task."
    )
    with pytest.raises(UserError) as err:
        registry.register("Toy/../x", TextLM)
    assert str(err.value) == (
        "Task name 'Toy/../x' (from in-memory) is refused: task names must be lower-case letters, digits, "
        "underscores and hyphens, starting with a letter."
    )
    assert registry.load("text-lm") is TextLM


def test_sweep_backends_come_from_the_entry_point_group():
    from arprobe.sweep.backend import BackendOptions, backend_class, backend_registry
    from arprobe.sweep.local import LocalBackend

    assert {"local", "ray"} <= set(backend_registry().names())
    local = backend_class("local")
    assert local is LocalBackend and local.plan(BackendOptions(workers=2, threads=3, n_jobs=5)) == (2, 3)
    assert backend_class("ray").remote_flags == ("address", "gpus_per_run")


TASK_PLUGIN = FIXTURES / "task_pkg"
TOY = ["--task", "toy-regression", "--n_docs", "4", "--context_length", "16", "--steps_per_doc", "3",
       "--epochs", "3", "--d_model", "16", "--n_layers", "2", "--threads", "1", "--no-progress"]  # fmt: skip


@pytest.fixture
def task_env(tmp_path):
    """Environment for a subprocess in which the fixture task package is 'installed'."""

    project = tomllib.loads((TASK_PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    install_dist_info(site, project["name"], project["version"], {})
    entry_points = project["entry-points"]["arprobe.tasks"]
    lines = ["[arprobe.tasks]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (next(site.glob("*.dist-info")) / "entry_points.txt").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(TASK_PLUGIN), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env


def arprobe_cli(env, *args, extra_env=None):
    return subprocess.run([sys.executable, "-m", "arprobe", *args], capture_output=True, text=True,
                          env={**env, **(extra_env or {})}, timeout=600)  # fmt: skip


REPLAY = """
import json, sys
import torch
from arprobe.storage import RunStore
from arprobe.trainer.api import Replay
torch.set_num_threads(1)
with RunStore(sys.argv[1]) as store:
    (k,) = store.checkpoint_episodes()
    doc = int(store.schedule().doc[k])
    replay = Replay(store, int(k), device="cpu")
    before = replay.evaluate().tolist()
    replay.train_episode(doc)
    print(json.dumps({"k": int(k), "before": before, "after": replay.evaluate().tolist()}))
"""


def test_a_third_party_task_runs_resumes_and_replays(task_env, tmp_path):
    from arprobe.storage import RunStore

    assert tomllib.loads((TASK_PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"][
        "arprobe.tasks"
    ] == {"toy-regression": "arprobe_demo_task:ToyRegression"}
    out = str(tmp_path / "runs")
    full = arprobe_cli(task_env, "run", *TOY, "--out", out, "--name", "full")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "documents: 4 documents of 16 examples each" in full.stdout

    # Stopped by SIGTERM during its 7th step (episode 3 of 12, M = 3): the episode finishes, then it stops.
    stopped = arprobe_cli(task_env, "run", *TOY, "--out", out, "--name", "cut",
                          extra_env={"ARPROBE_DEMO_STOP_AFTER": "7"})  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr[-3000:]  # 128 + SIGTERM
    with RunStore(tmp_path / "runs" / "cut") as s:
        assert (s.status, s.completed_episodes) == ("stopped", 3)
    resumed = arprobe_cli(task_env, "run", "--resume", str(tmp_path / "runs" / "cut"), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    with RunStore(tmp_path / "runs" / "full") as a, RunStore(tmp_path / "runs" / "cut") as b:
        assert b.status == "complete" and b.config["task"] == "toy-regression"
        assert sorted(a.doc_arrays()) == ["inputs", "targets"]  # what the task stores, nothing textual
        assert a.doc_arrays()["inputs"].shape == (4, 16, 8)
        ev = a.eval_matrix()
        assert ev.shape == (13, 4)
        # The same computation on one thread from the same state (model, Adam moments, RNG): bit for bit.
        np.testing.assert_array_equal(b.eval_matrix(), ev)
        np.testing.assert_array_equal(b.train_loss(), a.train_loss())
        assert a.recorded("grads") == ["blocks.1.attn"] and a.activations("ln_final.hook_normalized")[
            2
        ].shape[1:] == (1, 16, 16)  # [A, n docs, B examples, d_model]
    replay = subprocess.run([sys.executable, "-c", REPLAY, str(tmp_path / "runs" / "full")],
                            capture_output=True, text=True, env=task_env, timeout=600)  # fmt: skip
    assert replay.returncode == 0, replay.stderr[-3000:]
    got = json.loads(replay.stdout)
    assert got["k"] == 8  # the default checkpoint: the end of the next-to-last epoch
    # Loaded from the checkpoint and trained on the next episode's document as the run did, on one
    # thread with the run's RNG state: the run's own eval rows, bit for bit.
    np.testing.assert_array_equal(np.float32(got["before"]), ev[8])
    np.testing.assert_array_equal(np.float32(got["after"]), ev[9])


def test_an_unknown_task_lists_the_installed_ones(task_env, tmp_path):
    result = arprobe_cli(task_env, "run", "--task", "toy_regression", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "arprobe run: error: Unknown task 'toy_regression'. Did you mean 'toy-regression'? "
        "Available: image-classification, image-lm, text-lm, toy-regression."
    )
    assert not (tmp_path / "runs").exists()  # refused before anything is written
