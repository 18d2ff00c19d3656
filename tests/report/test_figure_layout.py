"""Figures a reader can trust: whole-number ticks on counting axes, the forgetting figure's legends
outside its panels and the anticipation ratio on its own axis, and a sweep's categorical factor drawn
as points, not a line."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from arprobe.probes import forgetting as forgetting_module
from arprobe.probes.base import integer_axis, mark_epochs, new_figure
from arprobe.science.schedule import Schedule
from arprobe.storage import RunStore
from arprobe.sweep import report as sweep_report
from tests.store_factory import make_store

T, E = 4, 3


def cyclic_losses(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    loss = np.full((T * E + 1, T), 5.0)
    doc = np.tile(np.arange(T), E)
    for k in range(1, T * E + 1):
        loss[k] = loss[k - 1] + 0.3 + 0.1 * rng.random(T)
        loss[k, doc[k - 1]] = 1.0 + 0.2 * rng.random()
    return loss


def drawn(ax):
    """Lay the figure out with Agg (positions and legend boxes final); returns the renderer."""
    canvas = FigureCanvasAgg(ax.figure)
    canvas.draw()
    return canvas.get_renderer()


@pytest.mark.parametrize("last", [2, 3, 7, 40])
def test_integer_axis_ticks_only_whole_numbers(last):
    fig, (ax,) = new_figure()
    ax.plot(np.linspace(1, last, 50), np.linspace(0, 1, 50))
    integer_axis(ax, "epoch")
    drawn(ax)
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    assert ax.get_xlabel() == "epoch"
    # without it matplotlib puts ticks at 1.25, 1.5, 1.75 on the same data (what the report showed)
    fig, (plain,) = new_figure()
    plain.plot(np.linspace(1, 2, 50), np.linspace(0, 1, 50))
    drawn(plain)
    assert not all(float(t).is_integer() for t in plain.get_xticks())


def test_integer_axis_keeps_ticks_set_by_hand():
    schedule = Schedule(np.tile(np.arange(3), 2), np.repeat([1, 2], 3), 3)
    fig, (ax,) = new_figure()
    mark_epochs(ax, schedule, -0.5, 6.5)
    integer_axis(ax)
    assert ax.get_xticks().tolist() == [0, 3, 6]


def test_the_forgetting_figure_keeps_its_legends_off_the_bars_and_the_ratio_on_its_own_axis(
    tmp_path, monkeypatch
):
    make_store(tmp_path / "r", loss_eval=cyclic_losses(), schedule_doc=np.tile(np.arange(T), E))
    figures = []
    monkeypatch.setattr(forgetting_module, "save_figure", lambda fig, path, **kw: figures.append(fig))
    with RunStore(tmp_path / "r" / "run.h5") as store:
        result = forgetting_module.Forgetting().run(store, tmp_path)
    (fig,) = figures
    renderer = drawn(fig.axes[0])
    left, ratio_left, right, ratio_right = _panels(fig)
    for ax, twin in ((left, ratio_left), (right, ratio_right)):
        legend = ax.get_legend()
        texts = [t.get_text() for t in legend.get_texts()]
        assert any(t.startswith("anticipation ratio") for t in texts)  # the red dots have an entry
        # the legend lies under the panel: its top is below the bottom of the axes
        assert legend.get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0
        # the ratio is drawn on the twin axis (0 to at least 1), the losses on the left one
        assert all("anticipation" not in line.get_label() for line in ax.lines)
        assert any("anticipation" in line.get_label() for line in twin.lines)
        low, high = twin.get_ylim()
        assert low <= 0 and high >= 1
        finite = np.asarray(result["anticipation_ratio"], dtype=float)
        assert high >= np.nanmax(finite) if twin is ratio_left else True
    assert left.get_xlabel() == "document (1..T)"
    assert [float(t) for t in left.get_xticks() if 0.5 <= t <= T + 0.5] == [1, 2, 3, 4]  # 1-based
    assert all(float(t).is_integer() for t in right.get_xticks())


def _panels(fig):
    """(left, its twin, right, its twin): a twin shares its panel's position."""
    axes = fig.axes
    main = [a for a in axes if a.get_title()]
    twins = [a for a in axes if not a.get_title()]
    pairs = []
    for ax in main:
        (twin,) = [t for t in twins if t.get_position().bounds == pytest.approx(ax.get_position().bounds)]
        pairs += [ax, twin]
    return pairs


# --- the sweep's figures --------------------------------------------------------------------------


def entry(label: str, options: dict, mean: float, std: float, n: int = 3) -> dict:
    return {
        "label": label,
        "options": options,
        "n": n,
        "final_recovery_score": {"epoch": 3, "n": n, "mean": mean, "std": std},
    }


@pytest.mark.parametrize(
    "values, categorical",
    [
        (["cyclic", "shuffle"], True),
        ([True, False], True),
        ([{"a": 1}], True),
        ([1, 2, 4], False),
        ([1e-3, 1e-2], False),
    ],
)
def test_a_factor_of_names_is_categorical(values, categorical):
    assert sweep_report.is_categorical(values) is categorical


def capture(monkeypatch) -> list:
    figures = []
    monkeypatch.setattr(
        sweep_report, "save_figure", lambda fig, path, **kw: figures.append(fig) or Path(path)
    )
    return figures


def test_a_categorical_factor_is_drawn_as_points_and_a_numeric_one_as_a_line(monkeypatch, tmp_path):
    figures = capture(monkeypatch)
    orders = [entry("order=cyclic", {"schedule.order": "cyclic"}, 0.4, 0.03),
              entry("order=shuffle", {"schedule.order": "shuffle"}, 0.1, 0.04)]  # fmt: skip
    sweep_report.draw_rs_vs_factor(
        orders, ["schedule.order"], "schedule.order", ["cyclic", "shuffle"], tmp_path
    )
    lrs = [entry(f"lr={v}", {"optim.lr": v}, m, 0.02) for v, m in ((1e-4, 0.1), (1e-3, 0.3), (1e-2, 0.2))]
    sweep_report.draw_rs_vs_factor(lrs, ["optim.lr"], "optim.lr", [1e-4, 1e-3, 1e-2], tmp_path)
    (points,) = [line for line in figures[0].axes[0].lines if line.get_marker() == "o"]
    assert points.get_linestyle() == "None" and len(points.get_xdata()) == 2
    (curve,) = [line for line in figures[1].axes[0].lines if line.get_marker() == "o"]
    assert curve.get_linestyle() == "-"
    assert [t.get_text() for t in figures[0].axes[0].get_xticklabels()] == ["cyclic", "shuffle"]
    assert "\n" not in figures[0].axes[0].get_title()  # 3 seeds: no caution
    few = [entry("order=cyclic", {"schedule.order": "cyclic"}, 0.36, 0.36, n=2)]
    sweep_report.draw_rs_vs_factor(few, ["schedule.order"], "schedule.order", ["cyclic"], tmp_path)
    assert (
        figures[2].axes[0].get_title().endswith("\nn = 2: too few seeds for a meaningful spread or interval")
    )


# --- the sweep's page -------------------------------------------------------------------------------


def test_the_sweep_page_states_the_finding_fixed_settings_links_runs_and_cautions_small_n(tmp_path):
    runs = tmp_path / "sweep" / "runs"
    doc = np.tile(np.arange(T), E)
    for seed in (0, 1):
        make_store(runs / f"c_s{seed}", loss_eval=cyclic_losses(seed), schedule_doc=doc, seed=seed)
        make_store(
            runs / f"c_control-shuffle_s{seed}",
            loss_eval=cyclic_losses(seed + 10) + 0.5,
            schedule_doc=doc,
            seed=seed,
            config={"schedule": {"order": "shuffle"}},
        )
    groups = [
        sweep_report.Group({}, [(f"c_s{s}", runs / f"c_s{s}" / "run.h5") for s in (0, 1)]),
        sweep_report.Group(
            {},
            [(f"c_control-shuffle_s{s}", runs / f"c_control-shuffle_s{s}" / "run.h5") for s in (0, 1)],
            "shuffle",
        ),
    ]
    report = tmp_path / "sweep" / "report"
    summary = sweep_report.write_sweep_report(
        report, title="t", factors=[], grid={}, groups=groups, run_links=Path("../runs")
    )
    assert summary["fixed"]["T / C / M / E"] == f"{T} / 4 / 2 / {E}"
    assert (
        summary["fixed"]["optimizer"] == "adam lr 0.001"
        and summary["fixed"]["order"] == "varies (see the grid)"
    )
    page = (report / "index.html").read_text()
    assert (
        page.index("<b>Finding:</b>") < page.index("<h2>Fixed settings</h2>") < page.index("<h2>Points</h2>")
    )
    versus = summary["points"][0]["versus_control"]["final_recovery_score"]
    assert versus["n"] == 2
    assert f"RS({E - 1}) minus its control {versus['mean']:+.3f} [{versus['ci_low']:+.3f}," in page
    assert "n = 2: too few seeds for a meaningful spread or interval" in page
    for name in ("c_s0", "c_s1"):  # each seed's own report was written and is linked, relative
        assert (runs / name / "report" / "index.html").is_file()
        assert f"href='../runs/{name}/report/index.html'" in page
    assert "<h2>Against the matched shuffled control</h2>" in page
