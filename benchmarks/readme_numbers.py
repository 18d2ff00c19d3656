"""The README's numbers for the embedded default, written from a kept sweep report (never by hand).

    python -m benchmarks.readme_numbers [--report benchmarks/results/twins/fig1-cpu.json] [--readme README.md]

The source is the Fig. 1 twin's ``sweep.json``: the embedded default in the paper's E = 5, every seed
with its matched shuffled control (``arprobe sweep configs/cpu/sweeps/fig1.toml`` then
``arprobe analyze sweeps/fig1-cpu``, copied into ``benchmarks/results/twins/``). The block replaces
the lines between ``<!-- default-numbers:start -->`` and ``<!-- default-numbers:end -->``.
"""

import argparse
import json
from pathlib import Path

START, END = "<!-- default-numbers:start -->", "<!-- default-numbers:end -->"


def interval_text(entry: dict) -> str:
    return f"{entry['mean']:+.3f} [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]"


def build_block(summary: dict) -> str:
    """A table: the run and its control (mean ± std over seeds) and their paired difference (95% CI)."""
    run, control = summary["points"][0], summary["points"][1]
    versus = run["versus_control"]
    rs, online = run["final_recovery_score"], run["online_loss"]
    rs_c, online_c = control["final_recovery_score"], control["online_loss"]
    first, last = online["epochs"]
    return "\n".join(
        [
            f"| {run['n']} seeds, E = {last} | RS({rs['epoch']}) | online loss, epochs {first}..{last} |",
            "|---|---|---|",
            f"| cyclic (the run) | {rs['mean']:.3f} ± {rs['std']:.3f} "
            f"| {online['mean']:.3f} ± {online['std']:.3f} |",
            f"| shuffled control | {rs_c['mean']:.3f} ± {rs_c['std']:.3f} "
            f"| {online_c['mean']:.3f} ± {online_c['std']:.3f} |",
            f"| run − control, paired by seed (95% CI) | {interval_text(versus['final_recovery_score'])} "
            f"| {interval_text(versus['online_loss'])} |",
        ]
    )


def replace_block(text: str, block: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", default="benchmarks/results/twins/fig1-cpu.json")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args(argv)
    block = build_block(json.loads(Path(args.report).read_text()))
    readme = Path(args.readme)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    readme.write_text(replace_block(text, block))
    print(f"wrote the default run's numbers into {readme}")


if __name__ == "__main__":
    main()
