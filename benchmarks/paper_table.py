"""The README's paper-figure table, written from the sweep reports (never by hand).

    python -m benchmarks.paper_table [--sweeps sweeps] [--readme README.md] [--print]

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
import tomllib
from pathlib import Path

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


def final_rs(point: dict) -> tuple[float | None, float | None, int]:
    s = point.get("final_recovery_score") or {}
    return s.get("mean"), s.get("std"), int(s.get("n") or 0)


def value_of(point: dict) -> str:
    return point["label"]


def measured_text(summary: dict, check: str) -> str:
    if check == "online_cyclic_lower" and summary.get("table1"):
        parts = []
        for row in summary["table1"]["rows"]:
            orders = row["orders"]
            d = row["differences"].get("shuffle", {})
            cyc, shu = orders["cyclic"], orders["shuffle"]
            interval = f"[{fmt(d.get('ci_low'))}, {fmt(d.get('ci_high'))}]"
            parts.append(
                f"{row['label'] or 'all'}: cyclic {fmt(cyc['mean'])} ± {fmt(cyc['std'])}, "
                f"shuffle {fmt(shu['mean'])} ± {fmt(shu['std'])}, "
                f"Δ {fmt(d.get('mean'))} {interval} (n={d.get('n', 0)})"
            )
        return "; ".join(parts)
    parts = []
    epoch = None
    for p in summary["points"]:
        mean, std, n = final_rs(p)
        epoch = (p.get("final_recovery_score") or {}).get("epoch", epoch)
        parts.append(f"{value_of(p)}: {fmt(mean)} ± {fmt(std)} (n={n})")
    return f"RS({epoch}) " + "; ".join(parts)


def against_trend(means: list[float], stds: list[float], sign: int) -> str:
    """ " (not throughout: a → b)" for each neighbouring pair of points that moves against the
    claimed direction by more than the larger of their stds; "" when none does."""
    steps = [
        f"{fmt(means[i - 1])} → {fmt(means[i])}"
        for i in range(1, len(means))
        if sign * (means[i] - means[i - 1]) < -max(stds[i], stds[i - 1])
    ]
    return f" (not throughout: {', '.join(steps)})" if steps else ""


def verdict(summary: dict, check: str) -> str:
    points = summary["points"]
    means = [final_rs(p)[0] for p in points]
    if any(m is None for m in means) and check != "online_cyclic_lower":
        return "no: a recovery score is undefined (no forgetting to recover from)"
    if check == "online_cyclic_lower":
        rows = (summary.get("table1") or {}).get("rows", [])
        lows = [r["differences"].get("shuffle", {}).get("ci_low") for r in rows]
        ok = bool(lows) and all(low is not None and low > 0 for low in lows)
        return "yes: every 95% interval of shuffle − cyclic is above 0" if ok else "no: an interval reaches 0"
    stds = [final_rs(p)[1] or 0.0 for p in points]
    if check == "increasing":
        ok = means[-1] > means[0]
        return f"{'yes' if ok else 'no'}: {fmt(means[0])} → {fmt(means[-1])}{against_trend(means, stds, 1)}"
    if check in ("decreasing", "decreasing_positive"):
        ok = means[-1] < means[0] and (check == "decreasing" or means[-1] > 0)
        return f"{'yes' if ok else 'no'}: {fmt(means[0])} → {fmt(means[-1])}{against_trend(means, stds, -1)}"
    if check == "positive":
        ok = all(m > 0 for m in means)
        return f"{'yes' if ok else 'no'}: smallest mean {fmt(min(means))}"
    if check == "rs_first_above_rest":
        ok = all(means[0] > m for m in means[1:])
        return f"{'yes' if ok else 'no'}: {fmt(means[0])} vs {', '.join(fmt(m) for m in means[1:])}"
    if check == "flat":
        spread = max(means) - min(means)
        noise = max((final_rs(p)[1] or 0.0) for p in points)
        return (
            f"{'yes' if spread <= noise else 'no'}: spread of means {fmt(spread)}, largest std {fmt(noise)}"
        )
    raise AssertionError(check)


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
                n = min((p["n"] for p in summary["points"]), default=0)
                measured = measured_text(summary, check)
                agrees = verdict(summary, check) + ("" if n >= 3 else f" (only {n} seed(s))")
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
    parser.add_argument("--readme", default="README.md")
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
