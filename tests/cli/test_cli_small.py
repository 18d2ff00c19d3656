"""The CLI's small things (issue 24 item 7): did-you-mean for a mistyped flag, the re-run hint after
Ctrl-C stops a sweep, the manifest's episodes of an interrupted run taken from its store, `run
--dry-run` into an existing folder, --quiet / --verbose, and config.toml beside run.h5 that trains
the same run again."""

import json
import shlex
import tomllib

import h5py
import numpy as np
import pytest

from arprobe.cli.main import main
from arprobe.testing import make_store
from tests.conftest import TINY, tiny_config
from tests.helpers import LEAN, write_sweep

# --- did you mean ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["sweep", "s.toml"], ["analyze"], ["info", "x"]])
def test_a_mistyped_flag_of_a_command_gets_a_did_you_mean(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([*command, "--dryrun" if command[0] == "sweep" else "--no-progess"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    if command[0] == "sweep":
        assert "unrecognized arguments: --dryrun (did you mean --dry-run?)" in err
    elif command[0] == "analyze":
        assert "unrecognized arguments: --no-progess (did you mean --no-progress?)" in err
    else:
        assert err.rstrip().endswith("unrecognized arguments: --no-progess")  # info has no flag close to it


@pytest.mark.parametrize(
    "flag, meant", [("--dryrun", "--dry-run"), ("--dry_run", "--dry-run"), ("--quite", "--quiet")]
)
def test_run_points_a_near_miss_to_its_own_flag_not_a_config_key(flag, meant, capsys):
    assert main(["run", flag]) == 2
    assert f"arprobe run: error: Unknown option '{flag}'. Did you mean '{meant}'?" in capsys.readouterr().err


def test_config_keys_are_not_taken_for_near_misses(tmp_path, capsys):
    # --name is a config key and close to no flag; --out too: the dry run goes ahead
    assert main(["run", "--dry-run", "--name", "x", "--out", str(tmp_path), *flags(TINY)]) == 0


def flags(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


# --- a sweep stopped by Ctrl-C -----------------------------------------------------------------


def test_an_interrupted_sweep_says_to_run_the_same_command_again(tmp_path, monkeypatch, capsys):
    import arprobe.sweep.execute

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(arprobe.sweep.execute, "execute_sweep", interrupted)
    path = write_sweep(tmp_path / "my sweep.toml", grid={"order": ["cyclic"]}, seeds=[0])
    argv = ["sweep", str(path), "--out", str(tmp_path / "out"), "--workers", "1"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "arprobe sweep: interrupted" in err
    assert "run the same command again (complete runs are skipped, interrupted ones resume): " in err
    assert err.rstrip().endswith(shlex.join(["arprobe", *argv]))  # quoted: the path has a space


class StoppedAfterSeven:
    """A backend whose one run writes 7 episodes into its store before Ctrl-C reaches the sweep."""

    name, threads = "fake", 1

    def describe(self):
        return "fake"

    def run(self, jobs, on_start, on_done):
        (job,) = jobs
        on_start(job)
        run_dir = make_store(
            tmp_run_dir(job),
            loss_eval=np.ones((8, 5), dtype=np.float32),
            schedule_doc=np.array([0, 1, 2, 3, 4, 0, 1]),
        )
        with h5py.File(run_dir / "run.h5", "r+") as h5:  # stopped, as a run stopped by SIGINT is
            h5.attrs["status"] = "stopped"
            if "state/status" in h5:
                h5["state/status"][0] = b"stopped"
        raise KeyboardInterrupt


def tmp_run_dir(job):
    from pathlib import Path

    return Path(job["overrides"]["out"]) / job["overrides"]["name"]


def test_the_manifest_of_an_interrupted_run_says_what_its_store_holds(tmp_path):
    from arprobe.sweep.execute import execute_sweep
    from arprobe.sweep.spec import load_sweep

    spec = load_sweep(write_sweep(tmp_path / "s.toml", grid={"order": ["cyclic"]}, seeds=[0]))
    with pytest.raises(KeyboardInterrupt):
        execute_sweep(spec, tmp_path / "sweep", StoppedAfterSeven(), extend=False, progress=False)
    (entry,) = json.loads((tmp_path / "sweep" / "manifest.json").read_text())["points"]
    assert entry["episodes"] == 7
    assert entry["status"] == "interrupted"


# --- run --dry-run into an existing folder -----------------------------------------------------


def test_dry_run_warns_that_the_folder_holds_a_run(tiny_run, capsys):
    argv = ["run", "--dry-run", "--out", str(tiny_run.parent), "--name", tiny_run.name, *flags(TINY)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"warning: the run folder '{tiny_run}' already exists; the real run would refuse it" in err
    assert f"arprobe run --resume {tiny_run}" in err and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    assert "the real run would replace it (--overwrite)." in capsys.readouterr().err


def test_dry_run_into_a_new_folder_warns_nothing(tmp_path, capsys):
    assert main(["run", "--dry-run", "--out", str(tmp_path), "--name", "new", *flags(TINY)]) == 0
    assert "warning" not in capsys.readouterr().err


# --- --quiet / --verbose -----------------------------------------------------------------------


def test_quiet_prints_only_the_result_line(tmp_path, capsys):
    argv = ["run", "--dry-run", "--out", str(tmp_path), "--name", "q", *flags(TINY)]
    assert main(argv) == 0
    loud = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert main([*argv, "--quiet"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(loud) > 3 and len(quiet) == 1 and quiet[0] in loud


def test_the_result_line_is_the_finding_or_the_last_result():
    from arprobe.cli.main import result_line

    run = "finding: RS 0.4 vs 0.1.\n  RS(2) 0.4\nstatus: complete\nstore: runs/a/run.h5\n"
    assert result_line(run) == "finding: RS 0.4 vs 0.1.\n"
    sweep = (
        "sweep x: 4 runs\n  a: failed\n4 of 4 runs complete (0 were already done).\nnext: arprobe analyze x\n"
    )
    assert result_line(sweep) == "4 of 4 runs complete (0 were already done).\n"
    assert result_line("") == ""


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--quiet", "--verbose"])
    assert stop.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_quiet_turns_progress_bars_off(tmp_path, monkeypatch):
    import arprobe.cli.sweep

    seen = {}

    def record(args, extra):
        seen["no_progress"] = args.no_progress
        return 0

    monkeypatch.setattr(arprobe.cli.sweep, "sweep_command", record)
    main(["sweep", "s.toml", "--quiet"])
    assert seen == {"no_progress": True}


# --- config.toml beside run.h5 -----------------------------------------------------------------


def test_config_toml_beside_the_store_reproduces_the_resolved_config(tiny_run):
    from arprobe.storage import RunStore
    from arprobe.trainer.config import load_config

    text = (tiny_run / "config.toml").read_text()
    tomllib.loads(text)  # valid TOML
    with RunStore(tiny_run / "run.h5") as store:
        stored = store.config
    assert load_config(tiny_run / "config.toml").to_dict() == stored
    assert not list(tiny_run.glob(".config.toml.*"))  # no temporary file left


def test_run_config_of_the_file_trains_the_same_run(tmp_path, tiny_run, capsys):
    """`arprobe run --config <run>/config.toml --name other` trains the run again: same eval matrix."""
    from arprobe.storage import RunStore

    lean = tiny_config(tmp_path, **LEAN, name="lean")
    from arprobe.trainer.loop import run

    first = run(lean, progress=False)
    argv = ["run", "--config", str(first.path.parent / "config.toml"), "--name", "again", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    with RunStore(first.path) as a, RunStore(tmp_path / "again" / "run.h5") as b:
        np.testing.assert_array_equal(a.eval_matrix(), b.eval_matrix())
        assert {**a.config, "name": "again"} == b.config


def test_a_config_file_given_twice_is_one_sentence(tmp_path, capsys):
    assert main(["run", "a.toml", "--config", "b.toml"]) == 2
    assert (
        "Give the config file once, as --config b.toml or as the first argument." in capsys.readouterr().err
    )


def test_toml_values_read_back_exactly():
    from arprobe.storage.config_toml import to_toml

    table = {
        "a": 1e-05,
        "b": 0.1 + 0.2,
        "s": 'q"uote\\ \u00e9\n',
        "l": [1, 2],
        "t": True,
        "x": {"y": float("inf"), "z": {"deep": -3}},
    }
    assert tomllib.loads(to_toml(table)) == table


def test_quiet_after_an_error_prints_only_the_error(tmp_path, capsys):
    assert main(["run", "--dry-run", "--quiet", "--out", str(tmp_path), "--epochs", "-1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("arprobe run: error: ") and len(captured.err.strip().splitlines()) == 1
