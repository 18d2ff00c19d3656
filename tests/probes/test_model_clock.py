"""The model_clock probe and arprobe.science.model_clock: losses that collapse onto one curve in
model time, in cyclic, shuffled and insert orders and with sparse snapshots."""

import numpy as np
import pytest

from arprobe.science.model_clock import collapse_error, collapse_errors, model_time
from tests.helpers import (
    EVAL,
    SHORT_INSERT_DOC,
    SHORT_INSERT_EPOCH,
    SHORT_SHUFFLE_DOC,
    SHORT_SHUFFLE_EPOCH,
    outcome_of,
    run_one,
)
from tests.store_factory import cyclic, make_store


def clock_run(run_dir, schedule_doc, schedule_epoch, steps, n_docs, snapshot_every=1):
    """A run whose weights move along one axis by ``steps`` [K] per episode and whose every document's
    loss, after its training (1.0), rises by half the model time since: one curve in model time."""
    clock = np.concatenate([[0.0], np.cumsum(steps)])  # [K+1]
    K = len(schedule_doc)
    loss = np.full((K + 1, n_docs), 4.0)
    for t in range(n_docs):
        last = None
        for k in range(1, K + 1):
            if schedule_doc[k - 1] == t:
                last = k
            if last is not None:
                loss[k, t] = 1.0 + 0.5 * (clock[k] - clock[last])
    episodes = np.arange(0, K + 1, snapshot_every)
    values = np.zeros((len(episodes), 4), np.float32)
    values[:, 0] = clock[episodes]
    values[:, 1] = 7.0  # a constant offset changes no difference
    return make_store(
        run_dir,
        loss_eval=loss,
        schedule_doc=schedule_doc,
        schedule_epoch=schedule_epoch,
        weights={"all": (episodes, values)},
    )


def test_model_clock_cyclic_by_hand(tmp_path):
    doc, epoch = cyclic(3, 3)
    steps = np.repeat([2.0, 1.0, 0.5], 3)  # the weights slow down epoch by epoch
    run = clock_run(tmp_path / "r", doc, epoch, steps, 3)
    record = run_one("model_clock", run, tmp_path / "report")
    r = record["result"]
    assert r["weights"] == "all" and r["weights_are"].startswith("all weights (weights/all, exact values)")
    assert r["model_time"] == pytest.approx([0, 2, 4, 6, 7, 8, 9, 9.5, 10, 10.5])
    assert r["update_norm_per_epoch"] == pytest.approx([2, 1, 0.5])
    assert r["model_time_per_epoch"] == pytest.approx([6, 3, 1.5])
    assert r["intervals"] == 6  # 3 documents × 2 intervals
    assert r["collapse_error_model_time"] == pytest.approx(0.0, abs=1e-12)  # one line in model time
    assert r["collapse_error_episodes"] > 0.1 and r["collapse_ratio"] == pytest.approx(0.0, abs=1e-10)
    assert all(isinstance(v, (float, list)) for v in record["headline"].values())


def test_model_clock_shuffle_insert_and_sparse_snapshots(tmp_path):
    steps = np.array([2.0, 2, 2, 1, 1, 1])
    run = clock_run(tmp_path / "s", SHORT_SHUFFLE_DOC, SHORT_SHUFFLE_EPOCH, steps, 3)
    r = run_one("model_clock", run, tmp_path / "rs")["result"]
    assert r["model_time_per_epoch"] == pytest.approx([6, 3]) and r["intervals"] == 3
    assert r["collapse_error_model_time"] == pytest.approx(0.0, abs=1e-12)

    steps = np.array([2.0, 2, 2, 1, 1, 1, 1])
    run = clock_run(tmp_path / "i", SHORT_INSERT_DOC, SHORT_INSERT_EPOCH, steps, 5, snapshot_every=1)
    r = run_one("model_clock", run, tmp_path / "ri")["result"]
    assert r["model_time_per_epoch"] == pytest.approx([6, 4]) and r["intervals"] == 2  # docs 0, 1 only
    assert r["update_norm_per_epoch"] == pytest.approx([2, 1])

    doc, epoch = cyclic(2, 3)
    run = clock_run(tmp_path / "sparse", doc, epoch, np.full(6, 1.0), 2, snapshot_every=2)
    r = run_one("model_clock", run, tmp_path / "rp")["result"]
    assert r["snapshot_episodes"] == [0, 2, 4, 6] and r["update_norm_per_epoch"] == pytest.approx([1, 1, 1])


def test_model_clock_skips_without_a_clock(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "none", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    outcome, _ = outcome_of("model_clock", run, tmp_path / "o1")
    assert outcome.status == "skipped" and "record.weights" in outcome.reason
    one = {"all": (np.array([0]), np.zeros((1, 4), np.float32))}
    run = make_store(tmp_path / "one", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch, weights=one)
    outcome, _ = outcome_of("model_clock", run, tmp_path / "o2")
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "Run 'one' has 1 snapshot of 'all', and a clock needs two; record weights more often with "
        "record.weights_every."
    )


def test_clock_functions_by_hand():
    assert model_time(np.array([[0.0, 0], [3, 4], [3, 4], [0, 0]])) == pytest.approx([0, 5, 5, 10])
    # curve 2 at x = 1, 2 reads 0.5, 1 (misses 0.25, 1); curve 1 at x = 2 reads 2 (miss 1), x = 4 is
    # beyond it; mean miss 0.75 over the variance 2/9 of the scored y (1, 2, 1)
    x1, x2, y = np.array([0.0, 1, 2]), np.array([0.0, 2, 4]), np.array([0.0, 1, 2])
    assert collapse_error([x1, x2], [y, y]) == pytest.approx(0.75 / (2 / 9))
    assert collapse_error([x1, x1], [y, y]) == 0.0 and np.isnan(collapse_error([x1], [y]))
    # two clocks are scored on the points both reach: on x2, curve 2's x = 4 is unreached, so
    # x1's own error is taken over the same three points (all exact there: 0)
    assert collapse_errors([[x1, x1], [x1, x2]], [y, y]) == pytest.approx([0.0, 0.75 / (2 / 9)])
