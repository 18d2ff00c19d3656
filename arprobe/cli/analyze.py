"""`arprobe analyze [RUN ...] [--probe NAME ...]`: run probes, write the report, print the headline numbers.

One run: every probe (or those named) into ``<run>/report``. Several runs: probes that compare
runs (online_loss) run once over all of them into ``--out`` (default ``./report``); the others
run on each run into its own report; and the runs, grouped by config minus seed, are aggregated
over seeds into ``<out>/groups/`` like a sweep. No run: the probes that need none (toy_model) into
``--out`` (default ``./report``). A sweep folder (one with manifest.json): the aggregate report
over seeds and grid factors into ``<sweep>/report`` (sweep.json, figures, index.html); probes
named with --probe run on every run and their headline numbers are aggregated per point.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path

from arprobe.errors import UserError


def command_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="run probes on runs and write report/<probe>/result.json, figures and report/index.html",
        description="Run probes (all whose data the run holds, by default) and write the report. "
        "Probes that lack data are skipped with the reason; a failing probe does not stop the others.",
        epilog="Examples: arprobe analyze runs/cyclic;  arprobe analyze runs/cyclic --probe pca_weights "
        "--option pca_weights.detrend=none;  "
        "arprobe analyze runs/cyclic-s* runs/shuffle-s* --probe online_loss;  "
        "arprobe analyze --probe toy_model;  arprobe analyze sweeps/table1 --probe recovery_score",
    )
    p.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="run folder(s) (runs/<name>) or their run.h5, or one sweep folder",
    )
    p.add_argument(
        "--probe",
        action="append",
        default=[],
        metavar="NAME",
        help="probe to run (repeat, or comma-separate); default: all",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="PROBE.KEY=VALUE",
        help="a probe option, e.g. pairwise_recovery.episode=20 (repeatable)",
    )
    p.add_argument(
        "--config", metavar="FILE.toml", help="probe options as TOML, one [probe_name] section per probe"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="report folder (default: <run>/report; ./report without a run or with several)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (none at all)")
    p.add_argument(
        "--probe-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop a probe that runs longer than this and report it as failed (default: 1800)",
    )
    p.set_defaults(func=analyze_command)
    return p


def parse_option_flags(flags: list[str]) -> dict[str, dict[str, str]]:
    """["probe.key=value", ...] -> {"probe": {"key": "value"}}."""
    options: dict[str, dict[str, str]] = {}
    for flag in flags:
        key, eq, value = flag.partition("=")
        probe, dot, name = key.strip().partition(".")
        if not eq or not dot or not probe or not name:
            raise UserError(f"Option '{flag}' is not PROBE.KEY=VALUE (e.g. pca_weights.detrend=none).")
        options.setdefault(probe, {})[name.strip()] = value
    return options


def read_option_file(path: str) -> dict[str, dict]:
    """A TOML file with one table per probe: [pca_weights] detrend = "none"."""
    try:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"Config file '{path}' does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"Config file '{path}' is not valid TOML: {exc}.") from None
    stray = [k for k, v in table.items() if not isinstance(v, dict)]
    if stray:
        raise UserError(
            f"Config file '{path}': put '{stray[0]}' under the section of its probe, e.g. [pca_weights]."
        )
    return table


def merge_options(file_options: dict[str, dict], flag_options: dict[str, dict], registry) -> dict[str, dict]:
    """Flags over file; every probe named must exist and every key must be one of its options."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.probes.base import Probe

    merged: dict[str, dict] = {}
    for source in (file_options, flag_options):
        for probe, values in source.items():
            merged.setdefault(probe, {}).update(values)
    for probe, values in merged.items():
        cls = registry.load(probe)
        shell = cls.__new__(cls)  # checked without running a plugin's constructor (it runs isolated)
        shell.name = probe
        Probe.resolve_options(shell, values)  # raises a one-line error for bad names or values
    return merged


def selected_probes(flags: list[str], registry) -> list[str] | None:
    names = [n.strip() for flag in flags for n in flag.split(",") if n.strip()]
    for name in names:
        if name not in registry:
            registry.load(name)  # raises: Unknown probe 'x'. Did you mean ...? Available: ...
    return list(dict.fromkeys(names)) or None


def probe_timeout(args) -> float:
    # lazy: keeps `arprobe --help` fast
    from arprobe.probes.runner import DEFAULT_TIMEOUT

    timeout = DEFAULT_TIMEOUT if args.probe_timeout is None else args.probe_timeout
    if not timeout > 0:
        raise UserError(f"--probe-timeout must be a positive number of seconds, got {args.probe_timeout:g}.")
    return timeout


def probe_ref(registry, name: str):
    """(ProbeRef, "") for a probe whose class loads, else (None, the one-sentence reason). Only the
    class is loaded here: its constructor runs in the probe's own process."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.probes.runner import ProbeRef

    try:
        return ProbeRef.of(name, registry.load(name)), ""
    except UserError as exc:
        return None, str(exc)
    except (Exception, SystemExit) as exc:  # an import that exits or raises oddly names the plugin
        return None, f"Could not load probe plugin '{name}': {type(exc).__name__}: {exc}".rstrip(": ") + "."


def analyze_command(args, extra) -> int:
    # lazy: keeps `arprobe --help` fast
    from arprobe.probes.registry import default_registry
    from arprobe.sweep.manifest import is_sweep_dir

    registry = default_registry()
    explicit = selected_probes(args.probe, registry)
    options = merge_options(
        read_option_file(args.config) if args.config else {}, parse_option_flags(args.option), registry
    )
    sweeps = [r for r in args.runs if is_sweep_dir(r)]
    if sweeps and len(args.runs) > 1:
        raise UserError(f"'{sweeps[0]}' is a sweep folder; analyze one sweep at a time, without other runs.")
    if sweeps:
        return analyze_sweep(Path(sweeps[0]), args, explicit or [], options, registry)
    timeout = probe_timeout(args)
    probes, broken = [], []
    for name in explicit or registry.names():
        ref, reason = probe_ref(registry, name)
        if ref is None:  # a plugin that does not load is a failed probe, not the end of the analysis
            broken.append((name, reason))
        else:
            probes.append(ref)
    printer = OutcomePrinter(explicit)
    paths, jobs = analysis_jobs(args, probes, explicit)
    if explicit is None:  # "every probe" includes the plugins refused for their names: named, failed
        for name, _, reason in registry.refused_names():
            printer.refused(name, reason)
    for store_paths, report_dir, job_probes in jobs:
        run_job(store_paths, report_dir, job_probes, broken, options, printer, timeout, args.no_progress)
    if len(paths) > 1:
        # lazy: keeps `arprobe --help` fast
        from arprobe.sweep.report import groups_from_runs

        factors, grid, groups = groups_from_runs(paths)
        out = Path(args.out or "report") / "groups"
        summary = write_aggregate(out, f"{len(paths)} runs in {len(groups)} group(s)", factors, grid, groups)
        print_aggregate(summary)
        print(f"report: {out / 'index.html'}")
    return 1 if printer.bad else 0


def analysis_jobs(args, probes: list, explicit) -> tuple[list[Path], list[tuple[list[Path], Path, list]]]:
    """(the run stores given, [(stores, report folder, probes)]): no run: the probes that need none;
    one run: every probe into its report; several: each run's own report, and the multi-run probes
    over all of them."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.storage import RunStore
    from arprobe.storage.reader import resolve_store_path

    if not args.runs:
        needing = [p.name for p in probes if p.needs_store]
        if explicit and needing:
            raise UserError(
                f"Probe '{needing[0]}' reads a run; give one: arprobe analyze RUN --probe {needing[0]}."
            )
        return [], [([], Path(args.out or "report"), [p for p in probes if not p.needs_store])]
    paths = [resolve_store_path(r) for r in args.runs]
    for path in paths:  # a malformed store is refused once, before any report is written
        RunStore(path).close()
    if len(paths) == 1:
        return paths, [([paths[0]], Path(args.out) if args.out else paths[0].parent / "report", probes)]
    single = [p for p in probes if not p.multi_run]
    multi = [p for p in probes if p.multi_run]
    jobs = []
    if single:
        for path in paths:
            folder = (Path(args.out) / path.parent.name) if args.out else path.parent / "report"
            jobs.append(([path], folder, single))
    if multi:
        jobs.append((paths, Path(args.out or "report"), multi))
    return paths, jobs


def run_job(store_paths, report_dir: Path, probes, broken, options, printer, timeout, no_progress) -> None:
    """One report: the finding (one run), the plugins that did not load as failed, then the probes."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.probes.runner import failed_outcome, write_report
    from arprobe.storage import RunStore

    stores = [RunStore(p) for p in store_paths]
    try:
        label = ", ".join(str(p.parent) for p in store_paths) or "no run"
        print(f"analyze {label} -> {report_dir}")
        if len(stores) == 1:  # the finding first; every number is in the report
            print_finding(stores[0])
        for name, reason in broken:
            printer(failed_outcome(name, reason, report_dir))
        write_report(
            stores, report_dir, probes, options, on_outcome=printer, timeout=timeout, progress=not no_progress
        )
        print(f"report: {report_dir / 'index.html'}")
    finally:
        for s in stores:
            s.close()


def print_finding(store) -> None:
    """The run's finding and key numbers with their intervals (report.summary.console_lines)."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.report.summary import console_lines, one_line, run_summary

    try:
        print("\n".join(console_lines(run_summary(store))))
    except Exception as exc:  # the headline must not cost the analysis
        print(f"finding: unavailable ({one_line(exc)})")
    sys.stdout.flush()


def write_aggregate(out: Path, title: str, factors, grid, groups, **kwargs) -> dict:
    # lazy: keeps `arprobe --help` fast
    from arprobe.report.figures import set_figure_subtitle
    from arprobe.sweep.report import write_sweep_report

    set_figure_subtitle(title)  # the aggregate figures say which sweep or runs they summarise
    try:
        return write_sweep_report(out, title=title, factors=factors, grid=grid, groups=groups, **kwargs)
    finally:
        set_figure_subtitle("")


def analyze_sweep(sweep_dir: Path, args, probe_names: list[str], options: dict, registry) -> int:
    """The aggregate report of a sweep folder, with the named probes run on every run."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.sweep.manifest import read_manifest
    from arprobe.sweep.report import groups_from_manifest

    manifest = read_manifest(sweep_dir)
    factors, grid, groups = groups_from_manifest(sweep_dir, manifest)
    probes = []
    for name in probe_names:
        ref, reason = probe_ref(registry, name)
        if ref is None:
            raise UserError(reason)
        ref.progress = False  # the sweep's own bar would be drowned by one per run
        probes.append(ref)
    out = Path(args.out) if args.out else sweep_dir / "report"
    printer = OutcomePrinter(probe_names, quiet=True)
    print(f"analyze sweep {manifest['name']} ({len(manifest['points'])} runs) -> {out}")
    summary = write_aggregate(
        out,
        f"{manifest['name']} ({sweep_dir})",
        factors,
        grid,
        groups,
        probes=probes,
        probe_options=options,
        on_outcome=printer,
        run_links=Path(os.path.relpath(sweep_dir / "runs", out)),
    )
    print_aggregate(summary)
    if printer.bad:
        print(f"arprobe analyze: {printer.bad} probe run(s) failed; see the runs' reports.", file=sys.stderr)
    print(f"report: {out / 'index.html'}")
    return 1 if printer.bad else 0


def print_aggregate(summary: dict) -> None:
    """The sweep's finding, then one line per point: seeds, final recovery score and online loss,
    mean ± std (with a caution under 3 seeds)."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.report.pages import MIN_SEEDS, mean_pm_std, small_n_caution, sweep_finding
    from arprobe.sweep.report import table1_markdown

    print(f"finding: {sweep_finding(summary)}")
    for e in summary["points"]:
        line = f"  {e['label']:<36} n={e['n']}"
        if e["n"]:
            final = e["final_recovery_score"]
            defined = f" (defined for {final['n']} of {e['n']})" if final["n"] < e["n"] else ""
            line += f"  RS({final['epoch']}) {mean_pm_std(final)}{defined}"
            line += f"  online loss {mean_pm_std(e['online_loss'], 4)}"
        if 0 < e["n"] < MIN_SEEDS:
            line += f"  ({small_n_caution(e['n'])})"
        if e["excluded"]:
            line += f"  ({len(e['excluded'])} run(s) not complete, left out)"
        print(line)
    if summary.get("table1"):
        print(table1_markdown(summary["table1"]))


class OutcomePrinter:
    """Prints one line per probe as it finishes, headline numbers indented below."""

    def __init__(self, explicit: list[str] | None, quiet: bool = False):
        self.explicit = set(explicit or [])
        self.bad = 0
        self.quiet = quiet  # only failures (a sweep runs every probe on every run)

    def refused(self, name: str, reason: str) -> None:
        """A plugin refused for its name: failed like any broken plugin, but given no report
        folder (its name could climb out of the report)."""
        self.bad += 1
        print(f"  {name!r:<28} {'FAILED':<8} {reason}", file=sys.stderr)

    def __call__(self, outcome) -> None:
        # lazy: keeps `arprobe --help` fast
        from arprobe.report.pages import format_value

        if outcome.status == "failed" or (outcome.status == "skipped" and outcome.probe in self.explicit):
            self.bad += 1
        if self.quiet and outcome.status == "ok":
            return
        tag = {"ok": "ok", "skipped": "skipped", "failed": "FAILED"}[outcome.status]
        line = f"  {outcome.probe:<28} {tag:<8}"
        if outcome.status == "ok":
            print(f"{line} {outcome.seconds:6.1f} s")
            if outcome.probe in self.explicit:  # asked for by name: its numbers; all: in the report
                for key, value in outcome.headline.items():
                    print(f"      {key}: {format_value(value)}")
        else:
            stream = sys.stderr if outcome.status == "failed" else sys.stdout
            print(f"{line} {outcome.reason}", file=stream)
        sys.stdout.flush()
