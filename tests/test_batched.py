"""Batched training (arprobe.trainer.batched): members of one vmapped model train as separate runs.

Equality is to float tolerance, not bitwise: a vmapped step runs batched matmuls (bmm) whose
sums are ordered differently from one model's. Measured differences: ~3e-6 on losses of 3-7 nats
after one replayed episode; the tests allow ATOL = 2e-5 on losses and 1e-5 on weights.
"""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config

ATOL_LOSS = 2e-5
ATOL_WEIGHT = 1e-5

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


@pytest.fixture(autouse=True)
def one_thread():
    """Batch-size-1 steps on shared cores: one torch thread (a run sets its own, which stays)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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


def test_frozen_parameters_stay_frozen_and_members_are_views():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from arprobe.trainer.batched import StackedModels, make_stacked_optimizer
    from arprobe.trainer.models import freeze_first_blocks

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
    stack = StackedModels(members)
    optimizer = make_stacked_optimizer(stack, "adam", 1e-2, 0.0)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    frozen_names = [n for n in stack.names if not stack.params[n].requires_grad]
    assert "gpt_neox.embed_in.weight" in frozen_names
    assert "gpt_neox.layers.0.attention.dense.weight" in frozen_names
    assert not any(id(stack.params[n]) in in_optimizer for n in frozen_names)
    # member 1's parameter is a view of the stacked leaf: same storage, same values
    view = members[1].gpt_neox.layers[1].mlp.dense_h_to_4h.weight
    stacked = stack.params["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"]
    assert view.data_ptr() == stacked[1].data_ptr()
    with torch.no_grad():
        stacked.add_(1.0)
    assert torch.equal(view, stacked[1])
    assert torch.equal(members[1].gpt_neox.layers[0].attention.dense.weight, frozen)
