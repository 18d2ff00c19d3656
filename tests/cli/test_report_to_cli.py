"""`arprobe run --report_to ...`: a config key like any other (flag, TOML, sweep file); a bad logger
name or a missing extra ends the command with one sentence and exit 2 before anything is written;
the logged run's folder holds the TensorBoard events."""

from arprobe.cli.main import main
from arprobe.trainer import loggers
from tests.conftest import TINY

SMALL = [
    f"--{k}={v}" for k, v in {**TINY, "n_docs": 3, "epochs": 2, "steps_per_doc": 2, "threads": 1}.items()
]


def test_a_misspelt_logger_is_one_sentence_and_exit_2(tmp_path, capsys):
    code = main(["run", *SMALL, "--out", str(tmp_path), "--report_to", "tensorbord,wandb"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        "arprobe run: error: report_to names an unknown logger 'tensorbord'. Did you mean 'tensorboard'? "
        "Choose from tensorboard, wandb, mlflow (comma-separated), or leave it empty.\n"
    )
    assert not any(tmp_path.iterdir())


def test_a_missing_extra_says_which_pip_extra(tmp_path, capsys, monkeypatch):
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n))
    code = main(["run", *SMALL, "--out", str(tmp_path), "--report_to", "wandb", "--dry-run"])
    assert code == 2
    assert capsys.readouterr().err == (
        "arprobe run: error: report_to = 'wandb' needs Weights & Biases (wandb), which is not installed: "
        "pip install 'arprobe[wandb]'.\n"
    )


def test_report_to_tensorboard_from_the_command_line_writes_events(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code = main(
        ["run", *SMALL, "--out", str(tmp_path), "--name", "tb", "--report_to", "tensorboard", "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    acc = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 13))  # K * M = 6 * 2 steps
    assert [e.step for e in acc.Scalars("eval/online_loss")] == [2, 4, 6, 8, 10, 12]
