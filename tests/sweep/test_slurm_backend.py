"""`arprobe sweep --backend slurm` offline: the sbatch script a stand-in `sbatch` on PATH receives (its
#SBATCH lines, one array per sweep), --dry-run's script without submitting, a real tiny point through
submitit's local executor, and a requeued task resuming its store from the resume point."""

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from arprobe.cli.main import main
from tests.conftest import TINY
from tests.helpers import LEAN, eval_matrix, write_sweep

pytest.importorskip("submitit")  # the [slurm] extra, in [test]

SLURM_TABLE = """
[slurm]
partition = "gpu"
time = 30
gpus_per_run = 1
cpus_per_run = 2
mem_gb = 8
account = "lab"
array_parallelism = 2
sbatch = ["--mail-type=END"]
setup = ["module load cuda"]
"""

EXPECTED_LINES = [
    "#SBATCH --array=0-3%2",  # one array of the 4 points, 2 at once
    "#SBATCH --partition=gpu",
    "#SBATCH --time=30",
    "#SBATCH --gpus-per-node=1",
    "#SBATCH --cpus-per-task=2",
    "#SBATCH --mem=8GB",
    "#SBATCH --account=lab",
    "#SBATCH --mail-type=END",
    "#SBATCH --job-name=arprobe-tiny",
    "#SBATCH --signal=USR2@90",  # submitit's requeue signal before the time limit
]


def sweep_file(tmp_path: Path, seeds=(0, 1), table: str = SLURM_TABLE) -> Path:
    path = write_sweep(tmp_path / "tiny.toml", grid={"order": ["cyclic", "shuffle"]}, seeds=list(seeds))
    path.write_text(path.read_text() + table)
    return path


def stand_in(bin_dir: Path, name: str, body: str) -> None:
    script = bin_dir / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_dry_run_prints_the_array_and_its_sbatch_script_and_submits_nothing(tmp_path, capsys):
    code = main(
        [
            "sweep",
            str(sweep_file(tmp_path)),
            "--backend",
            "slurm",
            "--dry-run",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "would submit one job array of 4 task(s), 2 at once" in out
    lines = set(out.splitlines())
    for line in EXPECTED_LINES:
        assert line in lines, line
    assert "module load cuda" in lines
    assert not (tmp_path / "out").exists()  # nothing written, nothing submitted


def test_a_stand_in_sbatch_gets_one_array_with_the_options(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorded = tmp_path / "recorded.sh"
    stand_in(bin_dir, "sbatch", f'cp "$1" {recorded}\necho "Submitted batch job 123"\n')
    stand_in(bin_dir, "srun", "exit 0\n")
    # Every task ends FAILED without running (nothing ran it): the sweep reports it from the stores.
    rows = "".join(f"123_{i}|FAILED|node1\\n" for i in range(4))
    stand_in(bin_dir, "sacct", f'printf "JobID|State|NodeList\\n{rows}"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out_dir = tmp_path / "out"
    code = main(
        ["sweep", str(sweep_file(tmp_path)), "--backend", "slurm", "--out", str(out_dir)]
        + ["--slurm", "poll_s=0.01", "--slurm", "time=45", "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "submitted job array 123 (4 task(s))" in captured.out
    script = recorded.read_text().splitlines()
    for line in EXPECTED_LINES:
        expected = "#SBATCH --time=45" if line.startswith("#SBATCH --time") else line  # --slurm wins
        assert expected in script, line
    assert any("-m submitit.core._submit" in line for line in script)
    assert "module load cuda" in script
    entries = json.loads((out_dir / "tiny" / "manifest.json").read_text())["points"]
    assert [e["status"] for e in entries] == ["failed"] * 4
    assert [e["error"] for e in entries] == [f"SLURM task 123_{i} ended FAILED" for i in range(4)]
    assert [e["attempts"][-1]["slurm_job"] for e in entries] == [f"123_{i}" for i in range(4)]


def test_the_local_executor_trains_a_point_for_real(tmp_path, capsys):
    out_dir = tmp_path / "out"
    table = '\n[slurm]\nexecutor = "local"\npoll_s = 0.2\ntime = 10\n'
    path = write_sweep(tmp_path / "one.toml", grid={"order": ["cyclic"]}, seeds=[0], name="one")
    path.write_text(path.read_text() + table)
    code = main(["sweep", str(path), "--backend", "slurm", "--out", str(out_dir), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    (entry,) = json.loads((out_dir / "one" / "manifest.json").read_text())["points"]
    assert entry["status"] == "complete"
    assert entry["episodes"] == TINY["n_docs"] * TINY["epochs"]
    assert eval_matrix(out_dir / "one" / "runs" / entry["name"] / "run.h5").shape == (16, 5)
    assert list((out_dir / "one" / "slurm").iterdir())  # submitit's job files


def test_a_requeued_task_resumes_from_the_resume_point(tmp_path, monkeypatch):
    from submitit.helpers import DelayedSubmission

    from arprobe.storage.writer import RunWriter
    from arprobe.sweep.slurm_backend import SweepTask

    def job(name):
        overrides = {**TINY, **LEAN, "seed": 0, "name": name, "out": str(tmp_path / "runs")}
        return {"name": name, "overrides": overrides, "threads": 1}

    assert SweepTask()(job("whole"))["status"] == "complete"

    commit = RunWriter.commit

    def killed_at_two(self, episode):  # submitit's USR2 handler ends the task with sys.exit
        commit(self, episode)
        if episode == 2:
            raise SystemExit(-1)

    monkeypatch.setattr(RunWriter, "commit", killed_at_two)
    with pytest.raises(SystemExit):
        SweepTask()(job("requeued"))
    monkeypatch.setattr(RunWriter, "commit", commit)

    again = SweepTask().checkpoint(job("requeued"))
    assert isinstance(again, DelayedSubmission) and isinstance(again.function, SweepTask)
    record = again.result()
    assert record["action"] == "resume" and record["from_episode"] >= 1
    assert record["status"] == "complete", record
    assert record["episodes"] == TINY["n_docs"] * TINY["epochs"]
    whole = eval_matrix(tmp_path / "runs" / "whole" / "run.h5")
    np.testing.assert_array_equal(eval_matrix(tmp_path / "runs" / "requeued" / "run.h5"), whole)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--slurm", "partitio=gpu"], "Unknown slurm option 'partitio'. Did you mean 'partition'?"),
        (["--slurm", "time=-5"], "slurm option 'time' must be a non-negative int, got -5."),
        (["--slurm", "oops"], "--slurm takes KEY=VALUE"),
    ],
)
def test_bad_slurm_options_are_one_sentence(tmp_path, capsys, flags, message):
    code = main(["sweep", str(sweep_file(tmp_path)), "--backend", "slurm", "--dry-run", *flags])
    assert code == 2
    assert message in capsys.readouterr().err


def test_slurm_options_need_the_slurm_backend(tmp_path, capsys):
    assert main(["sweep", str(sweep_file(tmp_path)), "--slurm", "time=5", "--dry-run"]) == 2
    assert "add --backend slurm" in capsys.readouterr().err


def test_no_srun_is_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    code = main(["sweep", str(sweep_file(tmp_path)), "--backend", "slurm", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "found no 'srun' on PATH" in capsys.readouterr().err
    assert sys.executable  # the interpreter stays usable for the next test


def test_a_second_call_while_the_array_is_queued_is_refused(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in(bin_dir, "sbatch", 'echo "Submitted batch job 321"\n')
    stand_in(bin_dir, "srun", "exit 0\n")
    rows = "".join(f"321_{i}|FAILED|node1\\n" for i in range(4))
    stand_in(bin_dir, "sacct", f'printf "JobID|State|NodeList\\n{rows}"\n')
    stand_in(bin_dir, "squeue", 'if [ "$3" = 321 ]; then echo 321_2; fi\n')  # task 2 still pending
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    argv = ["sweep", str(sweep_file(tmp_path)), "--backend", "slurm", "--out", str(tmp_path / "out")]
    argv += ["--slurm", "poll_s=0.01", "--no-progress"]
    assert main(argv) == 1  # submitted; every task ended FAILED
    last = json.loads((tmp_path / "out" / "tiny" / "slurm" / "last_array.json").read_text())
    assert last["array"] == "321" and len(last["points"]) == 4
    capsys.readouterr()
    assert main(argv) == 2
    assert (
        "Job array 321 of this sweep is still queued or running (squeue -j 321); wait for it to end, "
        "or stop it with scancel 321, then run the same command again." in capsys.readouterr().err
    )
