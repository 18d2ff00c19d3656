"""The paper-figure table of docs/reproduction.md, written from the sweep reports (never by hand).

    python -m benchmarks.paper_table [--sweeps sweeps] [--readme docs/reproduction.md] [--print]

For every figure or table of the paper: its sweep file at paper scale, the paper's claim, and what
each CPU twin measured, read from ``<sweeps>/<twin name>/report/sweep.json`` (copied into
``benchmarks/results/twins/``, which is read when the sweep folder is gone; run
``arprobe sweep configs/cpu/sweeps/<id>.toml`` and ``arprobe analyze sweeps/<id>-cpu`` first).
Each claim has a check on the numbers; the last column says whether the twin agrees. A twin that
was not run says "not yet measured". The table replaces the lines between the README's
``<!-- paper-table:start -->`` and ``<!-- paper-table:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np

from arprobe.science.stats import (
    Interval,
    equivalence_test,
    paired_difference,
    seeds_needed,
    slope_interval,
)

START, END = "<!-- paper-table:start -->", "<!-- paper-table:end -->"

# (paper figure, paper sweep id, the paper's claim, check on the twins' numbers, the CPU twins: random-init
# first, then the one on an `arprobe pretrain` ladder base where the claim is about pre-trained models)
ROWS = [
    ("Fig. 1", "fig1", "cyclic order recovers before a document returns; shuffled does not",
     "rs_first_above_rest", ("fig1", "fig1_pretrained_ladder")),
    ("Table 1", "table1", "cyclic has a lower online loss (epochs 2..E) than shuffled, at every size",
     "online_cyclic_lower", ("table1", "table1_pretrained_ladder")),
    ("Fig. 2a", "fig2a_pretrained_sizes", "recovery grows with pre-trained model size", "increasing",
     ("fig2a_pretrained_sizes", "fig2a_pretrained_ladder")),
    ("Fig. 2b", "fig2b_random_sizes", "random-init models recover too, more when larger", "increasing",
     ("fig2b_random_sizes",)),
    ("Fig. 3a", "fig3a_width", "recovery needs enough width (≥ 512 at 1B depth)", "increasing",
     ("fig3a_width",)),
    ("Fig. 3b", "fig3b_depth", "recovery needs enough depth (≥ 8 blocks)", "increasing", ("fig3b_depth",)),
    ("App. B.3", "appB3_heads", "the number of attention heads matters little", "flat", ("appB3_heads",)),
    ("Fig. 4a", "fig4a_mask", "masking weakens recovery, which persists", "decreasing_positive",
     ("fig4a_mask",)),
    ("Fig. 4b", "fig4b_shift", "window shifts weaken recovery, which persists", "decreasing_positive",
     ("fig4b_shift",)),
    ("Fig. 5a", "fig5a_n_docs", "recovery at every T, even 200 documents", "positive", ("fig5a_n_docs",)),
    ("Fig. 5b", "fig5b_steps", "more steps per document, more recovery", "increasing", ("fig5b_steps",)),
    ("Fig. 5c", "fig5c_context", "longer context, less recovery at fixed M", "decreasing",
     ("fig5c_context",)),
    ("Fig. 5d", "fig5d_frozen", "more frozen blocks, less recovery", "decreasing",
     ("fig5d_frozen", "fig5d_frozen_pretrained_ladder")),
    ("Fig. 6a", "fig6a_optimizer_random", "Adam recovers more than gradient descent (random init)",
     "rs_first_above_rest", ("fig6a_optimizer_random",)),
    ("Fig. 6b", "fig6b_optimizer_pretrained", "Adam recovers more than gradient descent (pre-trained)",
     "rs_first_above_rest", ("fig6b_optimizer_pretrained", "fig6b_optimizer_pretrained_ladder")),
    ("App. B.1", "appB1_partial_shuffle", "some recovery remains when documents 2..N are shuffled",
     "positive", ("appB1_partial_shuffle",)),
    ("App. B.5", "appB5_pretraining_steps", "more pre-training, more recovery", "increasing",
     ("appB5_pretraining_steps", "appB5_pretrained_ladder_steps")),
    ("App. B.7", "appB7_insert", "a repeated block recovers among one-off documents", "positive",
     ("appB7_insert",)),
    ("App. B.11", "appB11_data", "recovery on another dataset (wikitext-103, random init)", "positive",
     ("appB11_data",)),
]  # fmt: skip


def sweep_name(config: Path) -> str:
    return str(tomllib.loads(config.read_text()).get("name", config.stem))


def fmt(value, digits=3) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


# The twins' summaries, kept in the repository: the table is rebuilt from these when the sweep
# folders themselves (gigabytes of stores) are gone.
KEPT = Path("benchmarks/results/twins")


def sweep_report(sweeps: Path, name: str, kept_dir: Path = KEPT) -> Path | None:
    """The twin's sweep.json: from its sweep folder (copied into ``kept_dir``), else the kept copy."""
    report, kept = sweeps / name / "report" / "sweep.json", kept_dir / f"{name}.json"
    if report.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(report.read_text())
    return kept if kept.is_file() else None


def not_measured(twin: Path) -> str:
    """Why a twin has no numbers: it needs the hub (a Pythia checkpoint or a hub dataset, not
    reachable here), or it was not run yet."""
    text = twin.read_text()
    for needs in ("EleutherAI/", "Salesforce/"):
        if needs in text:
            return f"not measured here: needs `{needs}…` from the hub (run it where the network is)"
    return "not yet measured"


# The equivalence margin of "matters little" claims, in recovery-score units: a difference of the
# means inside ±MARGIN (two one-sided tests at 5%, i.e. the 90% interval inside it) counts as none.
MARGIN = 0.05

# The metric each twin is judged on: App. B.1 plots x_1's loss curve, so its twin reads x_1's RS.
METRIC = {"appB1_partial_shuffle": "first_doc_recovery_score"}


def final_rs(point: dict, metric: str = "final_recovery_score") -> tuple[float | None, float | None, int]:
    s = point.get(metric) or {}
    return s.get("mean"), s.get("std"), int(s.get("n") or 0)


def value_of(point: dict) -> str:
    return point["label"]


def per_seed(point: dict, metric: str = "final_recovery_score") -> dict[int, float]:
    """seed -> value of ``metric`` (NaN where undefined)."""
    values = (point.get(metric) or {}).get("per_seed") or []
    return {s: (math.nan if v is None else float(v)) for s, v in zip(point.get("seeds", []), values)}


def order_of(options: dict) -> str | None:
    """The schedule order a point sets (plain or inside a linked factor), if it sets one."""
    for key, value in options.items():
        if key == "schedule.order":
            return value
        if isinstance(value, dict) and "schedule.order" in value:
            return value["schedule.order"]
    return None


def is_control(point: dict) -> bool:
    """A matched shuffled control: added by ``control = "shuffle"``, or a grid point whose order is
    "shuffle" (Fig. 1, App. B.1, B.7 put it in the grid; same seed = same initialisation)."""
    return bool(point.get("control")) or order_of(point["options"]) == "shuffle"


def control_of(summary: dict, point: dict) -> dict | None:
    """The point's matched shuffled control in the same sweep: the ``control = "shuffle"`` twin
    with its options, else the grid's shuffle point (the only one, or the one agreeing on every
    factor other than the order)."""
    points = summary["points"]
    twins = [p for p in points if p.get("control") and p["options"] == point["options"]]
    if twins:
        return twins[0]
    shuffled = [p for p in points if not p.get("control") and order_of(p["options"]) == "shuffle"]
    if len(shuffled) == 1:
        return shuffled[0]
    same = [
        p
        for p in shuffled
        if all(p["options"].get(k) == v for k, v in point["options"].items() if order_of({k: v}) is None)
    ]
    return same[0] if len(same) == 1 else None


# Factor order for model names: non-embedding parameters 12·d²·L of the Pythia-shaped presets (the
# vocabulary differs between the twin and the real Pythia, so the names' "14m" does not order them).
def preset_size(name: str) -> float | None:
    # benchmarks normally use the public API only; the presets' shapes are the one thing needed here
    from arprobe.models.text import PYTHIA_PRESETS

    preset = PYTHIA_PRESETS.get(str(name))
    if preset is None:
        return None
    return 12.0 * preset["hidden_size"] ** 2 * preset["num_hidden_layers"]


def named_size(name: str) -> float | None:
    """A size written at the end of a name: ".../700k", "pythia-70m", ".../1.4b"."""
    m = re.search(r"(\d+(?:\.\d+)?)([kmb])$", str(name).lower())
    return float(m.group(1)) * {"k": 1e3, "m": 1e6, "b": 1e9}[m.group(2)] if m else None


def factor_key(value):
    """Where a factor value sits on its axis: numbers by value, model names by size; None when the
    values have no order (optimizers, linked tables), which keeps the grid's order."""
    if isinstance(value, bool) or isinstance(value, dict):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return preset_size(value) or named_size(value)


def in_factor_order(points: list[dict]) -> list[dict]:
    """The points sorted along their one varying factor (grid order when it has no order)."""
    keys = [factor_key(next(iter(p["options"].values()))) if len(p["options"]) == 1 else None for p in points]
    if any(k is None for k in keys):
        return list(points)
    return [points[i] for i in sorted(range(len(points)), key=lambda i: keys[i])]


def seed_table(points: list[dict], metric: str, controls: list[dict] | None) -> tuple[np.ndarray, list[int]]:
    """[seed, point] of ``metric`` over the seeds every point (and its control) has; with
    ``controls``, each value minus its control's at the same seed (the paired ΔRS)."""
    tables = [per_seed(p, metric) for p in points]
    if controls is not None:
        tables += [per_seed(c, metric) for c in controls]
    seeds = sorted(set.intersection(*(set(t) for t in tables))) if tables else []
    values = np.array([[per_seed(p, metric)[s] for s in seeds] for p in points], dtype=float).T
    if controls is not None:
        values = values - np.array([[per_seed(c, metric)[s] for s in seeds] for c in controls], dtype=float).T
    return values.reshape(len(seeds), len(points)), seeds


def measured_text(summary: dict, check: str, metric: str = "final_recovery_score") -> str:
    """What the twin measured, mean ± std over seeds per point (grid order)."""
    if check == "online_cyclic_lower" and summary.get("table1"):
        parts = []
        for row in summary["table1"]["rows"]:
            cyc, shu = row["orders"]["cyclic"], row["orders"]["shuffle"]
            parts.append(
                f"{row['label'] or 'all'}: cyclic {fmt(cyc['mean'])} ± {fmt(cyc['std'])}, "
                f"shuffle {fmt(shu['mean'])} ± {fmt(shu['std'])}"
            )
        return "online loss " + "; ".join(parts)
    who = "x_1's " if metric == "first_doc_recovery_score" else ""
    if not any(p.get(metric) for p in summary["points"]):  # a summary written before the metric existed
        return f"{who}RS not in this summary (written before it was recorded): re-run the twin"
    parts = []
    epoch = None
    for p in summary["points"]:
        mean, std, n = final_rs(p, metric)
        epoch = (p.get(metric) or {}).get("epoch", epoch)
        parts.append(f"{value_of(p)}: {fmt(mean)} ± {fmt(std)} (n={n})")
    return f"{who}RS({epoch}) " + "; ".join(parts)


def interval_text(d: Interval, unit: str = "") -> str:
    return f"{fmt(d.mean)}{unit} [{fmt(d.low)}, {fmt(d.high)}] (n={d.n})"


def needs_text(d: Interval) -> str:
    n = seeds_needed(d.mean, d.std)
    return f"; about {n} seeds would decide it at this spread" if n else ""


def trend_verdict(points: list[dict], metric: str, controls, sign: int) -> tuple[str, str]:
    """(yes/no/inconclusive/partly, why) of a monotone claim (sign +1: rises along the factor)."""
    values, _ = seed_table(points, metric, controls)
    slope = slope_interval(values)
    what = "ΔRS vs control" if controls is not None else "RS"
    text = f"per-seed slope of {what} on the factor's rank {interval_text(slope, '/step')}"
    against = []
    for i in range(1, len(points)):
        step = paired_difference(values[:, i - 1], values[:, i])
        if step.sign() == -sign:
            against.append(f"{value_of(points[i - 1])} → {value_of(points[i])} {interval_text(step)}")
    if slope.sign() == -sign:
        return "no", text
    if slope.sign() == 0:
        return "inconclusive", text + needs_text(slope)
    if against:
        return "partly", f"{text}, but against it: {'; '.join(against)}"
    return "yes", text


def persists_verdict(summary: dict, points: list[dict], metric: str) -> tuple[str, str]:
    """(verdict, why) of "recovery remains / persists / at every point": the paired ΔRS of every
    point against its matched shuffled control, never RS > 0 (RS ≥ 0 by construction)."""
    controls = [control_of(summary, p) for p in points]
    if any(c is None for c in controls):
        return (
            "inconclusive",
            "no matched shuffled control to judge recovery against (RS ≥ 0 by construction)",
        )
    parts, signs, needs = [], [], []
    for p, c in zip(points, controls):
        mine, theirs = per_seed(p, metric), per_seed(c, metric)
        seeds = sorted(set(mine) & set(theirs))
        d = paired_difference([theirs[s] for s in seeds], [mine[s] for s in seeds])
        parts.append(f"{value_of(p)}: ΔRS {interval_text(d)}")
        signs.append(d.sign())
        if d.sign() == 0:
            needs.append(seeds_needed(d.mean, d.std) or 0)
    text = "vs the matched shuffled control, " + "; ".join(parts)
    if any(s < 0 for s in signs):
        return "no", text
    if all(s > 0 for s in signs):
        return "yes", text
    need = max(needs, default=0)
    return "inconclusive", text + (f"; about {need} seeds would decide it at this spread" if need else "")


def verdict(summary: dict, check: str, metric: str = "final_recovery_score") -> str:
    """The row's verdict and why, from seed-paired statistics (the rule is in the README)."""
    if check == "online_cyclic_lower":
        rows = (summary.get("table1") or {}).get("rows", [])
        if not rows:
            return "inconclusive: no Table-1 comparison in the summary"
        signs, parts = [], []
        for row in rows:
            d = row["differences"].get("shuffle", {})
            lo, hi = d.get("ci_low"), d.get("ci_high")
            sign = 0 if lo is None or hi is None else (1 if lo > 0 else -1 if hi < 0 else 0)
            signs.append(sign)
            parts.append(
                f"{row['label'] or 'all'} {fmt(d.get('mean'))} [{fmt(lo)}, {fmt(hi)}] (n={d.get('n', 0)})"
            )
        word = "yes" if all(s > 0 for s in signs) else "no" if any(s < 0 for s in signs) else "inconclusive"
        return f"{word}: shuffle − cyclic online loss, paired by seed: {'; '.join(parts)}"
    points = [p for p in summary["points"] if not is_control(p)]
    if check == "rs_first_above_rest":
        first, signs, parts = summary["points"][0], [], []
        mine = per_seed(first, metric)
        for other in summary["points"][1:]:
            theirs = per_seed(other, metric)
            seeds = sorted(set(mine) & set(theirs))
            d = paired_difference([theirs[s] for s in seeds], [mine[s] for s in seeds])
            signs.append(d.sign())
            parts.append(
                f"{value_of(first)} − {value_of(other)} {interval_text(d)}"
                + (needs_text(d) if d.sign() == 0 else "")
            )
        word = "yes" if all(s > 0 for s in signs) else "no" if any(s < 0 for s in signs) else "inconclusive"
        return f"{word}: RS paired by seed, {'; '.join(parts)}"
    points = in_factor_order(points)
    if check == "positive":
        word, why = persists_verdict(summary, points, metric)
        return f"{word}: {why}"
    if check == "flat":
        first, parts, flags = points[0], [], []
        for other in points[1:]:
            a, b = per_seed(first, metric), per_seed(other, metric)
            seeds = sorted(set(a) & set(b))
            e = equivalence_test([a[s] for s in seeds], [b[s] for s in seeds], MARGIN)
            flags.append("eq" if e.equivalent else "diff" if e.different else "?")
            parts.append(f"{value_of(other)} − {value_of(first)} 90% {interval_text(e.interval)}")
        word = "yes" if all(f == "eq" for f in flags) else "no" if "diff" in flags else "inconclusive"
        return f"{word}: equivalence (TOST) within ±{MARGIN} RS: {'; '.join(parts)}"
    if check in ("increasing", "decreasing", "decreasing_positive"):
        sign = 1 if check == "increasing" else -1
        controls = [control_of(summary, p) for p in points]
        controls = controls if all(c is not None and c.get("control") for c in controls) else None
        word, why = trend_verdict(points, metric, controls, sign)
        if check != "decreasing_positive":
            return f"{word}: {why}"
        still, still_why = persists_verdict(summary, points, metric)
        if "no" in (word, still):
            combined = "no"
        elif still == "yes" and word in ("yes", "partly"):
            combined = word
        else:
            combined = "inconclusive"
        return f"{combined}: weakens — {word}: {why}; persists — {still}: {still_why}"
    raise AssertionError(check)


def stale_note(summary: dict, twin: Path) -> str:
    """ " (kept from an earlier version …)" when the summary was measured with other epochs or fewer
    seeds than the twin's file now asks for; "" when it matches."""
    spec = tomllib.loads(twin.read_text())
    epochs = int(spec.get("schedule", {}).get("epochs", spec.get("epochs", 0)) or 0)
    seeds = len(spec.get("seeds", []))
    measured = [(p.get("final_recovery_score") or {}).get("epoch") for p in summary["points"]]
    n = min((p["n"] for p in summary["points"]), default=0)
    old_epochs = next((e + 1 for e in measured if e), None)
    if (epochs and old_epochs and old_epochs != epochs) or n < seeds:
        return (
            f" (measured by an earlier version of the twin: E={old_epochs}, {n} seeds; the file now asks "
            f"for E={epochs}, {seeds} seeds: re-run it)"
        )
    return ""


def build_table(sweeps: Path, configs: Path = Path("configs"), kept: Path = KEPT) -> str:
    lines = [
        "| paper | sweep (paper scale) | CPU twin | the paper's claim "
        "| the CPU twin measured (mean ± std over seeds) | agrees? |",
        "|---|---|---|---|---|---|",
    ]
    for figure, key, claim, check, twins in ROWS:
        paper = configs / "paper" / f"sweep_{key}.toml"
        for i, twin_id in enumerate(twins):
            twin = configs / "cpu" / "sweeps" / f"{twin_id}.toml"
            report = sweep_report(sweeps, sweep_name(twin), kept)
            if report is not None:
                summary = json.loads(report.read_text())
                metric = METRIC.get(twin_id, "final_recovery_score")
                measured = measured_text(summary, check, metric) + stale_note(summary, twin)
                agrees = verdict(summary, check, metric)
            else:
                measured, agrees = not_measured(twin), "—"
            first = f"{figure} | `{paper}`" if i == 0 else "〃 | 〃"
            lines.append(f"| {first} | `{twin}` | {claim if i == 0 else '〃'} | {measured} | {agrees} |")
    return "\n".join(lines)


def replace_between_markers(text: str, table: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", default="sweeps", help="folder holding the twins' sweep folders")
    parser.add_argument("--readme", default="docs/reproduction.md")
    parser.add_argument("--print", action="store_true", help="print the table, do not touch the README")
    args = parser.parse_args(argv)
    table = build_table(Path(args.sweeps))
    if args.print:
        print(table)
        return
    readme = Path(args.readme)
    readme.write_text(replace_between_markers(readme.read_text(), table))
    print(f"wrote the paper table into {readme}")


if __name__ == "__main__":
    main()
