"""docs/examples/quickstart.ipynb runs top to bottom: its code cells are executed in order in one
namespace (as a kernel would, without one), in a fresh folder, and what it shows is checked."""

import json

import numpy as np

from tests.helpers import REPO

NOTEBOOK = REPO / "docs" / "examples" / "quickstart.ipynb"


def code_cells(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def test_the_quickstart_notebook_runs_and_shows_the_finding(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": "__main__"}
    cells = code_cells(NOTEBOOK)
    for i, source in enumerate(cells):
        exec(compile(source, f"{NOTEBOOK.name}, code cell {i + 1}", "exec"), namespace)  # noqa: S102
    run, result, watch = namespace["run"], namespace["result"], namespace["watch"]
    assert run.status == run.control.status == "complete"
    assert (tmp_path / "runs" / "quickstart" / "run.h5").is_file()
    assert (tmp_path / "runs" / "quickstart" / "control" / "run.h5").is_file()
    assert sorted(watch.curves) == ["quickstart", "quickstart-control"]
    assert [len(c) for c in watch.curves.values()] == [15, 15]  # T * E episodes each
    assert np.isclose(watch.curves["quickstart"][-1], namespace["matrix"][-1].mean())
    assert run.finding and result.finding
    difference = result.key_numbers["online_loss_difference"]
    assert difference["low"] <= difference["value"] <= difference["high"]
    assert np.isclose(difference["value"], run.online_loss - run.control.online_loss, atol=1e-6)
    assert result.recovery_score.figure.png[:8] == b"\x89PNG\r\n\x1a\n"
    kept = sorted(p.name for p in (tmp_path / "runs" / "quickstart").iterdir())
    assert kept == ["config.toml", "control", "run.h5"]
