"""order_decoding, model_clock, forgetting, recovery_map: the pure functions on hand-made arrays and
the probes on hand-made stores whose answers are known by hand, in cyclic, shuffled and insert order."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from arprobe.probes.registry import Registry
from arprobe.probes.runner import run_probe
from arprobe.science.forgetting import backward_transfer, final_forgetting, max_forgetting, plasticity
from arprobe.science.model_clock import collapse_error, collapse_errors, model_time
from arprobe.science.order_decoding import (
    ages_since_training,
    last_trained_hit,
    pairwise_order_accuracy,
    rankdata,
    spearman,
)
from arprobe.science.recovery_map import change_before_turn, onset_lags
from arprobe.storage import RunStore
from tests.store_factory import cyclic, make_store

# T = 3, E = 2, cyclic: every document is 1 right after its training, 3 next (the peak), 2 just
# before its next training (tests/test_probes.py's EVAL).
EVAL = np.array([[4.0, 4, 4], [1, 5, 5], [3, 1, 5], [2, 3, 1], [0.5, 2, 3], [1, 0.5, 2], [2, 1, 0.5]])

# T = 3, shuffled: epoch 1 trains 0, 1, 2; epoch 2 trains 2 (again at once), 0, 1.
SHUFFLE_DOC, SHUFFLE_EPOCH = np.array([0, 1, 2, 2, 0, 1]), np.array([1, 1, 1, 2, 2, 2])
SHUFFLE_EVAL = np.array([[4.0, 4, 4], [1, 4, 4], [2, 1, 4], [3, 2, 1], [2, 3, 0.5], [0.5, 2, 1], [1, 0.5, 2]])

# T = 5, insert order: documents 0, 1 repeat; 2, 3, 4 are one-off; epoch 1 is 3 episodes, epoch 2 is 4.
INSERT_DOC, INSERT_EPOCH = np.array([0, 1, 2, 0, 1, 3, 4]), np.array([1, 1, 1, 2, 2, 2, 2])
INSERT_EVAL = np.array(
    [
        [4.0, 4, 4, 4, 4],
        [1, 4, 4, 4, 4],  # 1: doc 0
        [2, 1, 4, 4, 4],  # 2: doc 1
        [3, 3, 1, 4, 4],  # 3: doc 2 (end of epoch 1)
        [0.5, 2, 2, 4, 4],  # 4: doc 0
        [1, 0.5, 3, 4, 4],  # 5: doc 1
        [2, 1, 3, 1, 4],  # 6: doc 3
        [3, 2, 3, 2, 1],  # 7: doc 4 (end of epoch 2)
    ]
)


def probe(name: str):
    p = Registry().get(name)
    p.progress = False
    return p


def outcome_of(name: str, run_dir: Path, out: Path, **options):
    with RunStore(run_dir) as store:
        outcome = run_probe(probe(name), [store], out, options)
    return outcome, json.loads((out / name / "result.json").read_text())


def run_one(name: str, run_dir: Path, out: Path, **options) -> dict:
    outcome, record = outcome_of(name, run_dir, out, **options)
    assert outcome.status == "ok", outcome.reason
    assert record["figures"]
    for fig in record["figures"]:
        assert (out / name / fig).stat().st_size > 10_000
    return record


# --- forgetting -----------------------------------------------------------------------------------


def test_forgetting_cyclic_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    record = run_one("forgetting", run, tmp_path / "report")
    r = record["result"]
    # final − best since the first training: doc 0 2 − 0.5, doc 1 1 − 0.5, doc 2 0.5 − 0.5
    assert r["forgetting"] == pytest.approx([1.5, 0.5, 0.0]) and r["forgetting_mean"] == pytest.approx(2 / 3)
    assert r["max_forgetting"] == pytest.approx([2, 2, 2])  # 1 → 3 in every first interval
    # epoch 1 ends at episode 3: doc 0 1 − 2, doc 1 1 − 3; epoch 2: doc 0 0.5 − 2, doc 1 0.5 − 1
    assert r["bwt_per_epoch"] == pytest.approx([-1.5, -1.0]) and r["bwt_mean"] == pytest.approx(-1.25)
    assert r["plasticity"] == pytest.approx([3, 4, 4, 1.5, 1.5, 1.5])
    assert r["plasticity_per_epoch"] == pytest.approx([11 / 3, 1.5])
    assert r["anticipation_ratio"] == pytest.approx([0.5] * 3)  # (3 − 2) / (3 − 1)
    assert r["anticipation_ratio_per_epoch"] == pytest.approx([0.5])
    assert set(record["headline"]) == set(probe("forgetting").headline_keys)
    assert all(isinstance(v, (float, list)) for v in record["headline"].values())  # sweep-aggregable


def test_forgetting_shuffle_and_insert_by_hand(tmp_path):
    run = make_store(
        tmp_path / "s", loss_eval=SHUFFLE_EVAL, schedule_doc=SHUFFLE_DOC, schedule_epoch=SHUFFLE_EPOCH
    )
    r = run_one("forgetting", run, tmp_path / "rs")["result"]
    assert r["forgetting"] == pytest.approx([0.5, 0.0, 1.5])
    assert r["max_forgetting"] == pytest.approx([2.0, 2.0, 1.5])
    # epoch 2: doc 2 (episode 4) 0.5 − 2, doc 0 (episode 5) 0.5 − 1; doc 1 ends the epoch
    assert r["bwt_per_epoch"] == pytest.approx([-1.5, -1.0])
    # doc 2 is trained twice in a row: no forgetting, so no ratio; docs 0 and 1: (3 − 2) / (3 − 1)
    assert r["anticipation_ratio"][:2] == pytest.approx([0.5, 0.5]) and r["anticipation_ratio"][2] is None
    assert r["anticipation_ratio_median"] == pytest.approx(0.5)

    run = make_store(
        tmp_path / "i", loss_eval=INSERT_EVAL, schedule_doc=INSERT_DOC, schedule_epoch=INSERT_EPOCH
    )
    r = run_one("forgetting", run, tmp_path / "ri")["result"]
    # the stored epochs: epoch 2 ends at episode 7, not 6 (= 2 T / ... of a cyclic reading)
    assert r["bwt_per_epoch"] == pytest.approx([-2.0, -5 / 3])
    assert r["forgetting"] == pytest.approx([2.5, 1.5, 2.0, 1.0, 0.0])
    assert r["forgetting_mean"] == pytest.approx(1.4)
    # doc 0 rises 1, 2, 3 to its turn (nothing undone); doc 1 peaks at 3 and is 2 at its turn
    assert (
        r["anticipation_ratio"][:2] == pytest.approx([0.0, 0.5]) and r["anticipation_ratio"][2:] == [None] * 3
    )
    assert r["anticipation_ratio_median"] == pytest.approx(0.25)
    assert r["plasticity_per_epoch"] == pytest.approx([3.0, (2.5 + 1.5 + 3 + 3) / 4])


def test_forgetting_functions_by_hand():
    doc = np.array([0, 1])
    loss = np.array([[2.0, 2.0], [1.0, 3.0], [1.5, 0.5]])
    assert final_forgetting(loss, doc) == pytest.approx([0.5, 0.0])
    assert max_forgetting(loss, doc) == pytest.approx([0.5, 0.0])
    assert plasticity(loss, doc) == pytest.approx([1.0, 2.5])
    assert backward_transfer(loss, doc, np.array([1, 1])) == pytest.approx([-0.5])
    assert np.isnan(final_forgetting(loss, np.array([0, 0]))[1])  # never trained


# --- recovery_map ---------------------------------------------------------------------------------


def test_recovery_map_by_hand(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    record = run_one("recovery_map", run, tmp_path / "report")
    r = record["result"]
    # every document: 1, 3 (peak), 2 before its turn: the loss fell for 1 episode
    assert r["onset_lag"] == [[1, 1, 1]] and r["onset_lag_per_epoch"] == [1.0]
    assert r["anticipating_fraction"] == 1.0 and r["columns"] == [0, 1, 2]
    assert r["change_before_turn"][0][:2] == pytest.approx([-1.0, 2.0])  # 3 → 2, then 1 → 3
    assert sorted(record["figures"]) == ["onset.png", "recovery_map.png"]


def test_recovery_map_shuffle_and_insert_by_hand(tmp_path):
    run = make_store(
        tmp_path / "s", loss_eval=SHUFFLE_EVAL, schedule_doc=SHUFFLE_DOC, schedule_epoch=SHUFFLE_EPOCH
    )
    r = run_one("recovery_map", run, tmp_path / "rs")["result"]
    # docs 0 and 1: 1, 2, 3, 2 until the turn (lag 1); doc 2 is trained twice in a row: nothing forgotten
    assert r["onset_lag"] == [[1, 1, None]]
    assert r["onset_lag_per_epoch"] == [1.0] and r["anticipating_fraction"] == 1.0
    # 1, 2 and 3 episodes before the turn: −1, +1, +1 for docs 0 and 1 (doc 2 has no episode between)
    assert r["change_before_turn"][0][:3] == pytest.approx([-1.0, 1.0, 1.0])
    assert all(v is None for v in r["change_before_turn"][0][3:])

    run = make_store(
        tmp_path / "i", loss_eval=INSERT_EVAL, schedule_doc=INSERT_DOC, schedule_epoch=INSERT_EPOCH
    )
    r = run_one("recovery_map", run, tmp_path / "ri", order="index")["result"]
    assert r["onset_lag"] == [[0, 1, None, None, None]]  # one-off documents have no interval
    assert r["columns"] == [0, 1, 2, 3, 4]
    outcome, record = outcome_of("recovery_map", run, tmp_path / "bad", order="diagonal")
    assert outcome.status == "failed"
    assert outcome.reason == "Option recovery_map.order must be 'first' or 'index', got 'diagonal'."


def test_onset_functions_by_hand():
    loss = np.array([[5.0], [1.0], [2.0], [4.0], [3.0], [2.5], [0.0]])  # trained at episodes 1 and 6
    assert onset_lags(loss, np.array([0, 9, 9, 9, 9, 0])).tolist() == [[2.0]]  # peak 4 at row 3, turn at 6
    falling = np.array([[5.0], [3.0], [2.0], [1.0]])  # the loss only falls after training: no onset
    assert np.isnan(onset_lags(falling, np.array([0, 9, 0]))).all()
    profile = change_before_turn(loss, np.array([0, 9, 9, 9, 9, 0]), 5)
    assert profile[0, :4] == pytest.approx([-0.5, -1.0, 2.0, 1.0]) and np.isnan(profile[0, 4])


# --- model_clock ----------------------------------------------------------------------------------


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
    run = clock_run(tmp_path / "s", SHUFFLE_DOC, SHUFFLE_EPOCH, steps, 3)
    r = run_one("model_clock", run, tmp_path / "rs")["result"]
    assert r["model_time_per_epoch"] == pytest.approx([6, 3]) and r["intervals"] == 3
    assert r["collapse_error_model_time"] == pytest.approx(0.0, abs=1e-12)

    steps = np.array([2.0, 2, 2, 1, 1, 1, 1])
    run = clock_run(tmp_path / "i", INSERT_DOC, INSERT_EPOCH, steps, 5, snapshot_every=1)
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


# --- order_decoding -------------------------------------------------------------------------------


def decoding_run(run_dir, schedule_doc, schedule_epoch, n_docs, signal=1.0, docs=None, seed=0):
    """Activations of every document after every episode [K+1, T, C=4, d=6]: feature 0 is
    ``signal`` × its age (−1 before its first training), the rest noise."""
    K = len(schedule_doc)
    episodes = np.arange(K + 1)
    ages = ages_since_training(schedule_doc, episodes, list(range(n_docs)))
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(K + 1, n_docs, 4, 6)).astype(np.float32)
    values[..., 0] = signal * np.nan_to_num(ages, nan=-1.0)[:, :, None] + 0.01 * values[..., 0]
    loss = np.full((K + 1, n_docs), 2.0)
    docs = list(range(n_docs)) if docs is None else docs
    return make_store(
        run_dir,
        loss_eval=loss,
        schedule_doc=schedule_doc,
        schedule_epoch=schedule_epoch,
        activations={"ln_final.hook_normalized": (episodes, values[:, docs])},
        activation_docs=docs,
    )


def test_order_decoding_reads_a_linear_age(tmp_path):
    doc, epoch = cyclic(5, 3)
    run = decoding_run(tmp_path / "r", doc, epoch, 5)
    record = run_one("order_decoding", run, tmp_path / "report")
    r = record["result"]
    assert r["samples"] == 5 * 15 - (1 + 2 + 3 + 4)  # before its first training a document has no age
    # ages tie (every document at one age per cycle) while predictions do not: ρ stays just under 1
    assert r["rank_correlation"] > 0.95
    assert r["pairwise_accuracy"] == 1.0 and r["last_trained_accuracy"] == 1.0
    # chance: one of the trained documents, 1/1, 1/2, ... 1/5 in epoch 1, then 1/5
    assert r["last_trained_chance"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5 * 11) / 15)
    assert r["pairwise_accuracy_per_epoch"] == pytest.approx([1.0, 1.0, 1.0]) and r["folds"] == 5
    assert all(isinstance(v, (float, list)) for v in record["headline"].values())


def test_order_decoding_shuffle_insert_and_noise(tmp_path):
    rng = np.random.default_rng(1)
    doc = np.concatenate([rng.permutation(6) for _ in range(3)])
    epoch = np.repeat([1, 2, 3], 6)
    r = run_one("order_decoding", decoding_run(tmp_path / "s", doc, epoch, 6), tmp_path / "rs")["result"]
    assert r["pairwise_accuracy"] == 1.0 and r["rank_correlation"] > 0.95
    # ages up to 2T − 2 in a shuffled order
    assert max(a for row in r["ages"] for a in row if a is not None) > 6

    r = run_one("order_decoding", decoding_run(tmp_path / "i", INSERT_DOC, INSERT_EPOCH, 5), tmp_path / "ri")[
        "result"
    ]
    assert r["pairwise_accuracy"] == 1.0 and r["last_trained_accuracy"] == 1.0

    noise = decoding_run(tmp_path / "n", *cyclic(5, 3), 5, signal=0.0)
    r = run_one("order_decoding", noise, tmp_path / "rn")["result"]
    # nothing to read: no better than chance (held-out folds of pure noise can land below it)
    assert r["rank_correlation"] < 0.3 and r["pairwise_accuracy"] < 0.6


def test_order_decoding_says_what_is_missing(tmp_path, monkeypatch):
    doc, epoch = cyclic(3, 2)
    run = decoding_run(tmp_path / "r0", doc, epoch, 3, docs=[0])
    outcome, _ = outcome_of("order_decoding", run, tmp_path / "o1")
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "Run 'r0' recorded activations of documents [0] only, and decoding the training order needs all 3; "
        "record them with record.activation_docs (e.g. --activation_docs 0,1,2)."
    )
    run = decoding_run(tmp_path / "all", doc, epoch, 3)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    outcome, _ = outcome_of("order_decoding", run, tmp_path / "o2")
    assert outcome.status == "skipped"
    assert (
        outcome.reason == "order_decoding needs scikit-learn; install it with: pip install 'arprobe[probes]'."
    )


def test_decoding_functions_by_hand():
    ages = ages_since_training(SHUFFLE_DOC, np.array([0, 3, 4, 6]), [0, 1, 2])
    assert np.isnan(ages[0]).all()
    assert ages[1:].tolist() == [[2, 1, 0], [3, 2, 0], [1, 0, 2]]
    # pairs (0, 1) and (0, 2) in order, (1, 2) swapped
    assert pairwise_order_accuracy(np.array([0.0, 2, 1]), np.array([0.0, 1, 2])) == pytest.approx(2 / 3)
    assert pairwise_order_accuracy(np.array([1.0, 1]), np.array([0.0, 1])) == 0.5  # a tie counts half
    assert last_trained_hit(np.array([0.0, 2, 1]), np.array([0.0, 1, 2])) == 1.0
    assert last_trained_hit(np.array([3.0, 2, 1]), np.array([0.0, 1, 2])) == 0.0
    assert rankdata(np.array([3.0, 1, 3])).tolist() == [2.5, 1, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1]) == pytest.approx(-0.2)
