"""Batched training (trainer.members.Stacked): members of one vmapped model train as separate runs.

Equality is to float tolerance, not bitwise: a vmapped step runs batched matmuls (bmm) whose
sums are ordered differently from one model's. Measured differences: ~3e-6 on losses of 3-7 nats
after one replayed episode (tests allow 2e-5); whole runs compound them (see RUN_RTOL).
"""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from tests.helpers import LEAN, arprobe, eval_matrix, write_sweep
from tests.tolerances import ATOL_LOSS

# Whole runs: the differences compound over episodes (Adam divides by its small second moment).
# Measured over 10 tiny episodes: 4e-5 on losses (1e-5 relative), RUN_* allow a few times that.
RUN_RTOL, RUN_ATOL = 1e-4, 1e-4
ATOL_WEIGHT_SGD = 1e-5
ADAM_WEIGHT_RTOL = 1e-3

# Every rule of the episode step at once: clipping, kept Adam state, frozen blocks, weight decay,
# shifted and masked training windows (data randomness from the run's generator).
EVERY_RULE = dict(
    epochs=2,
    grad_clip=0.5,
    reset_per_doc=False,
    freeze_blocks=1,
    weight_decay=0.1,
    max_shift=2,
    mask_prob=0.1,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def cyclic_run(tmp_path_factory):
    """A tiny cyclic run (T=5, E=3): its checkpoint at the end of epoch 2 is episode 10."""
    from arprobe.trainer.loop import run

    result = run(tiny_config(tmp_path_factory.mktemp("cyclic"), threads=1), progress=False)
    assert result.status == "complete"
    return result.path


@pytest.fixture(scope="module")
def rules_run(tmp_path_factory):
    from arprobe.trainer.loop import run

    out = tmp_path_factory.mktemp("rules")
    result = run(tiny_config(out, threads=1, **EVERY_RULE), progress=False)
    assert result.status == "complete"
    return result.path


def _replay(store_path, episode):
    from arprobe.storage import RunStore
    from arprobe.trainer.api import Replay

    store = RunStore(store_path)
    return Replay(store, episode, device="cpu")


@pytest.mark.parametrize("batch", [5, 2])  # all members at once; chunks of 2 (the last one padded)
def test_pairwise_rows_batched_equal_sequential(cyclic_run, batch):
    from arprobe.trainer.api import pairwise_rows

    torch.manual_seed(0)
    replay = _replay(cyclic_run, 10)
    sequential = pairwise_rows(replay, list(range(5)), 1)
    batched = pairwise_rows(replay, list(range(5)), batch)
    assert batched.shape == sequential.shape == (5, 5)
    np.testing.assert_allclose(batched, sequential, rtol=0, atol=ATOL_LOSS)
    # training on x_i lowers x_i's own loss most: the rows are real replays, not copies
    assert (np.argmin(batched, axis=1) == np.arange(5)).all()
    np.testing.assert_array_equal(pairwise_rows(replay, [3], 1), sequential[3:4])  # reset between calls


def test_pairwise_rows_every_rule(rules_run):
    from arprobe.trainer.api import pairwise_rows

    replay = _replay(rules_run, 5)
    assert replay._keep  # Adam's moments come from the checkpoint
    sequential = pairwise_rows(replay, [0, 2, 4], 1)
    batched = pairwise_rows(replay, [0, 2, 4], 3)
    np.testing.assert_allclose(batched, sequential, rtol=0, atol=ATOL_LOSS)


def test_frozen_parameters_stay_frozen_and_members_are_views(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from arprobe.models.text import freeze_first_blocks
    from arprobe.trainer.members import Stacked

    config = GPTNeoXConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(config)
        freeze_first_blocks(model, 1)
        members.append(model)
    frozen = members[1].gpt_neox.layers[0].attention.dense.weight.detach().clone()
    stacked = Stacked(members, tiny_config(tmp_path, lr=1e-2, weight_decay=0.0))
    stack, optimizer = stacked.stack, stacked.optimizer
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    frozen_names = [n for n in stack.names if not stack.params[n].requires_grad]
    assert "gpt_neox.embed_in.weight" in frozen_names
    assert "gpt_neox.layers.0.attention.dense.weight" in frozen_names
    assert not any(id(stack.params[n]) in in_optimizer for n in frozen_names)
    # member 1's parameter is a view of the stacked leaf: same storage, same values
    view = members[1].gpt_neox.layers[1].mlp.dense_h_to_4h.weight
    stacked = stack.logical(stack.params)["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"]
    assert view.data_ptr() == stacked[1].data_ptr()
    with torch.no_grad():
        stacked.add_(1.0)
    assert torch.equal(view, stacked[1])
    assert torch.equal(members[1].gpt_neox.layers[0].attention.dense.weight, frozen)


def _arrays(store_path):
    import h5py

    with h5py.File(store_path, "r") as h5:
        out = {k: h5[k][()] for k in ("loss/eval", "loss/train", "stats/grad_norm", "schedule/doc")}
        out["datasets"] = sorted(n for n in _names(h5))
        out["status"] = h5.attrs["status"]
    return out


def _names(h5):
    names = []
    h5.visit(names.append)
    return names


@pytest.mark.parametrize(
    "variant",
    [
        {},  # the tiny default: cyclic, Adam reset per document
        EVERY_RULE,  # clipping, kept Adam state, frozen blocks, weight decay, shift and mask
        {"optim.name": "sgd", "lr": 0.05, "grad_clip": 1.0, "freeze_blocks": 1},
    ],
    ids=["default", "every-rule", "sgd"],
)
def test_batched_seeds_equal_separate_runs(tmp_path, variant):
    from arprobe.storage import RunStore
    from arprobe.trainer.batched_run import run_batched
    from arprobe.trainer.loop import run

    options = dict(
        threads=1, checkpoints="epoch", epochs=2, **{k: v for k, v in variant.items() if k != "epochs"}
    )
    members = [dict(seed=0), dict(seed=1, order="shuffle")]
    separate = [
        run(tiny_config(tmp_path / "separate", name=f"m{i}", **options, **m), progress=False).path
        for i, m in enumerate(members)
    ]
    cfgs = [tiny_config(tmp_path / "batched", name=f"m{i}", **options, **m) for i, m in enumerate(members)]
    results = run_batched(cfgs, progress=False)
    assert [r.status for r in results] == ["complete", "complete"]
    for result, path in zip(results, separate):
        a, b = _arrays(result.path), _arrays(path)
        assert a["datasets"] == b["datasets"] and a["status"] == b["status"] == "complete"
        np.testing.assert_array_equal(a["schedule/doc"], b["schedule/doc"])
        for key in ("loss/eval", "loss/train", "stats/grad_norm"):
            assert a[key].shape == b[key].shape
            np.testing.assert_allclose(a[key], b[key], rtol=RUN_RTOL, atol=RUN_ATOL, err_msg=key)
        with RunStore(result.path) as sa, RunStore(path) as sb:
            K = sa.completed_episodes
            wa, wb = sa.checkpoint(K), sb.checkpoint(K)  # final weights and kept Adam state
            x = np.concatenate([wa["model"][n].ravel() for n in sorted(wb["model"])])
            y = np.concatenate([wb["model"][n].ravel() for n in sorted(wb["model"])])
            if cfgs[0].optim.name == "sgd":  # updates proportional to gradients: weights agree
                np.testing.assert_allclose(x, y, rtol=0, atol=ATOL_WEIGHT_SGD)
            else:
                # Adam's first step after a reset moves every element by lr·sign(g), whatever |g|:
                # elements whose gradient is at rounding level (the attention key bias has none at
                # all) step either way. Measured: whole-model relative difference ~1e-4, single
                # elements up to 2·lr.
                assert np.linalg.norm(x - y) / np.linalg.norm(y) < ADAM_WEIGHT_RTOL
                assert np.abs(x - y).max() <= 2.5 * cfgs[0].optim.lr
            assert sorted(wa["optim"]) == sorted(wb["optim"])
            np.testing.assert_array_equal(wa["rng"], wb["rng"])  # same data randomness drawn
    # the two members really differ (different documents, init and order)
    assert not np.allclose(_arrays(results[0].path)["loss/eval"], _arrays(results[1].path)["loss/eval"])


def test_unbatchable_configs_are_refused(tmp_path):
    from arprobe.errors import UserError
    from arprobe.trainer.batched_run import batch_key, run_batched

    a, b = tiny_config(tmp_path, name="a", lr=1e-3), tiny_config(tmp_path, name="b", lr=2e-3, seed=1)
    assert batch_key(a) != batch_key(b)
    assert batch_key(a) == batch_key(tiny_config(tmp_path, name="c", seed=3, order="shuffle", mask_prob=0.1))
    with pytest.raises(UserError, match=r"^Runs trained as one batched model may differ only in seed, .*; "
                       r"these also differ in optim.lr\.$"):  # fmt: skip
        run_batched([a, b], progress=False)


def test_sweep_batch_seeds_groups_batchable_points(tmp_path):
    """--batch-seeds 2: per lr (not batchable across), seeds 0 and 1 train as one model, seed 2 alone;
    every point still has its own complete store, equal to a separate run."""
    import json

    from arprobe.trainer.loop import run

    sweep_file = write_sweep(
        tmp_path / "b.toml", grid={"lr": [1e-3, 2e-3]}, seeds=[0, 1, 2], name="b", epochs=2
    )
    result = arprobe(
        "sweep", str(sweep_file), "--out", str(tmp_path / "sweeps"), "--workers", "1", "--threads", "1",
        "--batch-seeds", "2", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads((tmp_path / "sweeps/b/manifest.json").read_text())["points"]}
    assert {n: e["status"] for n, e in entries.items()} == {
        f"lr-{lr}_s{s}": "complete" for lr in ("0.001", "0.002") for s in range(3)
    }
    actions = {n: e["attempts"][-1]["action"] for n, e in entries.items()}
    assert actions == {
        f"lr-{lr}_s{s}": ("run-batched x2" if s < 2 else "run") for lr in ("0.001", "0.002") for s in range(3)
    }
    separate = run(
        tiny_config(tmp_path / "separate", name="s1", seed=1, lr=2e-3, epochs=2, threads=1, **LEAN),
        progress=False,
    )
    np.testing.assert_allclose(
        eval_matrix(tmp_path / "sweeps/b/runs/lr-0.002_s1/run.h5"),
        eval_matrix(separate.path),
        rtol=RUN_RTOL,
        atol=RUN_ATOL,
    )
