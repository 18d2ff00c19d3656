"""The recording table (arprobe.storage.recordings) is the one source of recording kinds, and
``plan(cfg)`` is the public plan of a run: a new kind is its table entry plus its declare-and-capture
function, and the writer, reader, ``info``, the plan and the probes' checks follow without edits."""

from __future__ import annotations

import argparse
import dataclasses
import re

import numpy as np
import pytest

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import missing_requirement
from arprobe.storage import RunStore, recordings
from arprobe.storage.recordings import Kind, Recording
from arprobe.storage.schema import allocated_bytes
from arprobe.trainer import recorders
from arprobe.trainer.plan import human_bytes, plan
from tests.conftest import TINY, tiny_config
from tests.store_factory import make_store

# A kind no built-in code knows: one row per document, two values each.
NEW = Kind("doc_marks", "record.doc_marks (a test's kind)", "document marks of", True, per_document=True)


def _marks(episode: int, n_docs: int) -> np.ndarray:
    """[T, 2] float32: (episode, document) per row, so every stored value says where it came from."""
    return np.stack([np.full(n_docs, episode), np.arange(n_docs)], axis=1).astype(np.float32)


def _declare_marks(recorder, schedule) -> None:
    """The new kind's declare-and-capture function: marks at the end of every epoch."""
    T = recorder.task.n_docs
    recorder.add(
        Recording(
            kind="doc_marks",
            name="probe",
            what="episode and document of each row",
            when="end of each epoch",
            row_shape=recordings.kind("doc_marks").row_shape((2,), T),
            episodes=tuple(int(k) for k in schedule.epoch_ends),
        ),
        lambda episode: _marks(episode, T),
    )


@pytest.fixture
def new_kind(monkeypatch):
    """The table and the recorder's declare functions, each a copy with the new kind added."""
    monkeypatch.setattr(recordings, "KINDS", {**recordings.KINDS, NEW.name: NEW})
    monkeypatch.setattr(recorders, "DECLARE", {**recorders.DECLARE, NEW.name: _declare_marks})


def test_a_new_kind_is_written_read_listed_and_planned(new_kind, tmp_path, capsys):
    from arprobe.cli.info import info_command, summarize
    from arprobe.trainer.loop import run

    cfg = tiny_config(tmp_path)  # T=5, E=3: epochs end after episodes 5, 10, 15
    planned = plan(cfg)
    # the plan: the recording in the table, its bytes a part of their own in whole chunks
    (marks,) = [r for r in planned.recordings if r.kind == "doc_marks"]
    assert marks.key == "doc_marks/probe" and marks.row_shape == (5, 2) and marks.episodes == (5, 10, 15)
    assert planned.sizes["doc_marks"] == allocated_bytes((5, 2), 4, 3) > 0
    parts = [k for k in planned.sizes if k not in ("total", "resume", "per_episode")]
    assert planned.store_bytes == sum(planned.sizes[k] for k in parts)
    assert (
        "doc_marks/probe" in planned.text and f"doc_marks         {human_bytes(marks.nbytes)}" in planned.text
    )

    result = run(cfg, progress=False)
    assert result.status == "complete"
    with RunStore(result.path) as store:
        # the writer grew the dataset, the reader reads it with its episodes
        assert store.h5["doc_marks/probe/values"].shape == (3, 5, 2)
        assert store.recorded("doc_marks") == ["probe"]
        episodes, values = store.recording("doc_marks", "probe")
        np.testing.assert_array_equal(episodes, [5, 10, 15])
        np.testing.assert_array_equal(values, np.stack([_marks(k, 5) for k in (5, 10, 15)]))
        assert store.recording_info("doc_marks", "probe") == {
            "what": "episode and document of each row",
            "when": "end of each epoch",
        }
        # a missing one is named in the table's words, with the table's option
        message = (
            "has no document marks of 'other' (recorded: probe); "
            "record it with record.doc_marks (a test's kind)."
        )
        with pytest.raises(MissingDataError, match=re.escape(message)):
            store.recording("doc_marks", "other")
        with pytest.raises(MissingDataError, match=re.escape(message)):
            missing_requirement(store, "doc_marks:other")
        summary = summarize(store)
    assert summary["recorded"]["doc_marks/probe"]["snapshots"] == 3
    assert summary["recorded"]["doc_marks/probe"]["shape"] == [5, 2]
    assert info_command(argparse.Namespace(run=str(result.path), json=False), []) == 0
    assert "  doc_marks/probe: 3 snapshot(s) at episodes 5..15 (end of each epoch), shape [5, 2]" in (
        capsys.readouterr().out
    )


def test_the_existing_kinds_words_and_options_come_from_the_table(monkeypatch, tmp_path):
    table = {
        name: dataclasses.replace(k, words=f"<{name} words>", option=f"<{name} option>")
        for name, k in recordings.KINDS.items()
    }
    monkeypatch.setattr(recordings, "KINDS", table)
    run_dir = make_store(tmp_path / "hand", loss_eval=np.ones((6, 3)), schedule_doc=np.arange(5) % 3)
    with RunStore(run_dir) as store:
        for kind, read in (
            ("weights", store.weights),
            ("grads", store.grads),
            ("activations", store.activations),
        ):
            message = f"has no <{kind} words> 'x' (recorded: none); record it with <{kind} option>."
            with pytest.raises(MissingDataError, match=re.escape(message)):
                read("x")
            with pytest.raises(MissingDataError, match=re.escape(message)):
                missing_requirement(store, f"{kind}:x")
            with pytest.raises(
                MissingDataError, match=re.escape(f"recorded no {kind}; record them with <{kind} option>.")
            ):
                missing_requirement(store, kind)
        with pytest.raises(MissingDataError, match=re.escape("record them with <checkpoints option>.")):
            missing_requirement(store, "checkpoints")


def test_every_kind_the_recorder_declares_is_in_the_table():
    assert set(recorders.DECLARE) <= set(recordings.KINDS)
    assert recordings.snapshot_kinds() == ["weights", "activations", "grads"]
    assert recordings.kind("grads").row_shape((7,), 3) == (3, 7)  # one row per document
    assert recordings.kind("weights").row_shape((7,), 3) == (7,)


def test_plan_of_the_default_config_is_what_the_dry_run_prints():
    from arprobe.trainer.config import load_config
    from arprobe.trainer.loop import dry_run

    cfg = load_config(None, {})
    planned = plan(cfg)
    rec, K, T = cfg.record, cfg.schedule.epochs * cfg.data.n_docs, cfg.data.n_docs
    assert planned.episodes == K
    # the default recording, from the config: unembed and all-weights sketches every episode and
    # before training, the attention's per-document gradients at every epoch end
    by_key = {r.key: r for r in planned.recordings}
    assert by_key["weights/unembed"].row_shape == (rec.sketch_dim,)
    assert by_key["weights/all"].row_shape == (rec.all_weights_dim,)
    assert len(by_key["weights/all"].episodes) == K + 1
    grads = [r for r in planned.recordings if r.kind == "grads"]
    assert [r.row_shape for r in grads] == [(T, rec.sketch_dim)] and grads[0].episodes == (10, 20, 30, 40)
    weights = sum(
        allocated_bytes(r.row_shape, 4, len(r.episodes)) for r in planned.recordings if r.kind == "weights"
    )
    assert planned.sizes["weights"] == weights
    assert planned.resume_bytes > 0 and planned.memory_bytes > 0

    printed = dry_run(cfg)
    for part, size in planned.sizes.items():
        if part not in ("total", "per_episode", "resume") and size:
            assert f"  {part:<17} {human_bytes(size)}\n" in printed
    total, per = human_bytes(planned.store_bytes), human_bytes(planned.sizes["per_episode"])
    assert f"  total             {total} ({per} per episode)" in printed
    assert f"up to {human_bytes(planned.resume_bytes)} more in run.resume.h5" in printed


def test_sweep_dry_run_sizes_come_from_the_plan(monkeypatch, tmp_path):
    import arprobe.trainer.plan as plan_module
    from arprobe.sweep.estimate import plan_point

    overrides = {**TINY, "out": str(tmp_path)}
    planned = plan(tiny_config(tmp_path))
    point = plan_point(overrides)
    assert point.store_bytes == planned.store_bytes and point.note == ""
    N, K, C, M, T = planned.n_params, 15, 32, 3, 5
    assert point.flops == 6 * N * C * M * K + 2 * N * C * T * (K + 1)

    # a user's error is the point's note; a bug in the trainer is not hidden
    def refuse(cfg):
        raise UserError("No room for this run.")

    monkeypatch.setattr(plan_module, "plan", refuse)
    assert plan_point(overrides).note == "No room for this run."

    def broken(cfg):
        raise AttributeError("'Setup' object has no attribute 'schedule'")

    monkeypatch.setattr(plan_module, "plan", broken)
    with pytest.raises(AttributeError):
        plan_point(overrides)


def test_the_benchmarks_store_from_shapes_equals_the_plan(tmp_path):
    """benchmarks.runs.store_from_shapes sizes models too large to build; on one that can be built
    it must give the plan's bytes (all but the documents' text, for which it has a stand-in)."""
    from benchmarks.runs import store_from_shapes

    cfg = tiny_config(tmp_path)
    planned = plan(cfg)
    (unembed,) = [r for r in planned.recordings if r.key == "weights/unembed"]
    vocab = unembed.row_shape[0] // cfg.model.d_model  # the tokenizer's size: the unembedding is exact here
    parts = store_from_shapes(cfg, vocab)["parts"]
    assert set(parts) == set(planned.sizes)
    for part in set(parts) - {"docs", "total", "per_episode"}:
        assert parts[part] == planned.sizes[part], part
