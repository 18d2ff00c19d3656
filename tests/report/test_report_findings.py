"""Reports that say what was found: the finding sentence at the top of the page and of the console,
key numbers with intervals over documents, the command that trains the control, a reproduce command
into a fresh folder, written labels, one document-numbering convention, and the reference file."""

import html
import json
import shlex
from pathlib import Path

import h5py
import numpy as np
import pytest

from arprobe.cli.run import split_arguments
from arprobe.probes.registry import Registry
from arprobe.probes.runner import write_report
from arprobe.report.pages import LABELS, headline_value, humanize, options_text
from arprobe.report.summary import console_lines, key_numbers, reproduce_command, run_summary
from arprobe.science.finding import NO_CONTROL, control_finding
from arprobe.science.recovery import online_loss, recovery_scores
from arprobe.science.reference import DEFAULT_ONLINE_LOSS, DEFAULT_RS3, DEFAULT_SEEDS, DEFAULT_SOURCE
from arprobe.science.stats import mean_interval, paired_difference
from arprobe.storage import RunStore
from arprobe.trainer.config import load_config
from tests.store_factory import make_store

T, E = 4, 3
REPO = Path(__file__).resolve().parents[2]


def losses(seed: int, shift: float = 0.0) -> np.ndarray:
    """[T*E+1, T] losses that fall when a document trains and rise after: RS is defined."""
    rng = np.random.default_rng(seed)
    loss = np.full((T * E + 1, T), 5.0)
    doc = np.tile(np.arange(T), E)
    for k in range(1, T * E + 1):
        loss[k] = loss[k - 1] + 0.3 + 0.1 * rng.random(T)
        loss[k, doc[k - 1]] = 1.0 + shift + 0.2 * rng.random()
    return loss


def run_with(tmp_path: Path, control: bool) -> Path:
    run = make_store(tmp_path / "runs" / "r", loss_eval=losses(0), schedule_doc=np.tile(np.arange(T), E))
    if control:
        make_store(
            run / "control",
            loss_eval=losses(1, shift=0.5),
            schedule_doc=np.tile(np.arange(T), E),
            config={"schedule": {"order": "shuffle"}},
        )
    return run


def parse_command(command: str):
    """The RunConfig the printed `arprobe run ...` command builds (as the CLI parses it)."""
    words = shlex.split(command)
    assert words[:2] == ["arprobe", "run"]
    config_path, overrides = split_arguments(words[2:])
    return load_config(config_path, overrides)


# --- the finding ----------------------------------------------------------------------------------


def test_without_a_control_the_finding_says_no_verdict_and_gives_the_command_that_trains_it(tmp_path):
    run = run_with(tmp_path, control=False)
    with RunStore(run / "run.h5") as store:
        summary = run_summary(store)
        rs = recovery_scores(store.eval_matrix(), store.schedule().doc)
    assert (
        summary["finding"]
        == f"No verdict without the matched control (RS({E - 1}) {rs[-1]:.2f} on its own). " + NO_CONTROL
    )
    command = summary["control_command"]
    cfg = parse_command(command)
    assert cfg.control == "shuffle" and cfg.data.n_docs == T and cfg.schedule.epochs == E
    assert cfg.run_dir == run.parent / "r-with-control" and not cfg.run_dir.exists()
    lines = console_lines(summary)
    assert lines[0] == f"finding: {summary['finding']}"
    assert lines[-1] == f"  {command}"
    assert not any("run − control" in line for line in lines)

    write_report([RunStore(run / "run.h5")], run / "report", [])
    page = (run / "report" / "index.html").read_text()
    finding = f"<b>Finding:</b> {html.escape(summary['finding'])}"
    assert page.index(finding) < page.index("<nav>") < page.index("<h2 id='summary'>")  # the top
    assert html.escape(command) in page


def test_with_a_control_the_finding_pairs_the_run_with_it_and_the_numbers_carry_intervals(tmp_path):
    run = run_with(tmp_path, control=True)
    with RunStore(run / "run.h5") as store, RunStore(run / "control" / "run.h5") as control:
        summary = run_summary(store)
        keys = key_numbers(store)
        mine = [(s.eval_matrix(), s.schedule()) for s in (store, control)]
    (m, ms), (c, cs) = mine
    rs, crs = recovery_scores(m, ms.doc), recovery_scores(c, cs.doc)
    ol = online_loss(m, ms.doc, ms.epoch).mean_after_first_epoch
    col = online_loss(c, cs.doc, cs.epoch).mean_after_first_epoch
    assert summary["finding"] == control_finding(np.round(rs, 4), ol, np.round(crs, 4), col, "cyclic")
    assert "control_command" not in summary

    # online loss: a t interval over the documents' mean online loss in epochs 2..E, paired by document
    by_doc = [m[np.arange(T, T * E), ms.doc[T:]].reshape(E - 1, T).mean(axis=0) for m, ms in mine]
    expected = mean_interval(by_doc[0])
    assert keys["online_loss"]["value"] == pytest.approx(ol)
    assert (keys["online_loss"]["low"], keys["online_loss"]["high"]) == pytest.approx(
        (expected.low, expected.high)
    )
    diff = paired_difference(by_doc[1], by_doc[0])
    assert keys["online_loss_difference"]["value"] == pytest.approx(ol - col)
    assert keys["online_loss_difference"]["high"] == pytest.approx(diff.high)
    # RS: the document bootstrap's interval holds the score, at the epoch the finding compares
    n = keys["recovery_score"]["epoch"]
    assert n == E - 1 and keys["recovery_score"]["value"] == pytest.approx(rs[-1])
    assert keys["recovery_score"]["low"] <= rs[-1] <= keys["recovery_score"]["high"]
    assert keys["recovery_score_difference"]["value"] == pytest.approx(rs[-1] - crs[-1])
    assert key_numbers(RunStore(run / "run.h5")) == keys  # seeded: the same interval every time

    lines = console_lines(summary)
    assert lines[0] == f"finding: {summary['finding']}"
    rs_line = next(line for line in lines if line.strip().startswith(f"RS({n})"))
    assert f"{rs[-1]:.3f} [" in rs_line and "control" in rs_line and "run − control" in rs_line
    assert "intervals over this run's documents" in lines[-1]
    assert len(lines) == 4  # the finding, two key numbers, what the intervals are: not 70 numbers


# --- reproduce into a fresh folder ----------------------------------------------------------------


def test_the_reproduce_command_trains_into_a_fresh_folder_and_omits_empty_values(tmp_path):
    run = run_with(tmp_path, control=False)
    with RunStore(run / "run.h5") as store:
        stored = store.config
        command = run_summary(store)["reproduce"]
    assert "--name ''" not in command and "''" not in command
    cfg = parse_command(command)
    assert cfg.run_dir == run.parent / "r-reproduced" and not cfg.run_dir.exists()
    assert cfg.data.n_docs == T and cfg.schedule.epochs == E and cfg.seed == stored["seed"]
    (run.parent / "r-reproduced").mkdir()  # taken: the next free name
    again = parse_command(reproduce_command(stored, run))
    assert again.run_dir == run.parent / "r-reproduced-2" and not again.run_dir.exists()
    # a config with an empty name (the run took its derived name) gives no --name at all
    words = shlex.split(reproduce_command({**stored, "name": ""}))
    assert "--name" not in words


# --- the reference ---------------------------------------------------------------------------------


def test_the_default_run_reference_cites_a_file_the_repository_has_and_its_numbers():
    path = REPO / DEFAULT_SOURCE
    assert path.is_file()
    points = {p["options"]["schedule.order"]: p for p in json.loads(path.read_text())["points"]}
    for order in ("cyclic", "shuffle"):
        p = points[order]
        assert p["seeds"] == DEFAULT_SEEDS and p["final_recovery_score"]["epoch"] == 3
        assert DEFAULT_RS3[order] == pytest.approx(p["final_recovery_score"]["per_seed"], abs=5e-7)
        assert DEFAULT_ONLINE_LOSS[order] == pytest.approx(p["online_loss"]["per_seed"], abs=5e-7)


# --- labels and the document convention ------------------------------------------------------------


def test_every_built_in_headline_key_has_a_written_label():
    registry = Registry()
    keys = {k for name in registry.names() for k in registry.load(name).headline_keys}
    assert keys - set(LABELS) == set()
    assert (
        humanize("b_since_trained")
        == "Documents since its own training at the largest neighbour recovery (b)"
    )
    assert humanize("pc_period_episodes") == "Period of PC 1, 2, 3 (episodes)"
    # a plugin's key: its words, with the unit in brackets and abbreviations spelled out
    assert humanize("shift_avg_width_episodes") == "Shift average width (episodes)"
    assert humanize("doc_gap_per_epoch") == "Document gap, per epoch"


def test_documents_are_named_one_based_in_words():
    assert headline_value("doc", 0) == "document 1 (doc = 0, 0-based)"
    assert headline_value("doc", 4) == "document 5 (doc = 4, 0-based)"
    assert headline_value("episode", 0) == "0"  # only the document index is translated


def test_the_toy_models_options_show_the_run_values_it_used(tmp_path):
    record = {
        "options": {"epochs": 30, "n_tasks": 25, "seed": 0},
        "result": {"options_from_run": {"epochs": 4, "n_tasks": 10}},
    }
    assert options_text(record) == "options: epochs=4 (the run's), n_tasks=10 (the run's), seed=0 · "
    assert options_text({"options": {"epochs": 30}}) == "options: epochs=30 · "  # no run: as given
    assert options_text({"options": {"weights": ""}}) == "options: weights=auto · "  # chosen from the run


def test_the_reference_names_the_optimizer_as_such():
    from arprobe.science.reference import paper_reference
    from arprobe.trainer.config import RunConfig

    assert "optimizer 'adam' (paper 'sgd')" in paper_reference(RunConfig().to_dict())["differs"]


def test_a_sweep_over_the_order_states_the_paired_online_loss_difference():
    from arprobe.report.pages import sweep_finding

    summary = json.loads((REPO / DEFAULT_SOURCE).read_text())  # the default run's 3-seed sweep
    (row,) = summary["table1"]["rows"]
    d = row["differences"]["shuffle"]
    assert sweep_finding(summary) == (
        f"online loss shuffle − cyclic {d['mean']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] (n = 3) "
        "(paired by seed, 95% t interval; positive: cyclic has the lower online loss)."
    )
    summary["table1"] = None
    assert sweep_finding(summary).startswith("No verdict: the sweep has no matched shuffled control")


def test_a_sweep_run_is_read_against_its_sibling_control_and_the_control_says_what_it_is(tmp_path):
    doc = np.tile(np.arange(T), E)
    runs = tmp_path / "sweep" / "runs"
    make_store(runs / "order-cyclic_s3", loss_eval=losses(0), schedule_doc=doc, seed=3)
    make_store(
        runs / "order-cyclic_control-shuffle_s3",
        loss_eval=losses(1, shift=0.5),
        schedule_doc=doc,
        seed=3,
        config={"schedule": {"order": "shuffle"}},
    )
    with RunStore(runs / "order-cyclic_s3" / "run.h5") as store:
        summary = run_summary(store)
    expected = []
    for name in ("order-cyclic_s3", "order-cyclic_control-shuffle_s3"):
        with RunStore(runs / name / "run.h5") as s:
            m, sched = s.eval_matrix(), s.schedule()
            ol = online_loss(m, sched.doc, sched.epoch).mean_after_first_epoch
            expected += [np.round(recovery_scores(m, sched.doc), 4), ol]
    assert summary["finding"] == control_finding(*expected, "cyclic")
    assert " cyclic vs " in summary["finding"] and "control_command" not in summary
    assert "run − control" in "\n".join(console_lines(summary))
    with RunStore(runs / "order-cyclic_control-shuffle_s3" / "run.h5") as control:
        theirs = run_summary(control)
    assert theirs["finding"].startswith("A shuffled order: this run is itself a control (RS(2) ")
    assert "control_command" not in theirs


def test_analyze_prints_a_status_line_per_probe_and_numbers_only_for_probes_named(capsys):
    from arprobe.cli.analyze import OutcomePrinter
    from arprobe.probes.runner import Outcome

    outcome = Outcome("forgetting", "ok", headline={"bwt_mean": -0.03, "plasticity_mean": 1.2}, seconds=1.0)
    OutcomePrinter(None)(outcome)  # every probe: the numbers are in the report
    assert capsys.readouterr().out.splitlines() == [f"  {'forgetting':<28} {'ok':<8}    1.0 s"]
    OutcomePrinter(["forgetting"])(outcome)  # asked for by name: its numbers too
    assert capsys.readouterr().out.splitlines()[1:] == ["      bwt_mean: -0.03", "      plasticity_mean: 1.2"]


def test_the_default_runs_reference_says_when_the_run_read_another_pythons_documents(tmp_path):
    """The embedded documents are the running Python's own topics: a default run on another Python
    keeps the reference numbers, and its summary says they were measured on other documents."""
    T10, E4 = 10, 4
    doc = np.tile(np.arange(T10), E4)
    rng = np.random.default_rng(0)
    run = make_store(
        tmp_path / "run",
        loss_eval=3 + rng.random((T10 * E4 + 1, T10)),
        schedule_doc=doc,
        steps_per_doc=10,
        context_length=64,
    )
    sources = {}
    for data in (
        "pydoc_data.topics (Python 3.11.7, 79 topics)",
        "pydoc_data.topics (Python 3.13.1, 80 topics)",
    ):
        with h5py.File(run / "run.h5", "r+") as h5:
            h5["model"].attrs["info"] = json.dumps({"kind": "hand-made", "data": data})
        with RunStore(run / "run.h5") as store:
            sources[data] = run_summary(store)["reference"]["source"]
    measured, other = sources.values()
    assert (
        measured.startswith("arprobe's own measurement of its default run")
        and "this run read" not in measured
    )
    assert other == measured + (
        "; it read pydoc_data.topics (Python 3.11.7, 79 topics) and this run read pydoc_data.topics "
        "(Python 3.13.1, 80 topics), other documents, so they are not a like-for-like reference for this run"
    )
