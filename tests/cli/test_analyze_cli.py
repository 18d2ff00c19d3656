"""`arprobe analyze` and `arprobe probes` on hand-made stores: exit codes, one-line errors, several runs."""

import json

from arprobe.cli.main import main
from tests.helpers import BUILTINS, EVAL
from tests.store_factory import cyclic, make_store


def test_analyze_cli_unknown_probe_is_one_line_exit_2(tmp_path, capsys):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    assert main(["analyze", str(run), "--probe", "pca_weight"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "arprobe analyze: error: Unknown probe 'pca_weight'. Did you mean 'pca_weights'? Available: "
    )
    assert len(err.splitlines()) == 1


def test_analyze_cli_bad_run_path_is_one_line_exit_2(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"arprobe analyze: error: No run store at '{tmp_path / 'nowhere'}'")
        and "\n" not in err
    )


def test_analyze_cli_explicit_probe_lacking_data_exits_1(tmp_path, capsys):
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch)
    assert main(["analyze", str(run), "--probe", "recovery_score,gradient_similarity", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "recovery_score" in out and "recovery_score: [0.5]" in out
    assert "gradient_similarity          skipped  Run 'r' recorded no grads" in out
    assert (run / "report/index.html").exists()
    # all probes by default: skipping what a run lacks is normal, exit 0
    assert (
        main(["analyze", str(run), "--no-progress", "--probe", "recovery_score,loss_curves,online_loss"]) == 0
    )


def test_analyze_cli_several_runs_compares_and_reports_each(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc, epoch = cyclic(3, 2)
    runs = [
        make_store(tmp_path / f"c{s}", loss_eval=EVAL, schedule_doc=doc, schedule_epoch=epoch, seed=s)
        for s in (0, 1)
    ]
    assert main(["analyze", *map(str, runs), "--probe", "online_loss,recovery_score", "--no-progress"]) == 0
    result = json.loads((tmp_path / "report/online_loss/result.json").read_text())
    assert [len(g["runs"]) for g in result["result"]["groups"]] == [2]  # two seeds, one group
    for run in runs:
        assert json.loads((run / "report/recovery_score/result.json").read_text())["status"] == "ok"
        assert not (run / "report/online_loss").exists()


def test_probes_cli_lists_every_builtin(capsys):
    assert main(["probes"]) == 0
    out = capsys.readouterr().out
    for name in BUILTINS:
        assert f"\n{name} " in out
    assert "weights:*" in out and "grads:*" in out and "nothing (no run needed)" in out
    assert main(["probes", "pca_weights"]) == 0
    assert "detrend" in capsys.readouterr().out
