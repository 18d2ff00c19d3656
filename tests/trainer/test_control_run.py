"""The matched shuffled control (`arprobe run --control shuffle`): same seed, documents and
initialisation in a shuffled order, trained next to the run, and the one-line finding."""

import html
import json
import re
import shutil

import h5py
import numpy as np
import pytest

from arprobe.science.finding import NO_CONTROL, control_finding
from arprobe.science.recovery import online_loss, recovery_scores
from arprobe.storage import RunStore
from tests.conftest import TINY
from tests.helpers import cli, one_line_error

FLAGS = [x for k, v in {**TINY, "epochs": 3}.items() for x in (f"--{k}", v)]


def numbers(path):
    with RunStore(path) as store:
        m, s = store.eval_matrix(), store.schedule()
        return recovery_scores(m, s.doc), online_loss(m, s.doc, s.epoch).mean_after_first_epoch


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    out = tmp_path_factory.mktemp("control")
    lean = ["--weights_every", 0, "--activations_every", 0, "--grads_at", "never"]
    result = cli("run", "--out", out, "--name", "r", "--no-progress", "--control", "shuffle", *FLAGS, *lean,
                 timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "r", result.stdout


def test_the_control_is_the_run_in_a_shuffled_order(controlled):
    run_dir, _ = controlled
    with RunStore(run_dir / "run.h5") as run, RunStore(run_dir / "control" / "run.h5") as control:
        assert run.config["control"] == "shuffle" and control.config["control"] == ""
        assert control.config["schedule"]["order"] == "shuffle"
        assert control.config["seed"] == run.config["seed"]
        # same documents, same initial weights: row 0 of the eval matrices is the same computation
        np.testing.assert_array_equal(run.docs()[0], control.docs()[0])
        np.testing.assert_array_equal(run.eval_matrix()[0], control.eval_matrix()[0])
        T = TINY["n_docs"]
        doc = control.schedule().doc
        assert sorted(doc[:T]) == list(range(T)) and list(doc) != list(run.schedule().doc)
        assert control.status == "complete" and control.completed_episodes == 3 * T


def test_the_finding_states_both_numbers_and_no_verdict(controlled):
    run_dir, stdout = controlled
    (rs, ol), (crs, col) = numbers(run_dir / "run.h5"), numbers(run_dir / "control" / "run.h5")
    line = next(x for x in stdout.splitlines() if x.startswith("finding: "))
    assert line == f"finding: {control_finding(rs, ol, crs, col)}"
    assert re.fullmatch(
        r"finding: RS\(2\) \d\.\d\d cyclic vs \d\.\d\d shuffled control, online loss \d+\.\d\d vs \d+\.\d\d "
        r"\(one seed, no interval: .*\)",
        line,
    ), line
    assert f"RS(2) {rs[1]:.2f} cyclic vs {crs[1]:.2f}" in line
    assert f"online loss {ol:.2f} vs {col:.2f}" in line


def test_resume_trains_a_missing_control(controlled, tmp_path):
    run_dir, _ = controlled
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "control")
    result = cli("run", "--resume", copy, "--no-progress", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "finding: RS(2)" in result.stdout
    with h5py.File(copy / "control" / "run.h5", "r") as a, h5py.File(run_dir / "control/run.h5", "r") as b:
        np.testing.assert_array_equal(a["loss/eval"][:], b["loss/eval"][:])  # the same run again, bit for bit
    again = cli("run", "--resume", copy, "--no-progress")
    assert one_line_error(again).endswith("is already complete; nothing to resume.")


def test_without_a_control_the_run_says_rs_alone_is_not_evidence(tmp_path):
    result = cli("run", "--out", tmp_path, "--no-progress", *FLAGS, "--epochs", 2, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    first = result.stdout.splitlines()[0]  # the finding comes first, then how to train the control
    assert first.startswith("finding: No verdict without the matched control") and first.endswith(NO_CONTROL)
    command = result.stdout.split("(a fresh folder):\n")[1].splitlines()[0].strip()
    assert command.startswith("arprobe run ") and "--control shuffle" in command
    assert "not evidence" in NO_CONTROL and "--control shuffle" in NO_CONTROL


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--control", "shuffled"], "control must be '' or 'shuffle'; got 'shuffled'."),
        (["--control", "shuffle", "--order", "shuffle"], "is the matched control of a cyclic or partial"),
    ],
)
def test_a_control_that_cannot_be_matched_is_refused(tmp_path, flags, message):
    result = cli("run", "--out", tmp_path, "--dry-run", *FLAGS, *flags)
    assert message in one_line_error(result)
    assert not any(tmp_path.iterdir())


def test_control_finding_by_hand():
    nan = float("nan")
    text = control_finding([0.1, 0.4123, nan], 3.456, [0.05, 0.0612, 0.2], 4.061)
    assert text.startswith("RS(2) 0.41 cyclic vs 0.06 shuffled control, online loss 3.46 vs 4.06 (one seed")
    assert control_finding([nan], nan, [nan], nan).startswith("RS undefined in the run or its control")


def test_the_report_opens_with_the_finding_and_the_controls_numbers(controlled):
    run_dir, stdout = controlled
    result = cli("analyze", run_dir, "--probe", "recovery_score", "--no-progress", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (summary,) = json.loads((run_dir / "report" / "summary.json").read_text())["runs"]
    finding = next(x for x in stdout.splitlines() if x.startswith("finding: "))[len("finding: ") :]
    assert summary["finding"] == finding
    crs, col = numbers(run_dir / "control" / "run.h5")
    expected = [None if np.isnan(v) else pytest.approx(round(float(v), 4)) for v in crs]  # None: undefined
    assert summary["control_numbers"]["recovery_score"] == expected
    assert summary["control_numbers"]["online_loss_after_epoch_1"] == pytest.approx(col)
    page = (run_dir / "report" / "index.html").read_text()
    assert f"<b>Finding:</b> {html.escape(finding)}" in page and "matched shuffled control" in page
    assert page.index("Finding:") < page.index("recovery score per epoch")  # at the top


def test_a_report_without_a_control_says_rs_alone_is_not_evidence(tiny_run):
    from arprobe.report.summary import run_summary

    with RunStore(tiny_run / "run.h5") as store:
        summary = run_summary(store)
    assert summary["finding"].startswith("No verdict without the matched control")
    assert summary["finding"].endswith(NO_CONTROL) and "control_numbers" not in summary
    assert "--control shuffle" in summary["control_command"]


def test_overwriting_a_run_trains_its_control_anew(controlled, tmp_path):
    run_dir, _ = controlled
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    with h5py.File(copy / "control" / "run.h5", "r+") as h5:
        h5["loss/eval"][0, 0] = 123.0  # a mark the old control carries
    result = cli("run", "--out", tmp_path, "--name", "r", "--no-progress", "--control", "shuffle", *FLAGS,
                 "--weights_every", 0, "--activations_every", 0, "--grads_at", "never", "--overwrite",
                 timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with h5py.File(copy / "control" / "run.h5", "r") as a, h5py.File(run_dir / "control/run.h5", "r") as b:
        np.testing.assert_array_equal(a["loss/eval"][:], b["loss/eval"][:])  # retrained: the mark is gone
