"""retrospective: the re-evaluation curve and its anticipation bump, on stores worked by hand."""

import json

import numpy as np
import pytest

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.retrospective import Retrospective
from arprobe.science.retrospective import episodes_since_trained, retrospective
from arprobe.storage import RunStore
from arprobe.testing import cyclic, make_store

# T = 3, E = 2, cyclic. Rows 4..6 are the models of the last epoch; by hand, the documents' recencies
# after episode 4 are (0, 2, 1), after 5 (1, 0, 2), after 6 (2, 1, 0).
LOSS = np.array(
    [
        [5, 5, 5],
        [1, 6, 6],
        [2, 1, 6],
        [3, 2, 1],
        [1, 3, 4],  # recency 0 -> 1, 2 -> 3, 1 -> 4
        [5, 1, 2],  # 1 -> 5, 0 -> 1, 2 -> 2
        [4, 6, 1],  # 2 -> 4, 1 -> 6, 0 -> 1
    ],
    dtype=np.float32,
)


def test_episodes_since_trained_by_hand():
    doc, _ = cyclic(3, 2)
    np.testing.assert_array_equal(episodes_since_trained(doc, 4, 3), [0, 2, 1])
    np.testing.assert_array_equal(episodes_since_trained(doc, 6, 3), [2, 1, 0])
    np.testing.assert_array_equal(episodes_since_trained(doc, 1, 3), [0, np.nan, np.nan])


def test_curve_and_bump_by_hand():
    doc, _ = cyclic(3, 2)
    epoch = retrospective(LOSS, doc, [4, 5, 6])
    # recency 0: (1 + 1 + 1) / 3, recency 1: (4 + 5 + 6) / 3, recency 2: (3 + 2 + 4) / 3
    np.testing.assert_allclose(epoch.loss, [1.0, 5.0, 3.0])
    np.testing.assert_array_equal(epoch.count, [3, 3, 3])
    assert epoch.peak_recency == 1
    assert epoch.bump == pytest.approx((5 - 3) / (5 - 1))
    final = retrospective(LOSS, doc, [6])
    np.testing.assert_allclose(final.loss, [1.0, 6.0, 4.0])
    assert final.bump == pytest.approx((6 - 4) / (6 - 1))


def test_plain_forgetting_has_no_bump_and_a_flat_curve_is_undefined():
    doc, _ = cyclic(3, 2)
    rising = LOSS.copy()
    rising[6] = [3, 2, 1]  # recency 2 -> 3, 1 -> 2, 0 -> 1: the loss only rises with recency
    assert retrospective(rising, doc, [6]).bump == 0.0
    flat = LOSS.copy()
    flat[6] = [2, 2, 2]
    curve = retrospective(flat, doc, [6])
    assert np.isnan(curve.bump)
    assert "never rises more than 1%" in curve.note


def test_probe_reads_the_run_and_its_control(tmp_path):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "run", loss_eval=LOSS, schedule_doc=doc, schedule_epoch=epoch)
    control_loss = LOSS.copy()
    control_loss[4:] = [[1, 4, 5], [5, 1, 6], [6, 5, 1]]  # recency 2 is the highest: no bump
    make_store(
        run / "control",
        loss_eval=control_loss,
        schedule_doc=doc,
        schedule_epoch=epoch,
        config={"schedule": {"order": "shuffle"}},
    )
    out = tmp_path / "out"
    out.mkdir()
    with RunStore(run) as store:
        result = Retrospective().run(store, out, bootstrap=200)
    assert result["bump"] == pytest.approx(0.5)
    assert result["control_bump"] == pytest.approx(0.0)
    low, high = result["bump_interval"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    assert result["verdict"] == "bump 0.500 vs 0.000 in the matched shuffled control (+0.500)."
    written = np.genfromtxt(out / "retrospective.csv", delimiter=",", names=True)
    np.testing.assert_allclose(written["loss"], [1.0, 5.0, 3.0])
    # the control by hand: recency 0 -> 1, 1, 1; 1 -> 5, 5, 5; 2 -> 4, 6, 6
    np.testing.assert_allclose(written["control_loss"], [1.0, 5.0, 16 / 3])
    json.dumps({k: v for k, v in result.items() if not isinstance(v, np.ndarray)})  # JSON-ready scalars


def test_bad_options_and_short_runs_are_one_sentence(tmp_path):
    doc, epoch = cyclic(3, 1)
    run = make_store(tmp_path / "one", loss_eval=LOSS[:4], schedule_doc=doc, schedule_epoch=epoch)
    with RunStore(run) as store:
        with pytest.raises(MissingDataError, match="at least 2 epochs"):
            Retrospective().run(store, tmp_path)
        with pytest.raises(UserError, match="retrospective.models must be one of last_epoch, final"):
            Retrospective().run(store, tmp_path, models="all")
        with pytest.raises(UserError, match="between 1 and 3"):
            Retrospective().run(store, tmp_path, episode=9)


def test_on_a_real_run(tiny_run, tmp_path):
    with RunStore(tiny_run) as store:
        result = Retrospective().run(store, tmp_path, bootstrap=50)
        T = store.n_docs
    assert len(result["loss"]) == T  # a cyclic run's last epoch holds every recency 0 .. T-1
    assert np.all(np.isfinite(result["loss"]))
    assert result["loss"][0] == min(result["loss"])  # just trained is the lowest loss
    assert (tmp_path / "retrospective.png").stat().st_size > 0
