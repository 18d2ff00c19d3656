"""Deterministic fuzzing of the CLI: damaged stores and bad options. Every case ends in time, with
exit 0 (the damage missed everything read) or exit 2 and one line of error — never a traceback."""

import random
import shutil
import subprocess
import sys

import h5py
import pytest

from arprobe.cli.main import main
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from arprobe.trainer.loop import run

    out = tmp_path_factory.mktemp("fuzz")
    return run(
        tiny_config(out, name="base", epochs=2, weights_every=0, checkpoints="none"), progress=False
    ).path


def info(path):
    return subprocess.run(
        [sys.executable, "-m", "arprobe", "info", str(path)], capture_output=True, text=True, timeout=30
    )


def assert_clean(result):
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-1500:]
    if result.returncode != 0:
        assert result.returncode == 2, result.stderr[-1500:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("arprobe info: error: '"), result.stderr[-1500:]


def damaged(store, tmp_path, name, mutate):
    path = tmp_path / f"{name}.h5"
    shutil.copy(store, path)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(mutate(data)))
    return path


def test_truncations_and_byte_flips_never_crash_or_hang(store, tmp_path):
    rng = random.Random(0)
    size = store.stat().st_size
    cases = [("cut", lambda d, n=n: d[:n]) for n in sorted(rng.sample(range(0, size), 6))]
    for i in range(12):
        where = (
            rng.randrange(0, size) if i % 3 else rng.randrange(0, 4096)
        )  # a third in the metadata up front

        def flip(d, where=where):
            d[where] ^= 0xFF
            return d

        cases.append((f"flip{i}", flip))
    failures = 0
    for name, mutate in cases:
        result = info(damaged(store, tmp_path, name, mutate))
        assert_clean(result)
        failures += result.returncode == 2
    assert failures >= 6  # every truncation, at least


@pytest.mark.parametrize(
    "attr, value",
    [("config", "[1, 2]"), ("config", ""), ("format_version", -3), ("format_version", 99), ("seed", "x")],
)
def test_bad_root_attributes(store, tmp_path, attr, value):
    path = tmp_path / "attrs.h5"
    shutil.copy(store, path)
    with h5py.File(path, "r+") as h5:
        h5.attrs[attr] = value
    assert_clean(info(path))


def test_a_missing_dataset_is_named(store, tmp_path):
    path = tmp_path / "gone.h5"
    shutil.copy(store, path)
    with h5py.File(path, "r+") as h5:
        del h5["loss/eval"]
    result = info(path)
    assert result.returncode == 2 and "reading" in result.stderr and "Traceback" not in result.stderr


BAD_OPTIONS = [
    (["--grad_clip", "-1"], "optim.grad_clip must be non-negative (0: off), got -1.0."),
    (["--weight_decay", "-0.5"], "optim.weight_decay must be non-negative, got -0.5."),
    (["--seed", "-1"], "seed must be a non-negative integer, got -1."),
    (
        ["--record.checkpoints", "0"],
        "record.checkpoints must be 'probes', 'epoch', 'none' or a positive number of episodes",
    ),
    (["--name", "../escape"], "name '../escape' is not a folder name"),
    (["--name", "a/b"], "name 'a/b' is not a folder name"),
    (["--lr", "fast"], "Option 'optim.lr' expects float, got 'fast'."),
    (["--n_docs", "1"], "data.n_docs (T) must be at least 2, got 1."),
    (["--order", "spiral"], "schedule.order must be one of cyclic, shuffle, partial-shuffle, insert"),
    (["--no_such_key", "1"], "Unknown option 'no_such_key'."),
    (["--epochs"], "Option '--epochs' needs a value."),
]


@pytest.mark.parametrize("flags, message", BAD_OPTIONS)
def test_bad_options_are_one_sentence(tmp_path, capsys, flags, message):
    code = main(["run", "--out", str(tmp_path / "runs"), "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs").exists()


def test_toml_booleans_are_not_numbers(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[schedule]\nepochs = true\n")
    code = main(["run", str(config), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "Option 'schedule.epochs' expects int, got True." in err


def test_out_naming_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code = main(["run", "--out", str(tmp_path / "file"), "--no-progress"])
    assert code == 2 and "is a file, not a folder" in capsys.readouterr().err
