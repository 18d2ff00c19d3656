"""The aggregate report over seeds: ``sweep.json``, figures and ``index.html``.

A *group* is a point without its seed (its grid options); its seeds are replicates. Per group:
the recovery score of every epoch and the final one, the online loss over epochs 2..E and the
shift-averaged curve, each as mean, sample std and the per-seed values. Only complete runs are
aggregated; the others are listed with their status. When ``schedule.order`` is a factor, the
Table-1 online-loss table compares every order with cyclic, paired by seed (same documents and
initialisation), with the t-based 95% interval of the mean difference.

Figures: ``rs_vs_<factor>.png`` (final RS ± std over seeds against each factor, one line per
combination of the other factors), ``curves_<factor>.png`` (shift-averaged curves overlaid per
value of the factor, ±1 std over seeds), ``rs_per_epoch.png``.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.jsonio import write_json_atomic, write_text_atomic
from arprobe.probes.runner import write_report
from arprobe.report.figures import integer_axis, new_figure, save_figure
from arprobe.report.grouping import group_runs, training_config
from arprobe.report.pages import MIN_SEEDS, fmt, mean_pm_std, small_n_caution, write_sweep_index
from arprobe.report.summary import run_identity
from arprobe.science.aggregate import paired_difference, summarize, summarize_columns
from arprobe.science.recovery import online_loss, recovery_scores, shift_averaged_curve
from arprobe.storage import RunStore
from arprobe.sweep.spec import group_key, show

ORDER = "schedule.order"
REFERENCE_ORDER = "cyclic"
MAX_PANELS = 6


@dataclass
class Group:
    options: dict  # factor (dotted key) -> value
    runs: list[tuple[str, Path]]  # (run name, store path), one per seed
    control: str | None = None  # "shuffle": the matched controls of the group with these options

    def label(self, factors: list[str]) -> str:
        label = label_of(self.options, factors)
        return f"{label} ({self.control} control)" if self.control else label


def label_of(options: dict, factors: list[str]) -> str:
    parts = [
        f"{short(k, factors)}=({show(options[k])})"
        if isinstance(options[k], dict)
        else f"{short(k, factors)}={options[k]}"
        for k in factors
        if k in options
    ]
    return " ".join(parts) or "all runs"


def short(key: str, factors: list[str]) -> str:
    """The leaf of a dotted key, unless two factors share it."""
    leaf = key.split(".")[-1]
    return leaf if [k.split(".")[-1] for k in factors].count(leaf) == 1 else key


@dataclass
class RunNumbers:
    name: str
    path: Path
    seed: int
    status: str
    episodes: int
    recovery: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [E-1] RS(n), NaN where undefined
    online: float = float("nan")  # mean online loss, epochs 2..E
    epochs: int = 0
    curve_x: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [L] offset in epochs
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [L] shift-averaged loss (mean over docs)
    online_x: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [K] episode start, in epochs
    online_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [K] online loss per episode
    # x_1 alone (App. B.1 plots the first document's curve): RS(n) of document 0 and its curve
    first_recovery: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [E-1]
    first_curve: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [L'] loss of x_1 by offset


def read_run(name: str, path: Path) -> RunNumbers:
    """The numbers of one store (complete or not); the science functions do the work."""
    try:
        store = RunStore(path)
    except UserError:
        return RunNumbers(name, Path(path), -1, "unreadable", 0)
    with store:
        numbers = RunNumbers(name, store.path, store.seed, store.status, store.completed_episodes)
        if numbers.status != "complete" or numbers.episodes < 1:
            return numbers
        loss_eval, schedule = store.eval_matrix(), store.schedule()
    numbers.recovery = np.asarray(recovery_scores(loss_eval, schedule.doc), dtype=np.float64)
    online = online_loss(loss_eval, schedule.doc, schedule.epoch)
    numbers.online = float(online.mean_after_first_epoch)
    numbers.online_curve = online.per_episode
    numbers.online_x = schedule.episodes_in_epochs(np.arange(len(online.per_episode)))
    numbers.epochs = schedule.n_epochs
    curve = shift_averaged_curve(loss_eval, schedule.doc, docs=schedule.repeating_docs)
    numbers.curve_x = curve.offset / schedule.cycle_length
    numbers.curve = curve.mean
    numbers.first_recovery = np.asarray(recovery_scores(loss_eval[:, :1], schedule.doc), dtype=np.float64)
    numbers.first_curve = shift_averaged_curve(loss_eval, schedule.doc, docs=[0]).mean
    return numbers


def summary_dict(values) -> dict:
    s = summarize(values)
    return {"n": s.n, "mean": s.mean, "std": s.std, "per_seed": s.values}


def aggregate_group(group: Group, factors: list[str], runs: list[RunNumbers]) -> dict:
    """The group's entry of sweep.json, from its runs' numbers."""
    done = [r for r in runs if r.status == "complete"]
    entry = {
        "label": group.label(factors),
        "options": group.options,
        **({"control": group.control} if group.control else {}),
        "n": len(done),
        "seeds": [r.seed for r in done],
        "runs": [r.name for r in done],
        "excluded": [
            {"run": r.name, "status": r.status, "episodes": r.episodes} for r in runs if r not in done
        ],
    }
    if not done:
        return entry
    width = max(len(r.recovery) for r in done)
    rs = np.full((len(done), width), np.nan)
    for i, r in enumerate(done):
        rs[i, : len(r.recovery)] = r.recovery
    mean, std, n = summarize_columns(rs)
    entry["recovery_score"] = {
        "epochs": list(range(1, width + 1)),
        "mean": mean,
        "std": std,
        "n": n,
        "per_seed": rs,
    }
    final = rs[:, -1] if width else np.full(len(done), np.nan)
    entry["final_recovery_score"] = {"epoch": width, **summary_dict(final)}
    entry["online_loss"] = {
        "epochs": [2, max(r.epochs for r in done)],
        **summary_dict([r.online for r in done]),
    }
    first = np.full((len(done), width), np.nan)
    for i, r in enumerate(done):
        first[i, : len(r.first_recovery)] = r.first_recovery
    entry["first_doc_recovery_score"] = {
        "epoch": width,
        **summary_dict(first[:, -1] if width else np.full(len(done), np.nan)),
    }
    # An offset (or episode) is the same moment in every seed only when their epochs line up: the
    # insert order's epochs have a random length per seed, so its curves are refused an average
    # (each seed's own curve is in its run report) rather than averaged across different moments.
    length = min(len(r.online_curve) for r in done)
    aligned = all(np.array_equal(r.online_x[:length], done[0].online_x[:length]) for r in done)
    if not aligned:
        entry["curves_not_averaged"] = "the seeds' epochs have different lengths (insert order)"
        return entry
    length = min(len(r.curve) for r in done)
    curves = np.stack([r.curve[:length] for r in done])
    curve_mean, curve_std, _ = summarize_columns(curves)
    entry["shift_averaged_curve"] = {"epochs": done[0].curve_x[:length], "mean": curve_mean, "std": curve_std}
    length = min(len(r.first_curve) for r in done)
    first_mean, first_std, _ = summarize_columns(np.stack([r.first_curve[:length] for r in done]))
    entry["first_doc_curve"] = {"epochs": done[0].curve_x[:length], "mean": first_mean, "std": first_std}
    length = min(len(r.online_curve) for r in done)
    if aligned:
        online_mean, online_std, _ = summarize_columns(np.stack([r.online_curve[:length] for r in done]))
        entry["online_loss_curve"] = {
            "epochs": done[0].online_x[:length],
            "mean": online_mean,
            "std": online_std,
        }
    return entry


def pair_with_controls(entries: list[dict]) -> None:
    """Give every point that has a matched control group (``control = "shuffle"``) the paired
    difference point − control, seed by seed, of its final recovery score, x_1's and its online
    loss, each with n and the t-based 95% interval: ``entry["versus_control"]``."""
    controls = {json.dumps(e["options"], sort_keys=True, default=str): e for e in entries if e.get("control")}
    for entry in entries:
        control = controls.get(json.dumps(entry["options"], sort_keys=True, default=str))
        if entry.get("control") or control is None or not entry["n"] or not control["n"]:
            continue
        seeds = [s for s in entry["seeds"] if s in control["seeds"]]
        pairs = {"control": control["control"], "seeds": seeds}
        for key in ("final_recovery_score", "first_doc_recovery_score", "online_loss"):
            mine = dict(zip(entry["seeds"], entry[key]["per_seed"]))
            theirs = dict(zip(control["seeds"], control[key]["per_seed"]))
            d = paired_difference([theirs[s] for s in seeds], [mine[s] for s in seeds])
            pairs[key] = {"minus": "control", **d.as_dict()}
        entry["versus_control"] = pairs


def table1(entries: list[dict], factors: list[str]) -> dict | None:
    """Online loss per order and per combination of the other factors, each order against cyclic,
    paired by seed. None unless ``schedule.order`` is a factor."""
    if ORDER not in factors:
        return None
    others = [k for k in factors if k != ORDER]
    orders = list(dict.fromkeys(e["options"][ORDER] for e in entries))
    reference = REFERENCE_ORDER if REFERENCE_ORDER in orders else orders[0]
    rows = []
    for combo in dict.fromkeys(
        json.dumps([e["options"][k] for k in others], sort_keys=True, default=str) for e in entries
    ):
        values = json.loads(combo)
        match = [e for e in entries if [e["options"][k] for k in others] == values]
        by_order = {e["options"][ORDER]: e for e in match}
        row = {"options": dict(zip(others, values)), "label": label_of(dict(zip(others, values)), others)}
        row["orders"] = {
            o: {k: by_order[o]["online_loss"][k] for k in ("n", "mean", "std")}
            | {"seeds": by_order[o]["seeds"]}
            for o in orders
            if o in by_order and "online_loss" in by_order[o]
        }
        row["differences"] = {}
        ref = by_order.get(reference)
        for o in orders:
            if o == reference or o not in by_order or ref is None or "online_loss" not in by_order[o]:
                continue
            ref_by_seed = dict(zip(ref["seeds"], ref["online_loss"]["per_seed"][: len(ref["seeds"])]))
            other = by_order[o]
            other_by_seed = dict(zip(other["seeds"], other["online_loss"]["per_seed"]))
            seeds = [s for s in ref_by_seed if s in other_by_seed]
            d = paired_difference([ref_by_seed[s] for s in seeds], [other_by_seed[s] for s in seeds])
            row["differences"][o] = {
                "minus": reference,
                "seeds": seeds,
                "n": d.n,
                "mean": d.mean,
                "std": d.std,
                "ci_low": d.low,
                "ci_high": d.high,
                "confidence": d.confidence,
            }
        rows.append(row)
    return {"reference": reference, "orders": orders, "others": others, "rows": rows}


def table1_markdown(table: dict) -> str:
    """The Table-1 table as Markdown: one row per combination of the other factors."""
    orders, ref = table["orders"], table["reference"]
    diffs = [o for o in orders if o != ref]
    head = [
        "point",
        *[f"{o} (mean ± std)" for o in orders],
        *[f"{o} − {ref} [95% CI]" for o in diffs],
        "seeds",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        cells = [row["label"] or "all runs"]
        cells += [mean_pm_std(row["orders"].get(o)) for o in orders]
        for o in diffs:
            d = row["differences"].get(o)
            cells.append(
                f"{fmt(d['mean'])} [{fmt(d['ci_low'])}, {fmt(d['ci_high'])}]" if d and d["n"] else "n/a"
            )
        cells.append(str(max((v["n"] for v in row["orders"].values()), default=0)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- figures -------------------------------------------------------------------------------------


def _other_combos(entries: list[dict], factors: list[str], factor: str) -> list[tuple[dict, list[dict]]]:
    others = [k for k in factors if k != factor]
    combos: dict[str, list[dict]] = {}
    for e in entries:
        combos.setdefault(
            json.dumps([e["options"][k] for k in others], sort_keys=True, default=str), []
        ).append(e)
    return [(dict(zip(others, json.loads(key))), members) for key, members in combos.items()]


def is_categorical(values: list) -> bool:
    """A factor whose values are names (cyclic / shuffle, a model, a dict of options), not numbers:
    its points are not joined by a line (there is nothing between two of them)."""
    return not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def draw_rs_vs_factor(entries: list[dict], factors: list[str], factor: str, values: list, out: Path) -> Path:
    """Final RS (mean ± std over seeds) against one factor, one series per combination of the others;
    a categorical factor's points stand alone, a numeric one's are joined in grid order."""
    fig, (ax,) = new_figure(1, width=6.5)
    x = np.arange(len(values))
    style = "none" if is_categorical(values) else "-"
    others = [k for k in factors if k != factor]
    for i, (options, members) in enumerate(_other_combos(entries, factors, factor)):
        by_value = {json.dumps(e["options"][factor], sort_keys=True, default=str): e for e in members}
        mean, std = [], []
        for v in values:
            e = by_value.get(json.dumps(v, sort_keys=True, default=str))
            s = e.get("final_recovery_score") if e else None
            mean.append(s["mean"] if s and s["n"] else np.nan)
            std.append(s["std"] if s and s["n"] > 1 else 0.0)
        offset = (i - 0.5 * (len(entries) // max(len(values), 1) - 1)) * 0.04
        ax.errorbar(
            x + offset,
            np.asarray(mean, dtype=float),
            yerr=np.nan_to_num(np.asarray(std, dtype=float)),
            marker="o",
            linestyle=style,
            capsize=4,
            color=f"C{i % 10}",
            label=label_of(options, others) if others else None,
        )
    epoch = next((e["final_recovery_score"]["epoch"] for e in entries if "final_recovery_score" in e), 0)
    ax.set_xticks(x, [show(v) for v in values])
    ax.set_xlabel(factor)
    ax.set_ylabel(f"recovery score RS({epoch})")
    ax.axhline(0.0, color="0.7", lw=0.8)
    title = f"Recovery score vs {short(factor, factors)} (mean ± std over seeds)"
    fewest = min((e["n"] for e in entries), default=0)
    if fewest < MIN_SEEDS:  # a std over 1 or 2 seeds says almost nothing: the figure says so
        title += f"\n{small_n_caution(fewest)}"
    ax.set_title(title)
    if others:
        ax.legend(fontsize=8)
    data: dict = {factor: [show(v) for v in values]}
    for e in entries:
        s = e.get("final_recovery_score")
        data[f"{e['label']}: {factor}"] = [show(e["options"][factor])]
        data[f"{e['label']}: RS({epoch}) mean"] = [s["mean"] if s and s["n"] else np.nan]
        data[f"{e['label']}: RS({epoch}) std"] = [s["std"] if s and s["n"] > 1 else np.nan]
    return save_figure(fig, out / f"rs_vs_{short(factor, factors).replace('.', '_')}.png", data=data)


def draw_curves(entries: list[dict], factors: list[str], factor: str | None, out: Path) -> Path:
    combos = _other_combos(entries, factors, factor) if factor else [({}, entries)]
    shown = combos[:MAX_PANELS]
    fig, axes = new_figure(len(shown), width=5.0)
    others = [k for k in factors if k != factor]
    for ax, (options, members) in zip(axes, shown):
        for i, e in enumerate(members):
            curve = e.get("shift_averaged_curve")
            if not curve:
                continue
            x, mean = np.asarray(curve["epochs"], dtype=float), np.asarray(curve["mean"], dtype=float)
            std = np.nan_to_num(np.asarray(curve["std"], dtype=float))
            name = label_of({factor: e["options"][factor]}, [factor]) if factor else e["label"]
            ax.plot(x, mean, color=f"C{i % 10}", lw=1.2, label=f"{name} (n={e['n']})")
            if e["n"] > 1:
                ax.fill_between(x, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
        integer_axis(ax, "epochs since just before each document's first training")
        ax.set_ylabel("loss (mean over documents)")
        ax.set_title(
            label_of(options, others) if others else "shift-averaged loss (± std over seeds)", fontsize=9
        )
        ax.legend(fontsize=8)
    name = f"curves_{short(factor, factors).replace('.', '_')}.png" if factor else "curves.png"
    if len(combos) > MAX_PANELS:
        fig.suptitle(f"first {MAX_PANELS} of {len(combos)} combinations of the other factors", fontsize=9)
    return save_figure(fig, out / name, data=_curve_data(entries, "shift_averaged_curve"))


def _curve_data(entries: list[dict], key: str) -> dict:
    """CSV columns of one overlaid curve per group: its x (epochs), mean and std over seeds."""
    data: dict = {}
    for e in entries:
        curve = e.get(key)
        if curve:
            data[f"{e['label']}: epochs"] = curve["epochs"]
            data[f"{e['label']}: mean"] = curve["mean"]
            data[f"{e['label']}: std"] = curve["std"]
    return data


def draw_online_loss(entries: list[dict], out: Path) -> Path | None:
    """Online (prequential) loss per episode, one curve per group, mean ± std over seeds (Fig. 1c)."""
    drawn = [e for e in entries if e.get("online_loss_curve")]
    if not drawn:
        return None
    fig, (ax,) = new_figure(1, width=7.0)
    for i, e in enumerate(drawn):
        curve = e["online_loss_curve"]
        x, mean = np.asarray(curve["epochs"], dtype=float), np.asarray(curve["mean"], dtype=float)
        std = np.nan_to_num(np.asarray(curve["std"], dtype=float))
        ax.plot(x, mean, color=f"C{i % 10}", lw=1.2, label=f"{e['label']} (n={e['n']})")
        if e["n"] > 1:
            ax.fill_between(x, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
    integer_axis(ax, "epoch")
    ax.set_ylabel("online loss (before each episode's first step)")
    ax.set_title("Online loss per episode (mean ± std over seeds; cf. paper Fig. 1c)")
    ax.legend(fontsize=8)
    return save_figure(fig, out / "online_loss.png", data=_curve_data(drawn, "online_loss_curve"))


def draw_rs_per_epoch(entries: list[dict], out: Path) -> Path:
    fig, (ax,) = new_figure(1, width=6.5)
    for i, e in enumerate(entries):
        rs = e.get("recovery_score")
        if not rs or not len(rs["epochs"]):
            continue
        offset = (i - (len(entries) - 1) / 2) * 0.03
        ax.errorbar(
            np.asarray(rs["epochs"], dtype=float) + offset,
            np.asarray(rs["mean"], dtype=float),
            yerr=np.nan_to_num(np.asarray(rs["std"], dtype=float)),
            marker="o",
            capsize=3,
            color=f"C{i % 10}",
            label=f"{e['label']} (n={e['n']})",
        )
    integer_axis(ax, "epoch n")
    ax.set_ylabel("recovery score RS(n)")
    ax.axhline(0.0, color="0.7", lw=0.8)
    ax.set_title("Recovery score per epoch (mean ± std over seeds)")
    ax.legend(fontsize=7)
    data: dict = {}
    for e in entries:
        rs = e.get("recovery_score")
        if rs and len(rs["epochs"]):
            data[f"{e['label']}: epoch"] = rs["epochs"]
            data[f"{e['label']}: RS mean"] = rs["mean"]
            data[f"{e['label']}: RS std"] = rs["std"]
    return save_figure(fig, out / "rs_per_epoch.png", data=data)


# --- probes over every run ------------------------------------------------------------------------


def run_probes(
    groups: list[Group], entries: list[dict], probes: list, options: dict, report_dir: Path, on_outcome
):
    """Each single-run probe on every complete run (into the run's own report folder) with its
    numeric headline numbers aggregated per group; each multi-run probe once per group."""
    single = [p for p in probes if not p.multi_run]
    multi = [p for p in probes if p.multi_run]
    for group, entry in zip(groups, entries):
        paths = [path for name, path in group.runs if name in entry["runs"]]
        entry["probes"] = {}
        per_run: dict[str, dict[str, list]] = {p.name: {} for p in single}
        statuses: dict[str, list[str]] = {p.name: [] for p in probes}
        for path in paths:
            with RunStore(path) as store:
                for outcome in write_report([store], Path(path).parent / "report", single, options):
                    on_outcome(outcome)
                    statuses[outcome.probe].append(outcome.status)
                    for key, value in outcome.headline.items():
                        per_run[outcome.probe].setdefault(key, []).append(value)
        for probe in single:
            numeric = {}
            for key, values in per_run[probe.name].items():
                summary = aggregate_headline(values)
                if summary is not None:
                    numeric[key] = summary
            entry["probes"][probe.name] = {"status": statuses[probe.name], "headline": numeric}
        if multi and paths:
            folder = report_dir / "probes" / slug(entry["label"])
            stores = [RunStore(p) for p in paths]
            try:
                for outcome in write_report(stores, folder, multi, options, title=entry["label"]):
                    on_outcome(outcome)
                    entry["probes"][outcome.probe] = {
                        "status": [outcome.status],
                        "headline": outcome.headline,
                        "report": str(folder.relative_to(report_dir) / "index.html"),
                    }
            finally:
                for s in stores:
                    s.close()


def _number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def aggregate_headline(values: list) -> dict | None:
    """Mean, std and per-seed values of one headline number over a group's runs; a list (one
    number per epoch) element by element. None for anything else (text, nested tables)."""
    if values and all(_number(v) for v in values):
        return summary_dict([np.nan if v is None else v for v in values])
    if values and all(isinstance(v, list) and all(_number(x) for x in v) for v in values):
        rows = np.full((len(values), max(len(v) for v in values)), np.nan)
        for i, v in enumerate(values):
            rows[i, : len(v)] = [np.nan if x is None else x for x in v]
        mean, std, n = summarize_columns(rows)
        return {"n": n, "mean": mean, "std": std, "per_seed": rows}
    return None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_") or "all"


# --- the whole report ----------------------------------------------------------------------------


def write_sweep_report(
    report_dir: Path,
    *,
    title: str,
    factors: list[str],
    grid: dict,
    groups: list[Group],
    probes: list | None = None,
    probe_options: dict | None = None,
    on_outcome=None,
    run_links: Path | None = None,
) -> dict:
    """Aggregate ``groups`` into ``report_dir``: sweep.json, table1.md, figures, index.html."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for group in groups:
        runs = [read_run(name, path) for name, path in group.runs]
        entries.append(aggregate_group(group, factors, runs))
    if probes:
        run_probes(groups, entries, probes, probe_options or {}, report_dir, on_outcome or (lambda o: None))
    pair_with_controls(entries)
    table = table1(entries, factors)
    figures = []
    for old in [*report_dir.glob("*.png"), *report_dir.glob("*.svg"), *report_dir.glob("*.csv")]:
        old.unlink()  # figures of an earlier analysis must not outlive their data
    with_numbers = [e for e in entries if e["n"] and not e.get("control")]  # controls: versus_control
    if with_numbers:
        for factor in factors:
            figures.append(draw_rs_vs_factor(with_numbers, factors, factor, grid[factor], report_dir).name)
            figures.append(draw_curves(with_numbers, factors, factor, report_dir).name)
        if not factors:
            figures.append(draw_curves(with_numbers, factors, None, report_dir).name)
        figures.append(draw_rs_per_epoch(with_numbers, report_dir).name)
        online = draw_online_loss(with_numbers, report_dir)
        if online is not None:
            figures.append(online.name)
    if run_links is not None:  # every seed's own report page, to link from the points table
        write_missing_run_reports(entries, groups)
    summary = {
        "title": title,
        "factors": factors,
        "grid": grid,
        "fixed": fixed_settings(groups),
        "points": entries,
        "table1": table,
        "figures": figures,
    }
    write_json_atomic(report_dir / "sweep.json", summary)
    md = report_dir / "table1.md"
    if table:
        write_text_atomic(md, table1_markdown(table) + "\n")
    elif md.exists():
        md.unlink()
    # The page is drawn from the file as written (plain JSON values), as a later re-draw would be.
    write_sweep_index(report_dir, json.loads((report_dir / "sweep.json").read_text()), run_links)
    return summary


def fixed_settings(groups: list[Group]) -> dict:
    """What every run of the sweep shares (model, T / C / M / E, order, optimizer, data), as the run
    report names it; a setting the runs do not share reads "varies (see the grid)"."""
    seen: dict[str, set] = {}
    for group in groups:
        for _, path in group.runs[:1]:  # the seeds of a group share everything but the seed
            try:
                with RunStore(path) as store:
                    identity = run_identity(store)
            except Exception:  # an unreadable run is listed in the points table; it has no settings
                continue
            for key, value in identity.items():
                if key not in ("run", "seed"):
                    seen.setdefault(key, set()).add(value)
    return {k: next(iter(v)) if len(v) == 1 else "varies (see the grid)" for k, v in seen.items()}


def write_missing_run_reports(entries: list[dict], groups: list[Group]) -> None:
    """A run report (summary and finding, no probes: seconds) for every complete run that has none,
    so that the sweep page can link each seed's own report."""
    for group, entry in zip(groups, entries):
        for name, path in group.runs:
            index = Path(path).parent / "report" / "index.html"
            if name in entry["runs"] and not index.exists():
                with RunStore(path) as store:
                    write_report([store], index.parent, [])


# --- where the groups come from ------------------------------------------------------------------


def groups_from_manifest(sweep_dir: Path, manifest: dict) -> tuple[list[str], dict, list[Group]]:
    """(factors, grid, groups) of a sweep folder, groups in grid order."""
    factors = list(manifest.get("factors", []))
    grid = manifest.get("grid", {})
    groups: dict[str, Group] = {}
    ordered = sorted(
        manifest["points"],
        key=lambda e: [
            grid[k].index(e["options"][k]) if e["options"].get(k) in grid.get(k, []) else 0 for k in factors
        ],
    )
    for entry in ordered:
        key = group_key(entry["options"], entry.get("control"))
        group = groups.setdefault(key, Group(dict(entry["options"]), [], entry.get("control")))
        group.runs.append((entry["name"], Path(sweep_dir) / entry["run"] / "run.h5"))
    return factors, grid, list(groups.values())


def groups_from_runs(paths: list[Path]) -> tuple[list[str], dict, list[Group]]:
    """(factors, grid, groups) of loose runs: grouped by config minus seed, as online_loss does;
    the factors are the training options that differ between groups."""
    configs = []
    for path in paths:
        with RunStore(path) as store:
            configs.append(store.config)
    indices, _ = group_runs(configs)
    flats = [training_config(c) for c in configs]
    firsts = [flats[g[0]] for g in indices]
    keys = sorted(set().union(*firsts)) if firsts else []
    factors = [
        k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in firsts}) > 1
    ]
    if ORDER in factors:  # the order first, as the paper's tables are read
        factors.remove(ORDER)
        factors.insert(0, ORDER)
    grid = {
        k: list({json.dumps(f.get(k), sort_keys=True, default=str): f.get(k) for f in firsts}.values())
        for k in factors
    }
    groups = []
    for g in indices:
        options = {k: flats[g[0]].get(k) for k in factors}
        groups.append(Group(options, [(Path(paths[i]).parent.name, Path(paths[i])) for i in g]))
    return factors, grid, groups


def product_size(grid: dict) -> int:
    return len(list(itertools.product(*grid.values()))) if grid else 1
