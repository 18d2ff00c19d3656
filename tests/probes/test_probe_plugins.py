"""A third-party probe package (tests/fixtures/plugin_pkg) found through the `arprobe.probes`
entry-point group, exactly as pip would install it, without touching this environment.

Installing writes a ``*.dist-info`` folder with ``entry_points.txt`` next to the package on
sys.path; importlib.metadata finds it there. The test writes that folder into a temporary
directory from the fixture's own pyproject.toml and puts it, with the package, on the
PYTHONPATH of a real `arprobe` process.
"""

import json
import os
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from tests.helpers import FIXTURES, install_dist_info
from tests.store_factory import cyclic, make_store

PLUGIN = FIXTURES / "plugin_pkg"


@pytest.fixture
def plugin_env(tmp_path):
    """Environment for a subprocess in which the fixture package is 'installed'."""
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    install_dist_info(site, project["name"], project["version"], project["entry-points"]["arprobe.probes"])
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(PLUGIN), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env, site


def arprobe(env, *args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "arprobe", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_fixture_declares_its_probe():
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["arprobe.probes"] == {"demo_final_loss": "arprobe_demo_probe:FinalLoss"}


def test_plugin_is_listed_and_runs(plugin_env, tmp_path):
    env, _ = plugin_env
    listing = arprobe(env, "probes")
    assert listing.returncode == 0, listing.stderr
    assert "demo_final_loss" in listing.stdout
    assert "Mean loss over documents after the last episode" in listing.stdout
    assert "pca_weights" in listing.stdout  # the built-ins are still there
    # third-party probes are marked with their distribution, built-ins are not
    rows: dict[str, str] = {}
    for line in listing.stdout.splitlines():
        if line[:1].strip():  # a row starts in column 0, its wrapped description continues indented
            name = line.split()[0]
            rows[name] = line
        elif line.strip():
            rows[name] += " " + line.strip()
    assert "[third-party: " in rows["demo_final_loss"]
    assert "third-party" not in rows["pca_weights"]

    doc, epoch = cyclic(3, 2)
    eval_ = np.arange(21, dtype=float).reshape(7, 3)  # last row 18, 19, 20
    run = make_store(tmp_path / "runs" / "r", loss_eval=eval_, schedule_doc=doc, schedule_epoch=epoch)
    result = arprobe(
        env, "analyze", str(run), "--probe", "demo_final_loss", "--option", "demo_final_loss.scale=2"
    )
    assert result.returncode == 0, result.stderr
    assert "final_mean_loss: 38" in result.stdout
    record = json.loads((run / "report/demo_final_loss/result.json").read_text())
    assert record["status"] == "ok" and record["options"] == {"scale": 2.0}
    assert record["result"] == {"final_mean_loss": 38.0, "final_loss": [36.0, 38.0, 40.0]}
    assert (run / "report/demo_final_loss/final_loss.png").exists()
    assert "demo_final_loss/final_loss.png" in (run / "report/index.html").read_text()


def test_a_broken_plugin_is_named_and_hides_nothing(plugin_env, tmp_path):
    env, site = plugin_env
    install_dist_info(site, "arprobe-broken", "0.0.1", {"broken_probe": "arprobe_broken_nowhere:Probe"})
    listing = arprobe(env, "probes")
    assert listing.returncode == 0  # the others work: a broken plugin is listed, not a failure
    assert "demo_final_loss" in listing.stdout and "loss_curves" in listing.stdout
    assert "BROKEN" in listing.stdout and ", 1 broken (listed above)" in listing.stdout
    assert (
        "Could not load probe plugin 'broken_probe' (arprobe_broken_nowhere:Probe, from arprobe-broken): "
        "ModuleNotFoundError"
    ) in listing.stderr
    assert "Traceback" not in listing.stderr

    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=np.ones((7, 3)), schedule_doc=doc, schedule_epoch=epoch)
    result = arprobe(env, "analyze", str(run), "--probe", "broken_probe,recovery_score,demo_final_loss")
    assert result.returncode == 1  # the broken plugin failed ...
    assert "broken_probe" in result.stderr and "Traceback" not in result.stderr
    for name in ("recovery_score", "demo_final_loss"):  # ... and the others still ran
        assert json.loads((run / f"report/{name}/result.json").read_text())["status"] in ("ok", "skipped")
    assert json.loads((run / "report/broken_probe/result.json").read_text())["status"] == "failed"


def test_probe_names_that_could_be_paths_are_refused_and_named_as_broken(plugin_env, tmp_path):
    env, site = plugin_env
    install_dist_info(site, "arprobe-evil", "0.0.1", {"..": "os:path", "../../x": "os:path", "Up": "os:path"})
    listing = arprobe(env, "probes")
    assert listing.returncode == 0 and "loss_curves" in listing.stdout
    assert ", 3 broken (listed above)" in listing.stdout  # counted like a plugin that fails to import
    for name in ("..", "../../x", "Up"):
        refused = f"Probe name {name!r} (from arprobe-evil) is refused: probe names must be lower-case"
        assert listing.stderr.count(refused) == 1  # warned about once, not twice
        (row,) = [line for line in listing.stdout.splitlines() if line.startswith(f"{name} ")]
        assert "BROKEN: " + refused[:40] in row
    doc, epoch = cyclic(3, 2)
    run = make_store(
        tmp_path / "runs" / "r", loss_eval=np.ones((7, 3)), schedule_doc=doc, schedule_epoch=epoch
    )
    result = arprobe(env, "analyze", str(run), "--probe", "..")
    assert result.returncode == 2 and "Unknown probe '..'" in result.stderr
    assert run.exists() and (run / "run.h5").exists()
    # Every probe: the refused plugins are named as failed and the analysis exits 1, as for a plugin
    # that fails to import; none gets a report folder (its name would climb out of the report).
    result = arprobe(env, "analyze", str(run))
    assert result.returncode == 1, result.stderr[-2000:]
    for name in ("..", "../../x", "Up"):
        assert f"  {name!r:<28} FAILED   Probe name {name!r} (from arprobe-evil) is refused" in result.stderr
    assert json.loads((run / "report/demo_final_loss/result.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r"]  # nothing beside the run
    assert not (run / "report" / "Up").exists()


BAD_DESCRIPTION = """
from arprobe.probes.base import Probe


class Numbered(Probe):
    name = "numbered"
    description = 42  # not a string
    requires = ["eval"]

    def run(self, store, out):
        return {}
"""


def test_a_plugin_whose_description_is_not_text_is_broken(plugin_env, tmp_path):
    env, site = plugin_env
    (site / "arprobe_numbered.py").write_text(BAD_DESCRIPTION)
    install_dist_info(site, "arprobe-numbered", "0.0.1", {"numbered": "arprobe_numbered:Numbered"})
    reason = (
        "Could not load probe plugin 'numbered' (arprobe_numbered:Numbered, from arprobe-numbered): "
        "its description is a int, not a one-line string."
    )
    listing = arprobe(env, "probes")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr[-2000:]
    assert ", 1 broken (listed above)" in listing.stdout and f"warning: {reason}" in listing.stderr
    doc, epoch = cyclic(3, 2)
    run = make_store(tmp_path / "r", loss_eval=np.ones((7, 3)), schedule_doc=doc, schedule_epoch=epoch)
    result = arprobe(env, "analyze", str(run), "--probe", "numbered,demo_final_loss")
    assert result.returncode == 1 and reason in result.stderr and "Traceback" not in result.stderr
    assert json.loads((run / "report/numbered/result.json").read_text())["status"] == "failed"
    assert json.loads((run / "report/demo_final_loss/result.json").read_text())["status"] == "ok"
