"""The probe runner: missing data skips with the reader's sentence, a failing probe stops nothing, a
recording named by an option that is missing is named, and the matched control is found."""

import json

import numpy as np

from arprobe.probes.base import Probe, control_store
from arprobe.probes.registry import Registry
from arprobe.probes.runner import run_probe, write_report
from arprobe.storage import RunStore
from tests.helpers import EVAL, probe, random_eval_store
from tests.store_factory import cyclic, make_store


class Boom(Probe):
    name = "boom"
    description = "Always fails."

    def run(self, store, out):
        raise RuntimeError("boom went the probe")


def test_missing_data_skips_with_the_readers_sentence_and_a_failure_stops_nothing(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "bare", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    registry = Registry()
    registry.register("boom", Boom)
    names = [
        "boom",
        "gradient_similarity",
        "pca_weights",
        "pairwise_recovery",
        "activation_drift",
        "recovery_score",
    ]
    report = tmp_path / "report"
    with RunStore(run) as store:
        outcomes = {o.probe: o for o in write_report([store], report, [registry.get(n) for n in names])}
    assert outcomes["recovery_score"].status == "ok"  # ran after the failure
    assert (
        outcomes["boom"].status == "failed" and outcomes["boom"].reason == "RuntimeError: boom went the probe"
    )
    assert outcomes["gradient_similarity"].reason == (
        "Run 'bare' recorded no grads; record them with record.grads (with record.grads_at = epoch or end)."
    )
    assert outcomes["pca_weights"].reason == (
        "Run 'bare' recorded no weights; record them with record.weights (with record.weights_every > 0)."
    )
    assert outcomes["pairwise_recovery"].reason.startswith(
        "Run 'bare' has no checkpoints; record them with record.checkpoints"
    )
    assert outcomes["activation_drift"].status == "skipped"
    boom = json.loads((report / "boom/result.json").read_text())
    assert boom["status"] == "failed" and "Traceback" in boom["traceback"] and boom["result"] is None
    index = (report / "index.html").read_text()
    for name in names:
        assert f"id='{name}'" in index
    assert "record.grads (with record.grads_at = epoch or end)" in index
    assert "recovery_score/recovery_score.png" in index


def test_a_probe_needing_a_missing_recording_by_option_names_it(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(
        tmp_path / "w",
        loss_eval=EVAL,
        schedule_doc=doc,
        schedule_epoch=epoch,
        weights={"unembed": (np.arange(7), np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32))},
    )
    with RunStore(run) as store:
        outcome = run_probe(probe("pca_weights"), [store], tmp_path / "report", {"weights": "blocks.0.attn"})
    assert outcome.status == "skipped"
    assert outcome.reason.startswith("Run 'w' has no weight snapshots of 'blocks.0.attn' (recorded: unembed)")


def test_control_store_opens_the_control_next_to_the_run(tmp_path):
    run = random_eval_store(tmp_path / "run", 4, 2)
    with RunStore(run) as store:
        assert control_store(store) is None  # no control folder
    random_eval_store(run / "control", 4, 2, order="shuffle")
    with RunStore(run) as store:
        control = control_store(store)
        with control:
            assert control.path == run / "control" / "run.h5"
            assert control.config["schedule"]["order"] == "shuffle"
            assert control.h5.mode == "r"
