"""One episode step: the run, resume and every replay train through trainer.episode.train_episode."""

import numpy as np
import pytest
import torch

from arprobe.storage import RunStore
from arprobe.trainer.api import Replay
from arprobe.trainer.episode import TrainingRules
from arprobe.trainer.loop import run
from tests.conftest import tiny_config
from tests.tolerances import ulps

# Everything an episode applies, away from the defaults: frozen blocks, cosine lr, clipping,
# Adam state kept across episodes, window shift and masking drawn from the run's generator.
AWAY = dict(
    freeze_blocks=1, lr_schedule="cosine", min_lr=1e-4, grad_clip=0.5, reset_per_doc=False,
    max_shift=3, mask_prob=0.1, checkpoints="1", epochs=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def away_run(tmp_path_factory):
    result = run(tiny_config(tmp_path_factory.mktemp("away"), **AWAY), progress=False)
    assert result.status == "complete"
    return result.path.parent


def test_replay_of_an_episode_gives_the_next_checkpoint_bit_for_bit(away_run):
    with RunStore(away_run) as store:
        schedule = store.schedule()
        for k in (3, 7):  # inside epoch 1, and in epoch 2 where the cosine lr has moved
            replay = Replay(store, k - 1, device="cpu")
            replay.train_episode(int(schedule.doc[k - 1]))
            expected = store.checkpoint(k)
            got = replay.state()
            for name, value in expected["model"].items():
                np.testing.assert_array_equal(got["model"][name], value, err_msg=name)
            for name, value in expected["optim"].items():
                np.testing.assert_array_equal(got["optim"][name], value, err_msg=name)
            np.testing.assert_array_equal(got["rng"], expected["rng"])
            # and the eval row the run wrote after episode k: the same computation, bit for bit
            np.testing.assert_array_equal(replay.evaluate(), store.eval_matrix()[k])


def test_replay_never_trains_frozen_blocks(away_run):
    with RunStore(away_run) as store:
        replay = Replay(store, 4, device="cpu")
        frozen = {n: p.detach().clone() for n, p in replay.model.named_parameters() if not p.requires_grad}
        trained = {n: p.detach().clone() for n, p in replay.model.named_parameters() if p.requires_grad}
        assert any(".layers.0." in n for n in frozen) and any("embed_in" in n for n in frozen)
        assert not any(".layers.1." in n for n in frozen)
        replay.train_episode(2)
    for name, before in frozen.items():
        torch.testing.assert_close(
            dict(replay.model.named_parameters())[name].detach(), before, rtol=0, atol=0
        )
    assert any(
        not torch.equal(dict(replay.model.named_parameters())[n].detach(), v) for n, v in trained.items()
    )


def test_pairwise_recovery_replays_with_the_runs_rules(away_run, tmp_path):
    from arprobe.probes.pairwise_recovery import PairwiseRecovery

    with RunStore(away_run) as store:
        result = PairwiseRecovery().run(store, tmp_path, episode=5)
        # Row i is the loss change after the run's own episode 6 on document i: check one by hand.
        replay = Replay(store, 5, device="cpu")
        before = replay.evaluate()
        replay.train_episode(3)
        after = replay.evaluate()
        # Not the same computation: the probe trained documents 0..2 from the checkpoint before
        # this one, so its tensors sit elsewhere in memory and some CPUs (AMD EPYC) round one loss
        # differently in the last place. A difference of two float32 losses of ~5 nats keeps a few
        # ulp(5) = 4.8e-7 absolute, whatever its size: compare to that, not to a relative 1e-6.
        np.testing.assert_allclose(result["recovery"][3], before - after, rtol=0, atol=ulps(before))
    assert (tmp_path / "pairwise_recovery.png").exists()


def test_cosine_rules_follow_the_whole_schedule():
    rules = TrainingRules(steps_per_doc=2, total_steps=5, lr=1.0, min_lr=0.0, lr_schedule="cosine",
                          grad_clip=0.0, reset_optimizer=True)  # fmt: skip
    np.testing.assert_allclose(
        [rules.lr_at(s) for s in range(5)],
        [1.0, 0.5 + 0.5 * np.cos(np.pi / 4), 0.5, 0.5 - 0.5 * np.cos(np.pi / 4), 0.0],
    )


def test_pairwise_distances_are_undefined_outside_a_cyclic_order(tmp_path):
    from arprobe.probes.pairwise_recovery import PairwiseRecovery

    path = run(tiny_config(tmp_path, order="shuffle", epochs=2), progress=False).path
    with RunStore(path) as store:
        result = PairwiseRecovery().run(store, tmp_path, episode=5)
    assert result["recovery"].shape == (5, 5) and np.isfinite(result["recovery"]).all()
    assert result["peak_distance"] is None and result["b_since_trained"] is None
    assert np.isnan(result["by_distance"]).all()
    assert result["distance_note"].startswith("the run's epochs do not all train x_1..x_T in order")
