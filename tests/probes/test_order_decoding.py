"""The order_decoding probe and arprobe.science.order_decoding: a linear probe reads each document's
age from activations that encode it, and not from noise."""

import sys

import numpy as np
import pytest

from arprobe.science.order_decoding import (
    accuracy_by_distance,
    ages_since_training,
    default_stages,
    document_splits,
    heldout_classify,
    heldout_verdict,
    last_trained_hit,
    pairwise_order_accuracy,
    pairwise_stage_accuracy,
    permutation_null,
    rankdata,
    spearman,
    stage_accuracy,
    stages_by_last_training,
    stratified_folds,
    wilson_interval,
    window_means,
)
from tests.helpers import SHORT_INSERT_DOC, SHORT_INSERT_EPOCH, SHORT_SHUFFLE_DOC, outcome_of, run_one
from tests.store_factory import cyclic, make_store

NOT_NUMBERS = {"heldout_verdict", "control_heldout_stage_accuracy"}  # a sentence; None without a control


def decoding_run(run_dir, schedule_doc, schedule_epoch, n_docs, signal=1.0, docs=None, seed=0, config=None):
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
        config=config,
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
    headline = record["headline"]
    assert all(isinstance(v, (float, list)) for k, v in headline.items() if k not in NOT_NUMBERS)
    # the held-out stage probe at the last model: last trained 0, 1, 2, 3, 4 -> stages 0 0 0 1 1
    assert r["heldout_episode"] == 15 and r["heldout_stage_of_doc"] == [0, 0, 0, 1, 1]
    assert r["heldout_stages"] == 2 and r["heldout_folds"] == 2 and r["heldout_windows"] == 4
    # 5 documents cannot show it: always guessing stage 0 scores 3/5, and the boundary a fold learns
    # from ages (4, 3) against 1 falls on the held-out age 2: the accuracy stays near chance
    assert r["heldout_stage_chance"] == 0.6 and r["heldout_stage_accuracy"] < 0.8
    assert r["heldout_stage_interval"] == pytest.approx(wilson_interval(r["heldout_stage_accuracy"], 5))
    assert r["heldout_verdict"].startswith("inconclusive: 2-way stage accuracy")
    assert headline["control_heldout_stage_accuracy"] is None


def test_order_decoding_shuffle_insert_and_noise(tmp_path):
    rng = np.random.default_rng(1)
    doc = np.concatenate([rng.permutation(6) for _ in range(3)])
    epoch = np.repeat([1, 2, 3], 6)
    few = {"permutations": 20}  # the held-out stage probe is tested below
    r = run_one("order_decoding", decoding_run(tmp_path / "s", doc, epoch, 6), tmp_path / "rs", **few)[
        "result"
    ]
    assert r["pairwise_accuracy"] == 1.0 and r["rank_correlation"] > 0.95
    # ages up to 2T − 2 in a shuffled order
    assert max(a for row in r["ages"] for a in row if a is not None) > 6

    r = run_one(
        "order_decoding",
        decoding_run(tmp_path / "i", SHORT_INSERT_DOC, SHORT_INSERT_EPOCH, 5),
        tmp_path / "ri",
        **few,
    )["result"]
    assert r["pairwise_accuracy"] == 1.0 and r["last_trained_accuracy"] == 1.0

    noise = decoding_run(tmp_path / "n", *cyclic(5, 3), 5, signal=0.0)
    r = run_one("order_decoding", noise, tmp_path / "rn", **few)["result"]
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


# --- the held-out stage probe (Krasheninnikov et al.'s protocol) --------------------------------


def planted(kind, n_docs=12, n_windows=2, dim=8, seed=0):
    """Samples [T, W, d] of 3 stages of 4 documents (stage 0: documents 0-3): noise, the stage on a
    line along feature 0 (plus noise 0.1), or each stage 6 units along its own feature."""
    stages = np.repeat(np.arange(3), n_docs // 3)
    features = np.random.default_rng(seed).normal(size=(n_docs, n_windows, dim))
    if kind == "line":
        features[..., 0] = stages[:, None] + 0.1 * features[..., 0]
    elif kind == "own_direction":
        features[np.arange(n_docs), :, stages] += 6.0
    return features, stages


def test_stages_by_last_training_by_hand():
    schedule = np.array([0, 1, 2, 3, 4, 3, 1, 4, 0, 2])  # epoch 2 shuffled
    # after episode 10, last trained: doc 3 at 6, 1 at 7, 4 at 8, 0 at 9, 2 at 10 -> [3 1 4] [0 2]
    assert stages_by_last_training(schedule, 10, 5, 2).tolist() == [1, 0, 1, 0, 0]
    # three stages of 5: 2, 2, 1 documents -> [3 1] [4 0] [2]
    assert stages_by_last_training(schedule, 10, 5, 3).tolist() == [1, 0, 2, 0, 1]
    # after episode 7: doc 0 at 1, 2 at 3, 4 at 5, 3 at 6, 1 at 7 -> [0 2 4] [3 1]
    assert stages_by_last_training(schedule, 7, 5, 2).tolist() == [0, 1, 0, 1, 0]
    assert [default_stages(t) for t in (3, 4, 5, 10, 12, 40)] == [1, 2, 2, 5, 5, 5]


def test_windows_folds_and_splits_by_hand():
    values = np.arange(8.0).reshape(2, 4, 1)  # two documents of 4 positions, d = 1
    # document 0 has 3 real tokens: windows [0 1] [2]; document 1 all 4: [4 5] [6 7]
    assert window_means(values, [3, 4], 2)[..., 0].tolist() == [[0.5, 2.0], [4.5, 6.5]]
    stages = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    folds = stratified_folds(stages, 2, seed=3)
    counts = [np.bincount(stages[folds == f], minlength=3).tolist() for f in (0, 1)]
    assert sorted(counts) == [[1, 1, 1], [2, 2, 1]]  # every fold holds out documents of every stage
    splits = document_splits(folds)
    assert sorted(np.concatenate([test for _, test in splits]).tolist()) == list(range(8))  # each once
    for train, test in splits:
        assert not set(train) & set(test) and len(train) + len(test) == 8
    keep = stages != 1
    for train, test in document_splits(folds, keep):  # a pair of stages: stage 1 on neither side
        assert not set(train) & set(test) and not stages[np.concatenate([train, test])].tolist().count(1)
    features, labels = planted("noise", n_docs=6)
    with pytest.raises(AssertionError, match="a document on both sides of a split"):
        heldout_classify(features, labels, [(np.arange(6), np.array([5]))])


def test_heldout_stage_accuracy_planted_and_noise():
    features, stages = planted("own_direction")
    folds = stratified_folds(stages, 4)
    accuracy, per_doc, predicted = stage_accuracy(features, stages, folds)
    assert (
        accuracy == 1.0 and per_doc.tolist() == [1.0] * 12 and predicted.tolist() == [[s, s] for s in stages]
    )
    assert np.nansum(pairwise_stage_accuracy(features, stages, folds)) == 6.0  # all three pairs, both ways

    # on a line the three-way probe must split the middle stage off both ends; the pairs are easy
    features, stages = planted("line")
    accuracy, _, _ = stage_accuracy(features, stages, folds)
    pairs = pairwise_stage_accuracy(features, stages, folds)
    stage_null, pair_null = permutation_null(features, stages, 4, 40, seed=1)
    assert accuracy == 0.875 and accuracy > np.quantile(stage_null, 0.975)
    assert pairs[0, 2] == 1.0 and accuracy_by_distance(pairs).tolist() == [0.9375, 1.0]
    assert (
        heldout_verdict(accuracy, wilson_interval(accuracy, 12), 1 / 3, np.quantile(stage_null, 0.975))
        == "yes"
    )

    features, stages = planted("noise")
    accuracy, _, _ = stage_accuracy(features, stages, folds)
    pairs = pairwise_stage_accuracy(features, stages, folds)
    stage_null, pair_null = permutation_null(features, stages, 4, 40, seed=1)
    # the permuted labels average chance (1/3, 1/2) and the real ones do no better than they do
    assert abs(stage_null.mean() - 1 / 3) < 0.05 and abs(pair_null.mean() - 0.5) < 0.05
    assert accuracy <= np.quantile(stage_null, 0.975) and np.nanmean(pairs) <= np.quantile(pair_null, 0.975)
    interval = wilson_interval(accuracy, 12)
    assert interval[0] < 1 / 3 < interval[1]
    assert heldout_verdict(accuracy, interval, 1 / 3, np.quantile(stage_null, 0.975)) == "inconclusive"


def test_wilson_and_verdict_by_hand():
    # Wilson 95%: 5 of 10 -> 0.2366-0.7634, 10 of 10 -> 0.7225-1 (the textbook values)
    assert wilson_interval(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert heldout_verdict(0.9, (0.6, 0.98), 0.2, 0.5) == "yes"
    assert heldout_verdict(0.9, (0.6, 0.98), 0.2, 0.95) == "inconclusive"  # the permuted labels do as well
    assert heldout_verdict(0.4, (0.15, 0.7), 0.2, None) == "inconclusive"
    assert heldout_verdict(0.0, (0.0, 0.15), 0.2, None) == "no"


def test_heldout_stage_probe_and_its_control(tmp_path):
    doc, epoch = cyclic(12, 2)
    shuffle = {"schedule": {"order": "shuffle"}}
    run = decoding_run(tmp_path / "run", doc, epoch, 12)
    rng = np.random.default_rng(2)
    control_doc = np.concatenate([rng.permutation(12) for _ in range(2)])
    decoding_run(run / "control", control_doc, epoch, 12, signal=0.0, config=shuffle)
    record = run_one("order_decoding", run, tmp_path / "report", permutations=30)
    r = record["result"]
    assert "order_decoding_heldout.png" in record["figures"]
    # 5 stages of 12 documents in the order 0 ... 11 they were last trained: 3, 3, 2, 2, 2 documents
    assert r["heldout_stage_of_doc"] == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4] and r["heldout_folds"] == 2
    assert r["heldout_stage_chance"] == 0.25 and len(r["heldout_stage_null"]) == 30
    assert r["heldout_first_last_accuracy"] == 1.0 and r["heldout_pairwise_accuracy"] > 0.9
    # the five-way probe beats its permutation null but, trained on 1 or 2 documents a stage, must
    # split the middle stages of a line: its interval over 12 documents still reaches chance
    assert r["heldout_stage_accuracy"] > r["heldout_stage_null_q975"]
    assert r["heldout_stage_interval"][0] < 0.25
    assert r["heldout_verdict"].startswith("inconclusive: 5-way stage accuracy")
    assert np.sum(r["heldout_confusion"]) == 12 * 4  # every window of every document predicted once
    # the control's activations carry no age: near chance, and the sentence puts the two side by side
    control = r["control_heldout_stage_accuracy"]
    assert control < 0.5 and r["control_heldout_first_last_accuracy"] <= 0.75
    assert r["heldout_control_verdict"] == (
        f"held-out stage accuracy {r['heldout_stage_accuracy']:.3f} vs {control:.3f} in the matched shuffled "
        f"control ({r['heldout_stage_accuracy'] - control:+.3f})."
    )
    # three stages of 4: trained on 3 documents a stage, it reads the stage of unseen ones
    r = run_one("order_decoding", run, tmp_path / "report3", permutations=30, stages=3)["result"]
    assert r["heldout_stage_of_doc"] == [0] * 4 + [1] * 4 + [2] * 4 and r["heldout_folds"] == 4
    assert r["heldout_verdict"].startswith("yes: 3-way stage accuracy")
    assert (
        r["heldout_stage_interval"][0] > 1 / 3 and r["heldout_stage_accuracy"] > r["heldout_stage_null_q975"]
    )


def test_heldout_stage_probe_says_what_is_wrong(tmp_path):
    doc, epoch = cyclic(5, 3)
    run = decoding_run(tmp_path / "r5", doc, epoch, 5)
    outcome, _ = outcome_of("order_decoding", run, tmp_path / "o1", stages=3)
    assert outcome.status == "failed"
    assert outcome.reason == (
        "The held-out stage probe needs at least 2 documents in each of at least 2 stages, and 3 stages of "
        "run 'r5's 5 documents leave fewer; use at most 2 stages."
    )
    outcome, _ = outcome_of("order_decoding", run, tmp_path / "o2", episode=3)
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "Run 'r5' had not trained documents [3, 4] by episode 3, so they have no training stage; read a "
        "later model with order_decoding.episode."
    )
    outcome, _ = outcome_of("order_decoding", run, tmp_path / "o3", episode=16)
    assert outcome.reason == (
        "Run 'r5' has no activations recorded after episode 16 (recorded: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "
        "10, 11, 12, 13, 14, 15); pick one with order_decoding.episode or record more with "
        "record.activations_every."
    )
    outcome, _ = outcome_of("order_decoding", run, tmp_path / "o4", stages=1)
    assert outcome.reason == "Option order_decoding.stages must be at least 2 (0: automatic), got 1."
    # with the defaults, a run too small for stages keeps its age results and says why it has no stages
    small = decoding_run(tmp_path / "r3", *cyclic(3, 2), 3)
    r = run_one("order_decoding", small, tmp_path / "o5")["result"]
    assert r["pairwise_accuracy"] == 1.0 and r["heldout_stage_accuracy"] is None
    assert r["heldout_note"] == (
        "The held-out stage probe needs at least 2 documents in each of at least 2 stages, and 1 stages of "
        "run 'r3's 3 documents leave fewer; train at least 4 documents."
    )
