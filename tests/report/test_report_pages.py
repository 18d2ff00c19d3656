"""The report modules: one page style and shell for the run and the sweep index,
one atomic JSON writer, and reference numbers that say where they come from."""

import json
import os

import numpy as np
import pytest

from arprobe.jsonio import write_json_atomic
from arprobe.report import pages
from arprobe.science import reference
from tests.helpers import REPO


def sweep_summary() -> dict:
    """A sweep.json with one point and no figures: enough for the sweep index."""
    point = {"label": "all runs", "options": {}, "n": 0, "seeds": [], "runs": [], "excluded": []}
    return {"title": "t", "factors": [], "grid": {}, "points": [point], "table1": None, "figures": []}


def test_run_and_sweep_index_share_one_style_and_page_shell(tmp_path):
    (tmp_path / "run").mkdir()
    run_page = pages.write_run_index(tmp_path / "run", "a run")
    sweep_page = pages.write_sweep_index(tmp_path, sweep_summary(), None)
    for page in (run_page, sweep_page):
        text = page.read_text()
        assert text.count("<style>") == 1 and f"<style>{pages.STYLE}</style>" in text
        assert f"<script>{pages.CHECK_IMAGES}</script>" in text  # the sweep page checks its figures too
        assert text.startswith("<!doctype html>") and text.endswith("</body></html>")
    assert "<h1>arprobe report: a run</h1>" in run_page.read_text()
    assert "<h1>arprobe sweep report: t</h1>" in sweep_page.read_text()


def test_a_figure_links_only_the_files_next_to_it(tmp_path):
    (tmp_path / "p").mkdir()
    for name in ("f.png", "f.csv"):
        (tmp_path / "p" / name).write_text("x")
    html = pages.figure_html(tmp_path, "f.png", "p")
    assert "<img src='p/f.png' alt='p: f.png'>" in html
    assert "<a href='p/f.png'>PNG</a> · <a href='p/f.csv'>CSV</a>" in html and "SVG" not in html


def test_the_json_writer_leaves_the_old_file_whole_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    write_json_atomic(path, {"points": [1, 2]})
    before = path.read_text()
    assert json.loads(before) == {"points": [1, 2]}

    def interrupted(src, dst):
        raise KeyboardInterrupt  # Ctrl-C between writing the new file and putting it in place

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"points": [1, 2, 3]})
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    monkeypatch.undo()
    with pytest.raises(TypeError):  # not JSON: refused before anything is written
        write_json_atomic(path, {"points": object()})
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    write_json_atomic(path, {"rs": np.array([0.5, np.nan])})
    assert json.loads(path.read_text()) == {"rs": [0.5, None]}


def test_the_default_reference_is_the_measurement_it_cites():
    """The per-seed values the default run's reference shows are those of the file it names."""
    cited = json.loads((REPO / reference.DEFAULT_SOURCE).read_text())
    assert reference.DEFAULT_DATA == cited["fixed"]["data"]  # the documents it was measured on
    points = {p["options"]["schedule.order"]: p for p in cited["points"]}
    for order in ("cyclic", "shuffle"):
        point = points[order]
        assert point["seeds"] == reference.DEFAULT_SEEDS
        assert point["final_recovery_score"]["epoch"] == 3 and point["online_loss"]["epochs"] == [2, 4]
        # the constants keep 6 decimals of the file's values
        np.testing.assert_allclose(
            reference.DEFAULT_RS3[order], point["final_recovery_score"]["per_seed"], atol=5e-7
        )
        np.testing.assert_allclose(
            reference.DEFAULT_ONLINE_LOSS[order], point["online_loss"]["per_seed"], atol=5e-7
        )
        shown = reference.default_reference(order)
        rs = point["final_recovery_score"]
        assert shown["recovery_score"].startswith(f"RS(3) {rs['mean']:.3f} ± {rs['std']:.3f} (per seed ")
        assert (
            shown["online_loss"] == f"{point['online_loss']['mean']:.3f} ± {point['online_loss']['std']:.3f}"
        )
        assert reference.DEFAULT_SOURCE in shown["source"] and "not the paper's" in shown["source"]
