"""Each probe in `analyze` runs isolated: a hostile or broken third-party probe fails alone, with its
traceback in the report, and neither stops the others nor touches the store.

The registry is built per test (``Registry(discover=False)`` + ``register``); the probes below are
module-level classes, so the probe processes (forked from a clean server) import them by name.
"""

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from arprobe.probes.base import Probe
from arprobe.probes.registry import Registry
from arprobe.probes.runner import ProbeRef, write_report
from arprobe.storage import RunStore
from tests.helpers import install_dist_info
from tests.store_factory import make_store

T, E = 3, 3


def small_run(tmp_path):
    doc = np.tile(np.arange(T), E)
    rng = np.random.default_rng(0)
    loss_eval = 3.0 + rng.random((T * E + 1, T))
    return make_store(tmp_path / "runs" / "r", loss_eval=loss_eval, schedule_doc=doc)


class ConstructorRaises(Probe):
    description = "Raises in __init__."

    def __init__(self):
        raise ValueError("no constructor for you")


class Recurses(Probe):
    description = "Recurses without end."

    def run(self, store, out):
        return self.run(store, out)


class BadDescription(Probe):
    description = 42

    def run(self, store, out):
        return {"x": 1.0}


class Exits(Probe):
    description = "Calls sys.exit."

    def run(self, store, out):
        sys.exit(3)


class HardExit(Probe):
    description = "Ends its process without Python's cleanup."

    def run(self, store, out):
        os._exit(7)


class ClosesStore(Probe):
    description = "Closes the store it was given."

    def run(self, store, out):
        store.close()
        return {"closed": True}


class WritesStore(Probe):
    description = "Tries to change the run."

    def run(self, store, out):
        store.h5.attrs["status"] = "failed"
        return {"wrote": True}


class Hangs(Probe):
    description = "Never returns."

    def run(self, store, out):
        while True:
            time.sleep(0.05)


class FinalLoss(Probe):
    description = "Mean loss after the last episode."
    requires = ["eval"]
    headline_keys = ["final"]

    def run(self, store, out):
        return {"final": float(store.eval_matrix()[-1].mean())}


HOSTILE = {
    "constructor_raises": ConstructorRaises,
    "recurses": Recurses,
    "bad_description": BadDescription,
    "exits": Exits,
    "hard_exit": HardExit,
    "closes_store": ClosesStore,
    "writes_store": WritesStore,
}


def registry_with(probes: dict) -> Registry:
    registry = Registry(discover=False)
    for name, cls in probes.items():
        registry.register(name, cls)
    return registry


def refs(registry: Registry, names) -> list[ProbeRef]:
    return [ProbeRef.of(n, registry.load(n)) for n in names]


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_hostile_probe_fails_alone_with_its_reason_and_traceback(tmp_path):
    run = small_run(tmp_path)
    before = digest(run / "run.h5")
    expected_final = float(RunStore(run).eval_matrix()[-1].mean())
    # final_loss after each hostile probe: it must still read the store correctly.
    probes = {**HOSTILE, "final_loss": FinalLoss}
    # Handed to the runner directly: the registry already refuses a description that is not text
    # when it loads a plugin (tests/probes/test_probe_plugins.py); the runner's own check is the last defence.
    direct = [ProbeRef.of(name, cls) for name, cls in probes.items()]
    report = tmp_path / "report"
    with RunStore(run) as store:
        outcomes = {o.probe: o for o in write_report([store], report, direct, timeout=60)}

    assert outcomes["final_loss"].status == "ok"
    assert outcomes["final_loss"].headline == {"final": pytest.approx(expected_final)}
    reasons = {name: outcomes[name].reason for name in HOSTILE}
    assert reasons["constructor_raises"] == (
        "Probe 'constructor_raises' could not be constructed: ValueError: no constructor for you"
    )
    assert reasons["recurses"].startswith("RecursionError: maximum recursion depth exceeded")
    assert reasons["bad_description"] == (
        "Probe 'bad_description' has a description that is a int, not a string; a description is one "
        "line of text."
    )
    assert reasons["exits"] == "Probe 'exits' called sys.exit(3) instead of returning a result."
    assert reasons["hard_exit"] == (
        "Probe 'hard_exit' ended its process (exited with code 7) before returning a result."
    )
    # Closing its own handle is harmless (the next probe reopens the store); writing is refused.
    assert outcomes["closes_store"].status == "ok"
    assert outcomes["writes_store"].status == "failed"
    assert digest(run / "run.h5") == before  # nothing a probe did reached the file
    for name in ("constructor_raises", "recurses", "exits", "writes_store"):
        record = json.loads((report / name / "result.json").read_text())
        assert record["status"] == "failed" and record["traceback"].startswith("Traceback"), name
    recursion = json.loads((report / "recurses/result.json").read_text())["traceback"]
    assert "RecursionError" in recursion and len(recursion) <= 20_100  # kept short
    index = (report / "index.html").read_text()
    assert index.count("<pre class='trace'>") == 4
    assert "no constructor for you" in index and "called sys.exit(3)" in index
    with RunStore(run) as store:
        assert store.status == "complete"


def test_a_probe_that_never_returns_is_stopped_at_the_timeout_and_the_next_one_runs(tmp_path):
    run = small_run(tmp_path)
    registry = registry_with({"hangs": Hangs, "final_loss": FinalLoss})
    started = time.perf_counter()
    with RunStore(run) as store:
        outcomes = write_report(
            [store], tmp_path / "report", refs(registry, ["hangs", "final_loss"]), timeout=3
        )
    elapsed = time.perf_counter() - started
    by_name = {o.probe: o for o in outcomes}
    assert by_name["hangs"].status == "failed"
    assert by_name["hangs"].reason == (
        "Probe 'hangs' did not finish within 3 s and was stopped; raise --probe-timeout if it needs longer."
    )
    assert 3 <= by_name["hangs"].seconds < 20
    assert by_name["final_loss"].status == "ok"
    assert elapsed < 60


def test_a_probe_class_defined_in_a_function_still_runs_isolated(tmp_path):
    # Not importable by name, so it cannot go through the fork server: it is forked directly.
    class Local(Probe):
        description = "A class the probe process cannot import."

        def run(self, store, out):
            os._exit(5)

    run = small_run(tmp_path)
    with RunStore(run) as store:
        (outcome,) = write_report([store], tmp_path / "report", [ProbeRef.of("local", Local)], timeout=60)
    assert outcome.reason == "Probe 'local' ended its process (exited with code 5) before returning a result."


PLUGIN_MODULE = """
import sys, time
from arprobe.probes.base import Probe

class Hang(Probe):
    description = "Never returns."
    def run(self, store, out):
        while True:
            time.sleep(0.05)

class Exit(Probe):
    description = "Exits."
    def run(self, store, out):
        sys.exit(4)

class Ctor(Probe):
    description = "Constructor raises."
    def __init__(self):
        raise RuntimeError("ctor")
"""


def test_cli_hostile_plugins_fail_alone_and_the_built_ins_still_run(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "hostile_probes.py").write_text(PLUGIN_MODULE)
    install_dist_info(
        site,
        "hostile-probes",
        "0.1",
        {
            "zz_hang": "hostile_probes:Hang",
            "zz_exit": "hostile_probes:Exit",
            "zz_ctor": "hostile_probes:Ctor",
        },
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    run = small_run(tmp_path)
    args = ["--probe", "zz_hang,zz_exit,zz_ctor,recovery_score", "--probe-timeout", "5", "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-m", "arprobe", "analyze", str(run), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "zz_hang                      FAILED   Probe 'zz_hang' did not finish within 5 s" in result.stderr
    assert "Probe 'zz_exit' called sys.exit(4) instead of returning a result." in result.stderr
    assert "Probe 'zz_ctor' could not be constructed: RuntimeError: ctor" in result.stderr
    record = json.loads((run / "report/recovery_score/result.json").read_text())
    assert record["status"] == "ok"
    # Reading order: built-ins first, third-party probes after them by name.
    index = (run / "report/index.html").read_text()
    assert index.index("id='recovery_score'") < index.index("id='zz_ctor'") < index.index("id='zz_exit'")


def test_cli_probe_timeout_must_be_positive(tmp_path, capsys):
    from arprobe.cli.main import main

    run = small_run(tmp_path)
    code = main(["analyze", str(run), "--probe", "recovery_score", "--probe-timeout", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["arprobe analyze: error: --probe-timeout must be a positive number of seconds, got 0."]
