"""The order_decoding probe and arprobe.science.order_decoding: a linear probe reads each document's
age from activations that encode it, and not from noise."""

import sys

import numpy as np
import pytest

from arprobe.science.order_decoding import (
    ages_since_training,
    last_trained_hit,
    pairwise_order_accuracy,
    rankdata,
    spearman,
)
from tests.helpers import SHORT_INSERT_DOC, SHORT_INSERT_EPOCH, SHORT_SHUFFLE_DOC, outcome_of, run_one
from tests.store_factory import cyclic, make_store


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

    r = run_one(
        "order_decoding",
        decoding_run(tmp_path / "i", SHORT_INSERT_DOC, SHORT_INSERT_EPOCH, 5),
        tmp_path / "ri",
    )["result"]
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
    ages = ages_since_training(SHORT_SHUFFLE_DOC, np.array([0, 3, 4, 6]), [0, 1, 2])
    assert np.isnan(ages[0]).all()
    assert ages[1:].tolist() == [[2, 1, 0], [3, 2, 0], [1, 0, 2]]
    # pairs (0, 1) and (0, 2) in order, (1, 2) swapped
    assert pairwise_order_accuracy(np.array([0.0, 2, 1]), np.array([0.0, 1, 2])) == pytest.approx(2 / 3)
    assert pairwise_order_accuracy(np.array([1.0, 1]), np.array([0.0, 1])) == 0.5  # a tie counts half
    assert last_trained_hit(np.array([0.0, 2, 1]), np.array([0.0, 1, 2])) == 1.0
    assert last_trained_hit(np.array([3.0, 2, 1]), np.array([0.0, 1, 2])) == 0.0
    assert rankdata(np.array([3.0, 1, 3])).tolist() == [2.5, 1, 2.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1]) == pytest.approx(-0.2)
