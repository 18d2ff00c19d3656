"""Live logging: callbacks get the metrics the store gets; TensorBoard event files, a W&B offline run
and an MLflow file store are read back and hold the same numbers; logging leaves the eval matrix
bit-identical; a bad logger name or a missing extra is one sentence. No network: W&B offline, MLflow
on a file:// store."""

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from arprobe.errors import UserError
from arprobe.storage import RunStore
from arprobe.trainer import loggers
from arprobe.trainer.callbacks import Callbacks, check_callbacks
from arprobe.trainer.loop import run
from tests.conftest import tiny_config

SMALL = {"n_docs": 3, "steps_per_doc": 2, "epochs": 2, "threads": 1}  # K = 6 episodes, 12 steps


class Recorder:
    """Keeps every call."""

    def __init__(self):
        self.starts, self.steps, self.episodes, self.ends = [], [], [], []

    def on_start(self, info):
        self.starts.append(info)

    def on_step(self, m):
        self.steps.append(m)

    def on_episode(self, m):
        self.episodes.append(m)

    def on_end(self, info):
        self.ends.append(info)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A plain run, and the same run with all three loggers and a recording callback."""
    tmp = tmp_path_factory.mktemp("logging")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DIR", str(tmp / "wandb"))
        mp.setenv("MLFLOW_TRACKING_URI", (tmp / "mlruns").as_uri())
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        mp.setenv("MLFLOW_EXPERIMENT_NAME", "arprobe-test")
        (tmp / "wandb").mkdir()
        plain = run(tiny_config(tmp, name="plain", **SMALL), progress=False)
        recorder = Recorder()
        cfg = tiny_config(tmp, name="logged", report_to="tensorboard,wandb,mlflow", **SMALL)
        logged = run(cfg, progress=False, callbacks=[recorder])
    assert plain.status == logged.status == "complete"
    return {"tmp": tmp, "plain": plain.path.parent, "logged": logged.path.parent, "recorder": recorder}


def test_logging_leaves_the_eval_matrix_bit_identical(logged):
    with RunStore(logged["plain"]) as a, RunStore(logged["logged"]) as b:
        assert np.array_equal(a.eval_matrix(), b.eval_matrix())
        assert np.array_equal(a.train_loss(), b.train_loss())


def test_callbacks_get_what_the_store_got(logged):
    rec = logged["recorder"]
    with RunStore(logged["logged"]) as store:
        matrix, train, norms, schedule = (
            store.eval_matrix(),
            store.train_loss(),
            store.grad_norm(),
            store.schedule(),
        )
        layers = store.layer_names
    K, M = len(schedule), 2
    assert [s["run"] for s in rec.starts] == ["logged"] and rec.starts[0]["episodes"] == K
    assert rec.starts[0]["start"] == 0 and rec.starts[0]["config"]["report_to"] == "tensorboard,wandb,mlflow"
    assert [e["episode"] for e in rec.episodes] == list(range(1, K + 1))
    assert [s["step"] for s in rec.steps] == list(range(1, K * M + 1))
    for k, e in enumerate(rec.episodes, start=1):
        assert np.array_equal(e["eval_losses"], matrix[k])  # the store's eval row, bit for bit
        assert e["doc"] == schedule.doc[k - 1] and e["epoch"] == schedule.epoch[k - 1]
        assert e["online_loss"] == float(matrix[k - 1][schedule.doc[k - 1]])
        assert e["step"] == k * M and e["mean_eval_loss"] == pytest.approx(float(matrix[k].mean()))
    for i, s in enumerate(rec.steps):
        k, j = divmod(i, M)
        assert s["loss"] == float(train[k, j]) and s["episode"] == k + 1
        assert list(s["grad_norms"]) == layers
        assert list(s["grad_norms"].values()) == [float(v) for v in norms[k, j]]
        assert s["grad_norm"] == pytest.approx(math.sqrt(float((norms[k, j].astype(np.float64) ** 2).sum())))
    assert [(e["status"], e["episodes"]) for e in rec.ends] == [("complete", K)]


def test_tensorboard_event_files_hold_the_losses(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logged["logged"] / "tensorboard"))
    acc.Reload()
    with RunStore(logged["logged"]) as store:
        matrix, train = store.eval_matrix(), store.train_loss()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, train.size + 1))
    assert np.allclose([e.value for e in loss], train.ravel(), rtol=0, atol=0)  # float32 both ways
    mean = acc.Scalars("eval/mean_loss")
    assert [e.step for e in mean] == [2 * k for k in range(1, len(matrix))]
    assert np.allclose([e.value for e in mean], matrix[1:].mean(axis=1), rtol=1e-6)
    assert [e.value for e in acc.Scalars("eval/doc_1")] == pytest.approx(matrix[1:, 1].tolist())


def wandb_records(path: Path):
    """The records of a W&B transaction log (.wandb): a LevelDB-style log of 32 KiB blocks, each
    record a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            pos += left
            continue
        parts = (parts if kind in (3, 4) else b"") + data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def test_wandb_offline_run_holds_the_losses(logged):
    files = list((logged["tmp"] / "wandb").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history = {}
    for record in wandb_records(files[0]):
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}
            history.setdefault(record.history.step.num, {}).update(row)
    with RunStore(logged["logged"]) as store:
        matrix, train = store.eval_matrix(), store.train_loss()
    assert sorted(history) == list(range(1, train.size + 1))
    assert [history[s]["train/loss"] for s in sorted(history)] == pytest.approx(train.ravel().tolist())
    assert history[4]["eval/mean_loss"] == pytest.approx(float(matrix[2].mean()))
    assert history[4]["episode"] == 2


def test_mlflow_file_store_holds_the_losses(logged, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(logged["tmp"] / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("arprobe-test")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "logged" and found.info.status == "FINISHED"
    assert found.data.params["data.n_docs"] == "3"
    with RunStore(logged["logged"]) as store:
        matrix, train = store.eval_matrix(), store.train_loss()
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(1, train.size + 1))
    assert [m.value for m in history] == pytest.approx(train.ravel().tolist())
    online = client.get_metric_history(found.info.run_id, "eval/online_loss")
    assert [m.value for m in online] == pytest.approx(
        [float(matrix[k - 1][d]) for k, d in enumerate(store_docs(logged), 1)]
    )


def store_docs(logged):
    with RunStore(logged["logged"]) as store:
        return [int(d) for d in store.schedule().doc]


def test_an_unknown_logger_is_one_sentence_with_a_suggestion(tmp_path):
    with pytest.raises(UserError, match=r"unknown logger 'tensorbord'\. Did you mean 'tensorboard'\?"):
        tiny_config(tmp_path, report_to="tensorbord")
    assert not any(tmp_path.iterdir())


def test_a_missing_extra_names_the_pip_extra(tmp_path, monkeypatch):
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(
        loggers.importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name)
    )
    with pytest.raises(UserError) as info:
        tiny_config(tmp_path, report_to="tensorboard, mlflow")
    assert (
        str(info.value)
        == "report_to = 'mlflow' needs MLflow, which is not installed: pip install 'arprobe[mlflow]'."
    )
    assert loggers.parse_report_to("") == [] and loggers.parse_report_to("none") == []


def test_a_callback_without_hooks_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match="has none of the methods on_start, on_step, on_episode, on_end"):
        check_callbacks([object()])
    with pytest.raises(UserError, match="has none of the methods"):
        Callbacks.for_run(tiny_config(tmp_path, **SMALL), [], [42])
    assert check_callbacks(None) == []


def test_a_callback_that_raises_fails_the_run_and_keeps_the_episodes_before(tmp_path):
    class Breaks:
        def on_episode(self, m):
            if m["episode"] == 3:
                raise RuntimeError("logger down")

    with pytest.raises(RuntimeError, match="logger down"):
        run(tiny_config(tmp_path, **SMALL), progress=False, callbacks=[Breaks()])
    with RunStore(tmp_path / "tiny") as store:
        assert store.status == "failed" and store.completed_episodes == 3
        assert "logger down" in store.stop_reason


def test_a_run_failed_by_its_logger_resumes_and_logs_each_step_once(logged, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from arprobe.trainer.loop import resume

    class Breaks:
        def on_episode(self, m):
            if m["episode"] == 3:
                raise RuntimeError("logger down")

    cfg = tiny_config(tmp_path, report_to="tensorboard", **SMALL)
    with pytest.raises(RuntimeError, match="logger down"):
        run(cfg, progress=False, callbacks=[Breaks()])
    real = loggers.importlib.util.find_spec
    with pytest.MonkeyPatch.context() as mp:  # its logger's extra missing: one sentence, still resumable
        mp.setattr(loggers.importlib.util, "find_spec", lambda n: None if n == "tensorboard" else real(n))
        with pytest.raises(UserError, match=r"pip install 'arprobe\[tensorboard\]'"):
            resume(tmp_path / "tiny", progress=False)
    with RunStore(tmp_path / "tiny") as store:
        assert store.completed_episodes == 3 and store.status == "stopped"
    rec = Recorder()
    result = resume(tmp_path / "tiny", progress=False, callbacks=[rec])
    assert result.status == "complete"
    assert [(s["start"], s["episodes"]) for s in rec.starts] == [(3, 6)]
    assert [e["episode"] for e in rec.episodes] == [4, 5, 6]
    with RunStore(tmp_path / "tiny") as a, RunStore(logged["plain"]) as b:
        assert np.array_equal(a.eval_matrix(), b.eval_matrix())
        train = a.train_loss()
    acc = EventAccumulator(str(tmp_path / "tiny" / "tensorboard"))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 13))  # each step once, across the two processes
    assert [e.value for e in loss] == pytest.approx(train.ravel().tolist())
