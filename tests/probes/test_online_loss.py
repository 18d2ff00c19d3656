"""The online_loss probe on hand-made stores: runs grouped by config without the seed, the epoch axis
of the insert order, runs whose epochs differ, and the shuffled order."""

import json

import numpy as np
import pytest

from arprobe.probes.runner import run_probe
from arprobe.storage import RunStore
from tests.helpers import insert_loss, insert_run, probe, run_one, shuffle_run
from tests.store_factory import cyclic, make_store


def test_online_loss_groups_runs_by_config_without_seed(tmp_path):
    doc, epoch = cyclic(3, 2)

    def online(values, name, seed, order):
        # the online loss of episode k is the eval matrix just before it: loss_eval[k − 1, doc(k)]
        eval_ = np.ones((7, 3))
        eval_[np.arange(6), doc] = values
        return make_store(
            tmp_path / name,
            loss_eval=eval_,
            schedule_doc=doc,
            schedule_epoch=epoch,
            seed=seed,
            config={"schedule": {"order": order}},
        )

    runs = [
        online([5, 5, 5, 1, 2, 3], "c0", 0, "cyclic"),
        online([5, 5, 5, 3, 4, 5], "c1", 1, "cyclic"),
        online([5, 5, 5, 6, 6, 6], "s0", 0, "shuffle"),
    ]
    stores = [RunStore(r) for r in runs]
    try:
        outcome = run_probe(probe("online_loss"), stores, tmp_path / "report")
    finally:
        for s in stores:
            s.close()
    assert outcome.status == "ok", outcome.reason
    result = json.loads((tmp_path / "report/online_loss/result.json").read_text())["result"]
    cyc, shuf = result["groups"]
    assert (cyc["label"], shuf["label"]) == ("cyclic", "shuffle")
    assert cyc["seeds"] == [0, 1] and len(shuf["runs"]) == 1
    # epochs 2..E means: run c0 2, run c1 4 -> 3 ± 1.414 (sample std); shuffle 6, no std from one run
    assert cyc["mean_after_first_epoch"] == pytest.approx(3.0)
    assert cyc["mean_after_first_epoch_std"] == pytest.approx(np.sqrt(2))
    assert cyc["per_episode_mean"] == pytest.approx([5, 5, 5, 2, 3, 4])
    assert shuf["mean_after_first_epoch"] == 6.0 and shuf["mean_after_first_epoch_std"] is None
    assert outcome.headline == {
        "cyclic: mean online loss, epochs 2..2": 3.0,
        "cyclic: std over 2 runs": pytest.approx(np.sqrt(2)),
        "shuffle: mean online loss, epochs 2..2": 6.0,
    }


def test_online_loss_insert_order_axis_and_unaligned_seeds(tmp_path):
    run = insert_run(tmp_path / "ins")
    online = run_one("online_loss", run, tmp_path / "report")["result"]["groups"][0]
    # episode k starts k − 1 episodes in; epoch 1 has 5 episodes, epoch 2 has 4
    assert online["per_episode_epochs"][:7] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25])
    # the online loss is the loss just before: 6 for every first training, then 3 and 3.5 for the block
    assert online["per_episode_mean"] == [6] * 5 + [3, 3, 3, 6] + [3.5, 3.5, 3.5, 6, 6]

    # A second seed whose epochs are 4, 5 and 5 long: episode k is not the same point of training in
    # both, so the group keeps one curve per run on its own epoch axis instead of a mean.
    other = make_store(
        tmp_path / "ins1",
        loss_eval=insert_loss(),
        schedule_doc=[0, 1, 2, 3, 0, 1, 2, 4, 5, 0, 1, 2, 6, 7],
        schedule_epoch=[1] * 4 + [2] * 5 + [3] * 5,
        seed=1,
        config={"schedule": {"order": "insert"}},
    )
    stores = [RunStore(r) for r in (run, other)]
    try:
        outcome = run_probe(probe("online_loss"), stores, tmp_path / "both")
    finally:
        for s in stores:
            s.close()
    both = json.loads((tmp_path / "both/online_loss/result.json").read_text())["result"]["groups"]
    assert outcome.status == "ok" and len(both) == 1 and both[0]["seeds"] == [0, 1]
    assert not both[0]["episodes_aligned"] and both[0]["per_episode_mean"] is None
    assert [x[5] for x in both[0]["per_episode_epochs"]] == pytest.approx([1.0, 1.2])  # episode 6 in each


def test_online_loss_shuffled_order(tmp_path):
    online = run_one("online_loss", shuffle_run(tmp_path / "shuf"), tmp_path / "report")["result"]["groups"][
        0
    ]
    # loss_eval[k − 1, doc(k)]: 5 5 5 | 3 2 3 | 3 2 4
    assert online["per_episode_mean"] == [5, 5, 5, 3, 2, 3, 3, 2, 4]
    assert online["per_epoch_mean"] == pytest.approx([5, 8 / 3, 3])
    assert online["mean_after_first_epoch"] == pytest.approx(17 / 6)
