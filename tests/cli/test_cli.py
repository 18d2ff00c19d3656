"""`arprobe run` and `arprobe info` as a user calls them: exit codes, one-line errors, no debris."""

import subprocess
import sys

import pytest

from tests.conftest import TINY


def arprobe(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "arprobe", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def tiny_flags(**extra):
    flags = []
    for key, value in {**TINY, **extra}.items():
        flags += [f"--{key}", str(value)]
    return flags


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n_doc", "5"], "Unknown option 'n_doc'. Did you mean 'n_docs'?"),
        (["--context_length", "1"], "data.context_length (C) must be at least 2, got 1."),
        (["--n_docs", "500"], "Only 7"),  # the pydoc topics hold fewer documents
        (
            ["--model.name", "/nonexistent/model", "--init", "pretrained"],
            "Model path '/nonexistent/model' does not exist.",
        ),
        (["--data.source", "/nonexistent/docs.jsonl"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_nonzero_and_leaves_nothing(tmp_path, flags, message):
    result = arprobe("run", "--out", str(tmp_path / "runs"), "--no-progress", *flags)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_run_then_info(tmp_path):
    out = tmp_path / "runs"
    result = arprobe("run", "--out", str(out), "--name", "cli", "--no-progress", *tiny_flags(epochs=2))
    assert result.returncode == 0, result.stderr
    assert "recovery score per epoch: RS(1)=" in result.stdout
    assert "mean online loss, epochs 2..E:" in result.stdout
    assert f"store: {out / 'cli' / 'run.h5'}" in result.stdout
    info = arprobe("info", str(out / "cli"))
    assert info.returncode == 0, info.stderr
    assert "status:     complete" in info.stdout
    assert "episodes:   10 done, 2 epoch(s) reached (T=5, M=3, E=2, order=cyclic)" in info.stdout
    assert "weights/unembed: 11 snapshot(s) at episodes 0..10" in info.stdout
    assert "checkpoints at episodes: 5\n" in info.stdout  # the default: end of the next-to-last epoch
    again = arprobe("run", "--out", str(out), "--name", "cli", "--no-progress", *tiny_flags(epochs=2))
    assert (
        again.returncode == 2
        and "already exists; choose another --name, pass --overwrite, or --resume it" in again.stderr
    )


HEAVY = ("torch", "transformers", "h5py", "matplotlib")


@pytest.mark.parametrize(
    "args", [[], ["--help"], ["run", "--help"], ["run", "--help-config"], ["analyze", "--help"]]
)
def test_help_imports_no_heavy_library(args):
    # `python -m arprobe ...` in a fresh interpreter, then which heavy modules it loaded: help must
    # not pay for torch (seconds) or transformers; they are imported inside the commands that use them.
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['arprobe', *{args!r}]\n"
        "code = 0\n"
        "try:\n    runpy.run_module('arprobe', run_name='__main__')\n"
        "except SystemExit as exit:\n    code = exit.code or 0\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], code, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stderr.strip().splitlines()[-1] == "LOADED [] 0"
    assert "usage: arprobe" in result.stdout or "--optim.lr" in result.stdout
    if args == ["run", "--help-config"]:
        assert "--optim.lr" in result.stdout and "--schedule.order" in result.stdout
