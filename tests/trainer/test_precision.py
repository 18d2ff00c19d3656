"""Precision defaults a GPU user expects (issue 23): TF32 on CUDA unless turned off (CPU untouched),
the paper configs in bf16 autocast with float32 weights, a warning naming the measured share of lost
updates when bf16 weights meet a learning rate too small to move them, pretrain --device auto."""

import argparse
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

from arprobe.trainer.precision import WARN_SHARE, LostUpdates, LostUpdateWarning, lost_update_share, use_tf32
from tests.conftest import tiny_config

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper"


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_follows_the_config_on_cuda_and_leaves_cpu_alone(tmp_path, tf32_flags, tf32):
    cfg = tiny_config(tmp_path, tf32=tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
    use_tf32(cfg, torch.device("cpu"))
    assert torch.backends.cuda.matmul.allow_tf32 is (not tf32)  # a CPU run changes nothing
    use_tf32(cfg, torch.device("cuda", 0))  # the flags are process settings: no GPU needed to set them
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32


def test_tf32_is_on_by_default_and_not_in_the_run_name(tmp_path):
    cfg = tiny_config(tmp_path, name="")
    assert cfg.model.tf32 is True
    assert "tf32" not in cfg.run_dir.name
    assert "tf32off" in tiny_config(tmp_path, name="", tf32=False).run_dir.name


def test_every_paper_config_trains_in_bf16_autocast_with_float32_weights():
    files = sorted(PAPER.glob("*.toml"))
    assert len(files) >= 20
    for path in files:
        model = tomllib.loads(path.read_text())["model"]
        assert model.get("autocast") == "bfloat16", path.name
        assert model.get("dtype", "float32") == "float32", path.name


def test_a_paper_run_config_loads_with_its_autocast():
    from arprobe.trainer.config import load_config

    cfg = load_config(PAPER / "fig2b_random_init_1b.toml")
    assert (cfg.model.autocast, cfg.model.dtype, cfg.model.tf32) == ("bfloat16", "float32", True)


# --- lost updates ---------------------------------------------------------------------------------


def one_step(lr: float, dtype=torch.bfloat16, optimizer="adam"):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64)).to(dtype)
    with torch.no_grad():
        model[0].weight.normal_(0, 0.02)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    watch = LostUpdates(opt, lr, str(dtype).removeprefix("torch."))
    model(torch.randn(8, 64, dtype=dtype)).square().mean().backward()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
        opt.zero_grad()
        model(torch.randn(8, 64, dtype=dtype)).square().mean().backward()
        opt.step()  # a second step: the check has detached
    return watch, [w for w in caught if issubclass(w.category, LostUpdateWarning)]


def test_bf16_weights_at_adam_lr_1e5_lose_most_updates_and_say_how_many():
    watch, caught = one_step(1e-5)
    assert watch.share > 0.5  # |w| ~ 0.02: half a bf16 ulp is 6e-5, six times the step (measured: 83%)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(f"{100 * watch.share:.0f}% of the weights' updates were lost on the first step")
    assert "model.dtype bfloat16" in message and "optim.lr 1e-05" in message
    assert "model.autocast bfloat16" in message


def test_bf16_weights_at_lr_1e2_keep_their_updates():
    watch, caught = one_step(1e-2)
    assert watch.share < WARN_SHARE and caught == []


def test_float32_weights_are_not_watched():
    watch, caught = one_step(1e-5, dtype=torch.float32)
    assert watch.share is None and caught == []


def test_the_share_counts_only_values_whose_update_was_nonzero():
    before = [torch.tensor([1.0, 2.0, 3.0, 4.0])]
    after = [torch.tensor([1.0, 2.5, 3.0, 4.0])]
    moved = [torch.tensor([True, True, True, False])]
    assert lost_update_share(before, after, moved) == pytest.approx(2 / 3)
    assert lost_update_share(before, after, [torch.zeros(4, dtype=torch.bool)]) == 0.0


def test_a_bf16_run_at_lr_1e5_warns_once_and_at_1e2_does_not(tmp_path):
    from arprobe.trainer.loop import run

    small = dict(dtype="bfloat16", epochs=1, n_docs=2, all_weights_dim=0, grads_at="never")
    with pytest.warns(LostUpdateWarning, match=r"^\d+% of the weights' updates were lost") as caught:
        run(tiny_config(tmp_path, name="small-lr", lr=1e-5, **small), progress=False)
    assert len([w for w in caught if issubclass(w.category, LostUpdateWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", LostUpdateWarning)
        run(tiny_config(tmp_path, name="large-lr", lr=1e-2, **small), progress=False)


# --- pretrain --device ----------------------------------------------------------------------------


def test_pretrain_defaults_to_the_gpu_when_there_is_one(monkeypatch, tmp_path):
    from arprobe.cli import pretrain as cli_pretrain
    from arprobe.pretrain import train

    parser = argparse.ArgumentParser()
    args = cli_pretrain.command_parser(parser.add_subparsers()).parse_args(
        ["--out", str(tmp_path), "--dry-run", "--threads", "1"]
    )
    assert args.device == "auto"
    seen = {}
    monkeypatch.setattr(
        train, "dry_run", lambda ladder_dir, settings, device, threads: seen.setdefault("d", device)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cli_pretrain.pretrain_command(args, []) == 0
    assert seen["d"] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen.clear()
    cli_pretrain.pretrain_command(args, [])
    assert seen["d"] == "cpu"
