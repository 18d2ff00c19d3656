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
    (
        ["--seed", str(2**64)],
        "seed must be at most 2**32-1 = 4294967295 (scikit-learn's and numpy's legacy generators take "
        f"no more), got {2**64}.",
    ),
    (["--seed", str(2**32)], "seed must be at most 2**32-1 = 4294967295"),
    # 10 documents x 10**9 epochs: episode numbers would not fit the store's int32
    (
        ["--epochs", "1000000000"],
        "The run plans 10,000,000,000 episodes (schedule.epochs x data.n_docs); a store holds at most "
        "2**31-1 = 2,147,483,647: lower schedule.epochs.",
    ),
    (["--context_length", str(2**31)], "Each document window holds C + 2 * max_shift = 2,147,483,648 tokens"),
    (["--max_shift", str(2**30)], "Each document window holds C + 2 * max_shift = 2,147,483,712 tokens"),
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


def test_a_config_file_that_is_not_text(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_bytes(bytes(range(256)))
    code = main(["run", str(config), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"arprobe run: error: Config file '{config}' is not text (TOML is UTF-8); give a TOML file."
    ]
    assert not (tmp_path / "runs").exists()


def test_a_sweep_file_that_is_not_text(tmp_path, capsys):
    sweep = tmp_path / "s.toml"
    sweep.write_bytes(bytes(range(256)))
    code = main(["sweep", str(sweep), "--out", str(tmp_path / "sweeps")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        f"arprobe sweep: error: Sweep file '{sweep}' is not text (TOML is UTF-8); give a TOML file."
    ]
    assert not (tmp_path / "sweeps").exists()


# What the default config (T=10, C=64, the tiny preset: d_model 256, 4 blocks, a 4096-token BPE)
# needs at the least with 10**7 epochs: K = 10**8 episodes; the eval matrix keeps K + 1 rows of
# 10 float32 and a 112-byte array header each = 15.2 GB; the schedule 24 K + 224 E = 4.64 GB;
# tokens 12 x 10 x 64, logits 4 x 64 x 4096, activations 4 x 64 x 256 x 5: 1.4 MB. Total 19.8 GB.
HUGE_EPOCHS = (
    "The run needs at least 19.8 GB of memory (15.2 GB for the eval matrix, 100,000,000 episodes x T=10) "
    "but this machine has 1.0 GB free; lower schedule.epochs or data.n_docs."
)


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_run_this_machine_cannot_hold_is_refused_before_allocating(tmp_path, capsys, monkeypatch, dry_run):
    import time

    import arprobe.trainer.loop  # noqa: F401  (imported before the clock starts: only the check is timed)
    from arprobe.trainer import memory

    monkeypatch.setattr(memory, "host_available_bytes", lambda: 10**9)
    started = time.monotonic()
    code = main(["run", "--out", str(tmp_path / "runs"), "--epochs", str(10**7), *(["--dry-run"] * dry_run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"arprobe run: error: {HUGE_EPOCHS}"]
    assert time.monotonic() - started < 5  # arithmetic only: nothing was drawn, built or allocated
    assert not (tmp_path / "runs").exists()
    # C = 10**7: one forward's logits alone are 4 x 10**7 x 4096 bytes = 163.8 GB.
    code = main(["run", "--out", str(tmp_path / "runs"), "--context_length", str(10**7)])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "(163.8 GB for one forward's logits, C=10,000,000 x vocab 4,096)" in line
    assert line.endswith("lower data.context_length.") and not (tmp_path / "runs").exists()


def test_a_store_larger_than_the_disk_is_refused_before_preparing(tmp_path, capsys, monkeypatch):
    import shutil as sh

    from arprobe.trainer import plan

    monkeypatch.setattr(plan.shutil, "disk_usage", lambda _: sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    # 10**6 episodes, each at least 4 T + 12 M + 16 bytes of losses and schedule (T = M = 10: 176)
    # and the weights/all sketch of 65536 float32 (262,144): 262.3 GB, with 7.7 KB of tokens.
    code = main(["run", "--out", str(tmp_path / "runs"), "--epochs", str(10**5)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [
        "arprobe run: error: The store of 1,000,000 episodes needs at least 262.3 GB but only 1.0 KB is free "
        f"under '{tmp_path}'; lower schedule.epochs, record.all_weights_dim or data.context_length, "
        "or use another --out."
    ]
    assert not (tmp_path / "runs").exists()


def analyze(path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "arprobe", "analyze", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda h5: h5.attrs.__setitem__("config", "{not json"),
            "has a config attribute that is not valid JSON",
        ),
        (lambda h5: h5.attrs.__setitem__("config", 7), "has a config attribute that is not valid JSON"),
        (lambda h5: h5.attrs.__setitem__("status", "exploded"), "has an unknown status 'exploded'"),
        (lambda h5: h5["state/status"].__setitem__(0, b"exploded"), "has an unknown status 'exploded'"),
    ],
)
def test_a_malformed_store_is_refused_once_by_info_and_analyze(store, tmp_path, mutate, message):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(store, run / "run.h5")
    with h5py.File(run / "run.h5", "r+") as h5:
        mutate(h5)
    for result in (info(run), analyze(run), analyze(run, store.parent)):  # alone, and first of two runs
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-1500:]
        assert message in lines[0] and "Traceback" not in result.stderr
    assert not (run / "report").exists() and not (store.parent / "report").exists()
