"""The run report: summary header, reading order, figures with the run's
identity, SVG and CSV next to every figure, bars from 0, the detrended helix and its offline 3-D
view, overlaid runs with mean ± std, silent bars, --help-config, and the page in a real browser."""

import csv
import json
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from arprobe.probes.base import Probe
from arprobe.probes.registry import Registry
from arprobe.probes.runner import ProbeRef, run_probe, write_report
from arprobe.report.guide import READING_ORDER
from arprobe.report.summary import reproduce_command
from arprobe.science.recovery import online_loss, recovery_scores
from arprobe.science.reference import paper_reference
from arprobe.storage import RunStore
from arprobe.trainer.config import RunConfig, describe_keys, load_config
from tests.helpers import REPO
from tests.store_factory import make_store
from tests.tolerances import ulps

T, E = 3, 3


def loss_of(seed: int, shift: float = 0.0) -> np.ndarray:
    return 3.0 + shift + np.random.default_rng(seed).random((T * E + 1, T))


def small_run(path, seed=0, order="cyclic", shift=0.0):
    doc = np.tile(np.arange(T), E)
    return make_store(
        path,
        loss_eval=loss_of(seed, shift),
        schedule_doc=doc,
        seed=seed,
        config={"schedule": {"order": order}},
    )


def builtin_refs(names) -> list[ProbeRef]:
    registry = Registry()
    return [ProbeRef.of(n, registry.load(n)) for n in names]


def read_csv(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


# --- the summary header --------------------------------------------------------------------------


def test_summary_header_names_the_run_its_numbers_and_how_to_reproduce_it(tmp_path):
    run = small_run(tmp_path / "runs" / "r")
    report = tmp_path / "report"
    with RunStore(run) as store:
        write_report([store], report, builtin_refs(["recovery_score"]))
        schedule = store.schedule()
        rs = recovery_scores(store.eval_matrix(), schedule.doc)
        ol = online_loss(store.eval_matrix(), schedule.doc, schedule.epoch).mean_after_first_epoch
    (summary,) = json.loads((report / "summary.json").read_text())["runs"]
    ident = summary["identity"]
    assert ident["T / C / M / E"] == "3 / 4 / 2 / 3"
    assert ident["order"] == "cyclic" and ident["optimizer"] == "adam lr 0.001" and ident["seed"] == "0"
    assert summary["status"] == "complete, 9 of 9 episodes"
    assert summary["numbers"]["recovery_score"] == pytest.approx(np.round(rs, 4).tolist())
    assert summary["numbers"]["online_loss_after_epoch_1"] == pytest.approx(ol)
    assert "n_docs 3 (paper 100)" in summary["reference"]["differs"]
    assert summary["reproduce"].startswith("arprobe run ")
    assert "--data.n_docs 3" in summary["reproduce"] and "--schedule.epochs 3" in summary["reproduce"]
    assert set(summary["versions"]) == {
        "arprobe (that wrote the run)",
        "arprobe (this analysis)",
        "torch (this analysis)",
    }
    index = (report / "index.html").read_text()
    assert "<h2 id='summary'>Summary</h2>" in index
    assert "No paper setting matches this run" in index
    assert f"RS(1) {rs[0]:.3g}" in index and "Reproduce this run" in index


def table1_config(model: str, order: str) -> dict:
    cfg = RunConfig()
    cfg.data.n_docs, cfg.data.context_length, cfg.data.source = 100, 512, "abisee/cnn_dailymail"
    cfg.schedule.steps_per_doc, cfg.schedule.epochs, cfg.schedule.order = 10, 5, order
    cfg.optim.name, cfg.optim.lr = "sgd", 0.001
    cfg.model.name, cfg.model.init = model, "pretrained"
    return cfg.to_dict()


def test_the_papers_value_is_shown_only_where_the_setting_matches():
    ref = paper_reference(table1_config("EleutherAI/pythia-1b", "cyclic"))
    assert ref["online_loss"] == "1.03 ± 0.03" and ref["differs"] == []
    assert ref["source"] == "paper Table 1, Pythia-1B, cyclic (mean ± std over 10 seeds)"
    assert paper_reference(table1_config("EleutherAI/pythia-410m", "shuffle"))["online_loss"] == "1.34 ± 0.02"
    other = table1_config("EleutherAI/pythia-1b", "cyclic")
    other["schedule"]["epochs"] = 4
    ref = paper_reference(other)
    assert "online_loss" not in ref and ref["differs"] == ["epochs 4 (paper 5)"]
    default = paper_reference(RunConfig().to_dict())
    assert default["recovery_score"].startswith("RS(3) 0.384 ± 0.032")
    assert "not the paper's" in default["source"]
    assert "default_run.json" in default["source"] and "prints no recovery score" in default["paper"]
    # another Python's documentation topics are other documents: the numbers stay, labelled so
    same = paper_reference(RunConfig().to_dict(), "pydoc_data.topics (Python 3.11.7, 79 topics)")
    assert same == default
    elsewhere = paper_reference(RunConfig().to_dict(), "pydoc_data.topics (Python 3.12.3, 81 topics)")
    assert elsewhere["recovery_score"] == default["recovery_score"]
    assert elsewhere["source"] == default["source"] + (
        "; it read pydoc_data.topics (Python 3.11.7, 79 topics) and this run read pydoc_data.topics "
        "(Python 3.12.3, 81 topics), other documents, so they are not a like-for-like reference for this run"
    )


def test_the_reproduce_command_rebuilds_the_stored_config():
    cfg = load_config(
        None,
        {
            "n_docs": 7,
            "optim.name": "sgd",
            "record.weights": "unembed,blocks.0.attn",
            "name": "x",
            "out": "o",
        },
    )
    command = reproduce_command(cfg.to_dict())
    words = shlex.split(command)
    assert words[:2] == ["arprobe", "run"]
    flags = dict(zip([w.removeprefix("--") for w in words[2::2]], words[3::2]))
    assert load_config(None, flags).to_dict() == cfg.to_dict()


# --- reading order, names, what to look for ----------------------------------------------------


class ThirdParty(Probe):
    description = "A plugin."
    headline_keys = ["some_number"]

    def run(self, store, out):
        return {"some_number": 1.5}


def test_probes_appear_in_reading_order_with_human_names_and_plugins_last(tmp_path):
    run = small_run(tmp_path / "runs" / "r")
    registry = Registry()
    registry.register("aaa_plugin", ThirdParty)
    names = ["aaa_plugin", "online_loss", "recovery_score", "loss_curves", "pca_weights"]
    report = tmp_path / "report"
    with RunStore(run) as store:
        outcomes = write_report([store], report, [ProbeRef.of(n, registry.load(n)) for n in names])
    assert [o.probe for o in outcomes] == [
        "loss_curves",
        "recovery_score",
        "online_loss",
        "pca_weights",
        "aaa_plugin",
    ]
    index = (report / "index.html").read_text()
    positions = [index.index(f"id='{n}'") for n in [o.probe for o in outcomes]]
    assert positions == sorted(positions)
    assert "Loss curves <small>(loss_curves)</small>" in index
    assert "Online (prequential) loss <small>(online_loss)</small>" in index
    assert "Aaa plugin <small>(aaa_plugin)</small>" in index
    assert index.count("<b>What to look for:</b>") == 4  # each built-in (pca_weights skipped), not the plugin
    assert ">Some number</td>" in index  # headline keys in words
    assert READING_ORDER[:3] == ["loss_curves", "recovery_score", "online_loss"]


# --- figures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_report(tiny_run, tmp_path_factory):
    """Every built-in probe on the session's tiny real run (T=5, C=32, M=3, E=3)."""
    report = tmp_path_factory.mktemp("report") / "report"
    with RunStore(tiny_run) as store:
        outcomes = write_report([store], report, builtin_refs(Registry().names()), progress=False)
    return report, {o.probe: o for o in outcomes}


def test_every_figure_has_svg_and_csv_with_the_run_identity(real_report):
    report, outcomes = real_report
    pngs = sorted(report.glob("*/*.png"))
    assert len(pngs) >= 12
    for png in pngs:
        assert png.with_suffix(".svg").exists(), png  # save_figure writes both, for any probe
    mine = [p for p in pngs if p.parent.name in OWN_FIGURES]
    assert sorted({p.parent.name for p in mine}) == sorted(OWN_FIGURES)
    for png in mine:
        assert png.with_suffix(".csv").exists(), png
        header, rows = read_csv(png.with_suffix(".csv"))
        assert len(header) >= 2 and rows, png
    svg = (report / "loss_curves/doc_loss.svg").read_text()
    assert "T/C/M/E 5/32/3/3 · cyclic · adam lr 0.001 · seed 0" in svg  # the subtitle, as text
    result = json.loads((report / "recovery_score/result.json").read_text())["result"]
    header, rows = read_csv(report / "recovery_score/recovery_score.csv")
    assert header == ["epoch", "recovery_score", "l_after", "l_max", "l_before"]
    for column, key in ((1, "recovery_score"), (3, "l_max")):
        cells = [float(r[column]) if r[column] else None for r in rows]  # undefined: an empty cell
        assert [c is None for c in cells] == [v is None for v in result[key]]
        assert [c for c in cells if c is not None] == pytest.approx([v for v in result[key] if v is not None])


def test_the_helix_is_detrended_and_has_an_offline_3d_view(real_report):
    report, outcomes = real_report
    assert outcomes["pca_weights"].status == "ok"
    header, rows = read_csv(report / "pca_weights/pca_3d.csv")
    assert header[2].startswith("detrended PC1") and header[4] == "epoch"
    page = (report / "pca_weights/pca_3d.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    payload = json.loads(page.split("const DATA = ", 1)[1].split(";\n", 1)[0])
    assert sum(len(s["points"]) for s in payload["series"]) >= len(rows)
    assert payload["axes"][2] == "epoch"
    assert "pca_weights/pca_3d.html" in (report / "index.html").read_text()


def test_bar_charts_start_at_zero(tmp_path, monkeypatch):
    import arprobe.probes.online_loss as online_module
    import arprobe.probes.recovery_score as rs_module

    figures = []
    for module in (rs_module, online_module):
        real = module.save_figure
        monkeypatch.setattr(
            module,
            "save_figure",
            lambda fig, path, real=real, **kw: (figures.append(fig), real(fig, path, **kw))[1],
        )
    run = small_run(tmp_path / "runs" / "r", shift=10.0)  # losses near 13: a free axis would start near 12
    registry = Registry()
    with RunStore(run) as store:
        for name in ("recovery_score", "online_loss"):
            probe = registry.get(name)
            assert run_probe(probe, [store], tmp_path / "report").status == "ok"
    rs_bars, online_bars = figures[0].axes[1], figures[1].axes[1]
    assert rs_bars.get_ylim()[0] == 0.0 and online_bars.get_ylim()[0] == 0.0


def test_overlaid_runs_have_mean_and_std_per_group(tmp_path, capsys):
    from arprobe.cli.main import main

    runs = [
        small_run(tmp_path / "runs" / f"{order}-s{seed}", seed=seed, order=order, shift=shift)
        for order, shift in (("cyclic", 0.0), ("shuffle", 1.0))
        for seed in (0, 1)
    ]
    out = tmp_path / "out"
    assert (
        main(["analyze", *map(str, runs), "--probe", "online_loss", "--out", str(out), "--no-progress"]) == 0
    )
    capsys.readouterr()
    groups = out / "groups"
    for name in ("online_loss", "curves_order", "rs_per_epoch", "rs_vs_order"):
        assert (groups / f"{name}.png").exists() and (groups / f"{name}.svg").exists(), name
        assert (groups / f"{name}.csv").exists(), name
    header, rows = read_csv(groups / "online_loss.csv")
    cyclic = [h for h in header if h.startswith("order=cyclic")]
    assert cyclic == ["order=cyclic: epochs", "order=cyclic: mean", "order=cyclic: std"]
    curves = np.stack([loss_of(s)[np.arange(T * E), np.tile(np.arange(T), E)] for s in (0, 1)])
    mean = [float(r[header.index("order=cyclic: mean")]) for r in rows]
    std = [float(r[header.index("order=cyclic: std")]) for r in rows]
    # the report's mean/std and numpy's take other float paths: a few float32 ulps of the losses
    assert mean == pytest.approx(curves.mean(axis=0), abs=ulps(curves))
    assert std == pytest.approx(curves.std(axis=0, ddof=1), abs=ulps(curves))
    # The multi-run probe overlays the same groups, mean ± std, in its own report.
    header, _ = read_csv(out / "online_loss/online_loss.csv")
    assert sum(h.endswith(": mean") for h in header) == 2 and sum(h.endswith(": std") for h in header) == 2


# --- progress bars and --help-config ------------------------------------------------------------


# The built-in probes whose figures carry their data as CSV (those this part of arprobe draws).
OWN_FIGURES = [
    "loss_curves",
    "recovery_score",
    "online_loss",
    "gradient_similarity",
    "pairwise_recovery",
    "weight_residual_similarity",
    "pca_weights",
    "activation_drift",
    "toy_model",
]


def test_no_progress_silences_even_a_plugins_bar(tmp_path):
    # In a process of its own: probe processes write to the terminal the analysis started with.
    run = small_run(tmp_path / "runs" / "r")
    script = (
        "import sys; from arprobe.probes.runner import ProbeRef, write_report; "
        "from arprobe.storage import RunStore; from tests.helpers import Chatty; "
        "store = RunStore(sys.argv[1]); "
        "write_report([store], sys.argv[2], [ProbeRef.of('chatty', Chatty)], progress=sys.argv[3] == 'on')"
    )
    for flag, shown in (("on", True), ("off", False)):
        result = subprocess.run(
            [sys.executable, "-c", script, str(run), str(tmp_path / flag), flag],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        assert ("plugin bar" in result.stderr) is shown


def test_help_config_columns_are_aligned():
    lines = describe_keys().splitlines()
    keyed = [line for line in lines if line.startswith("  --")]
    assert len(keyed) >= 50
    value_column = {len(line) - len(line[2:].split("  ", 1)[1].lstrip()) for line in keyed}
    assert len(value_column) == 1  # every default starts in the same column
    name = next(line for line in keyed if line.startswith("  --model.name "))
    assert name.endswith("a hub id, or a local path")  # a wrapped field's comment is found


# --- the page in a browser ---------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_chromium(index, tmp_path) -> tuple[str, list[str]]:
    """The page's DOM after load and its console messages (headless Chromium's log)."""
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # tests may run as root
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            index.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (.ci/run installs Debian's chromium)"
)
def test_index_loads_every_image_in_chromium_without_console_errors(real_report, tmp_path):
    report, _ = real_report
    html_text = (report / "index.html").read_text()
    n_images = html_text.count("<img ")
    assert n_images >= 12
    dom, console = open_in_chromium(report / "index.html", tmp_path)
    assert f'data-images-loaded="{n_images}/{n_images}"' in dom
    assert console == []
    assert '<iframe src="pca_weights/pca_3d.html"' in dom

    broken = tmp_path / "broken"
    shutil.copytree(report, broken)
    (broken / "loss_curves/doc_loss.png").unlink()
    dom, console = open_in_chromium(broken / "index.html", tmp_path)
    assert f'data-images-loaded="{n_images - 1}/{n_images}"' in dom
    assert any("figure did not load: loss_curves/doc_loss.png" in line for line in console)
