"""The members strategies of the one episode step (trainer.members): Single (a plain module) and
Stacked (vmapped members) under every rule train_episode applies — freezing, the lr schedule,
clipping per member, the optimizer-state reset per document, and the generator draws.

Single and Stacked are not the same arithmetic (bmm sums in another order), so their losses and
norms agree to the tolerance tests/tolerances.py derives (ATOL_LOSS); rules that are exact (what
is frozen, which lr, how many draws, Adam's step count) are checked exactly.
"""

import copy

import numpy as np
import pytest
import torch

from arprobe.trainer.episode import TrainingRules, train_episode
from arprobe.trainer.members import Single, Stacked
from tests.conftest import tiny_config
from tests.tolerances import ATOL_LOSS

M = 3
DOCS = [1, 3]  # the two stacked members train different documents


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny text setup with a frozen first block and data randomness drawn per step."""
    from arprobe.trainer.loop import prepare

    cfg = tiny_config(
        tmp_path_factory.mktemp("members"), threads=1, freeze_blocks=1, max_shift=2, mask_prob=0.2
    )
    return prepare(cfg)


def rules(**changes) -> TrainingRules:
    base = dict(steps_per_doc=M, total_steps=2 * M, lr=1e-3, min_lr=1e-4, lr_schedule="constant",
                grad_clip=0.0, reset_optimizer=True)  # fmt: skip
    return TrainingRules(**{**base, **changes})


def both(setup, **optim):
    """(Single on a copy of the model, Stacked of two copies), their optimizers from ``optim``."""
    cfg = copy.deepcopy(setup.cfg)
    for key, value in optim.items():
        setattr(cfg.optim, key, value)
    single = Single(copy.deepcopy(setup.model), cfg)
    stacked = Stacked([copy.deepcopy(setup.model) for _ in DOCS], cfg)
    return single, stacked


def episode(setup, members, docs, k, episode_rules, generators=None):
    """train_episode as the loop calls it; returns (log, generators)."""
    generators = generators or [torch.Generator().manual_seed(setup.cfg.seed) for _ in docs]
    norms = members.grad_norms(setup.names.parameter_groups(members.modules[0]), setup.device)
    tasks = [setup.task] * members.S
    log = train_episode(
        members, tasks, docs, episode=k, rules=episode_rules, generators=generators, grad_norms=norms
    )
    return log, generators


def params(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_both_strategies_give_one_members_losses_and_norms(setup):
    _, stacked = both(setup)
    L = len(setup.names.parameter_groups(setup.model))
    logs = {doc: episode(setup, both(setup)[0], [doc], 1, rules())[0] for doc in DOCS}  # one Single each
    log, _ = episode(setup, stacked, DOCS, 1, rules())
    assert log.losses.shape == (2, M) and log.grad_norms.shape == (2, M, L)
    for s, doc in enumerate(DOCS):
        assert logs[doc].losses.shape == (1, M) and logs[doc].grad_norms.shape == (1, M, L)
        torch.testing.assert_close(log.losses[s], logs[doc].losses[0], rtol=0, atol=ATOL_LOSS)
        # norms of ~1: the same rounding budget as losses of a few nats
        torch.testing.assert_close(log.grad_norms[s], logs[doc].grad_norms[0], rtol=1e-4, atol=ATOL_LOSS)
    assert not torch.allclose(log.losses[0], log.losses[1])  # the members trained different documents


@pytest.mark.parametrize("kind", ["single", "stacked"])
def test_frozen_parameters_never_move(setup, kind):
    members = dict(zip(("single", "stacked"), both(setup)))[kind]
    before = [params(m) for m in members.modules]
    episode(setup, members, DOCS[: members.S], 1, rules(lr=1e-2))
    for module, was in zip(members.modules, before):
        frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
        assert any(".layers.0." in n for n in frozen) and any("embed_in" in n for n in frozen)
        for name, value in params(module).items():
            assert torch.equal(value, was[name]) == (name in frozen), name


@pytest.mark.parametrize("kind", ["single", "stacked"])
def test_the_lr_follows_the_whole_schedule(setup, kind):
    members = dict(zip(("single", "stacked"), both(setup)))[kind]
    cosine = rules(lr_schedule="cosine", lr=1e-2, min_lr=1e-3)
    log, _ = episode(setup, members, DOCS[: members.S], 2, cosine)  # steps M..2M-1 of 2M
    expected = [cosine.lr_at(M + j) for j in range(M)]
    np.testing.assert_array_equal(log.lrs, np.float32(expected))
    assert expected[-1] == 1e-3  # the last step of the schedule reaches min_lr
    assert all(group["lr"] == expected[-1] for group in members.optimizer.param_groups)


@pytest.mark.parametrize("kind", ["single", "stacked"])
def test_clipping_bounds_each_members_own_update(setup, kind):
    """SGD at lr 10 with clip 0.1, one step: each member moves by exactly lr·clip, whatever the other
    member's gradient (a clip over all members together would split that budget between them)."""
    lr, clip = 10.0, 0.1
    members = dict(zip(("single", "stacked"), both(setup, name="sgd", weight_decay=0.0)))[kind]
    before = [params(m) for m in members.modules]
    log, _ = episode(setup, members, DOCS[: members.S], 1, rules(steps_per_doc=1, lr=lr, grad_clip=clip))
    for s, (module, was) in enumerate(zip(members.modules, before)):
        assert log.grad_norms[s, 0].norm() > 10 * clip  # the clip is active: the norm was far above it
        moved = torch.cat([(p.detach() - was[n]).reshape(-1) for n, p in module.named_parameters()])
        # float32 rounding of params ~0.02 moved by ~1e-3 each: ~1e-7 of the update's norm; and the
        # clip's 1e-6 guard against a zero norm
        torch.testing.assert_close(moved.norm(), torch.tensor(lr * clip), rtol=1e-5, atol=0)


@pytest.mark.parametrize("kind", ["single", "stacked"])
@pytest.mark.parametrize("reset", [True, False])
def test_adam_state_is_reset_per_document_or_kept(setup, kind, reset):
    members = dict(zip(("single", "stacked"), both(setup)))[kind]
    episode_rules = rules(reset_optimizer=reset)
    generators = None
    for k in (1, 2):
        _, generators = episode(setup, members, DOCS[: members.S], k, episode_rules, generators)
    for s in range(members.S):
        state = members.member_optimizer(s).state
        trainable = [p for p in members.modules[s].parameters() if p.requires_grad]
        assert set(state) == set(trainable)  # keyed by the member's own parameters
        assert {float(v["step"]) for v in state.values()} == {M if reset else 2 * M}


@pytest.mark.parametrize("kind", ["single", "stacked"])
def test_each_step_draws_one_batch_from_its_members_generator(setup, kind):
    members = dict(zip(("single", "stacked"), both(setup)))[kind]
    docs = DOCS[: members.S]
    _, generators = episode(setup, members, docs, 1, rules())
    for doc, generator in zip(docs, generators):
        replayed = torch.Generator().manual_seed(setup.cfg.seed)
        for _ in range(M):
            setup.task.training_batch(doc, replayed)
        assert torch.equal(generator.get_state(), replayed.get_state())
        assert not torch.equal(
            generator.get_state(), torch.Generator().manual_seed(setup.cfg.seed).get_state()
        )
