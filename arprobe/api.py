"""The Python API: train, open, analyze and sweep from a script or a notebook.

    import arprobe

    run = arprobe.run(n_docs=5, epochs=3, control="shuffle")   # the CLI's config names
    run.recovery_scores, run.online_loss, run.finding          # the headline numbers
    store = arprobe.open(run.path)                             # the RunStore: every recording
    result = arprobe.analyze(run, probes=["recovery_score"])   # numbers as dicts, figures inline
    result.key_numbers["recovery_score"]                       # value with its 95% interval
    rows = arprobe.sweep("sweep.toml")                         # one row per run (a DataFrame)
    rows = arprobe.load_sweep("sweeps/table1")

Every function goes through the command line's own code: ``run`` through the trainer's
``run_with_control`` (as ``arprobe run``), ``analyze`` and ``sweep`` through the ``arprobe analyze``
and ``arprobe sweep`` commands, so the API and the CLI cannot drift apart. A user error raises
``arprobe.errors.UserError`` with the CLI's one-sentence message.

Heavy modules (torch, h5py, the trainer) are imported inside the functions, on first use: ``import
arprobe`` and ``arprobe --help`` stay fast (tests/trainer/test_python_api.py times neither, but
checks that torch is not imported).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import html
import io
import json
import math
import re
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

from arprobe.errors import UserError
from arprobe.values import flatten

__all__ = [
    "run",
    "resume",
    "open",
    "analyze",
    "sweep",
    "load_sweep",
    "make_config",
    "Run",
    "Analysis",
    "ProbeResult",
    "Figure",
]


# --- configs -----------------------------------------------------------------------------------


def make_config(config=None, **overrides):
    """A checked ``RunConfig`` from defaults, ``config`` and keyword overrides, in that order.

    ``config``: None, a TOML file (path), a dict (nested by section, ``{"model": {"name": ...}}``,
    or with dotted keys, ``{"model.name": ...}``) or a ``RunConfig``. ``overrides``: the keys of
    ``arprobe run`` (leaf names when unique, ``n_docs=5``, ``lr=1e-4``; a section as a dict,
    ``model={"name": "pythia-14m"}``). An unknown key raises ``UserError`` with the CLI's
    did-you-mean sentence.
    """
    # lazy: `import arprobe` loads no torch, numpy or trainer (tests/trainer/test_python_api.py)
    from arprobe.trainer.config import RunConfig, load_config, set_key, validate

    flat = flatten(overrides)
    if isinstance(config, RunConfig):
        cfg = copy.deepcopy(config)
        for key, value in flat.items():
            set_key(cfg, key, value)
        validate(cfg)
        return cfg
    if isinstance(config, dict):
        return load_config(None, {**flatten(config), **flat})
    if config is None or isinstance(config, str | Path):
        return load_config(config, flat)
    raise UserError(
        f"config must be a TOML file, a dict or a RunConfig, got {type(config).__name__}; "
        "or give the options as keywords: arprobe.run(n_docs=5)."
    )


# --- runs --------------------------------------------------------------------------------------


@dataclass
class Run:
    """A trained (or stopped) run: where its store is and its headline numbers.

    ``recovery_scores[n - 1]`` is RS(n), n = 1..E-1 (NaN where undefined); ``online_loss`` is the
    mean online loss over epochs 2..E. ``control`` is the matched shuffled control (``control =
    "shuffle"``) and ``finding`` the one-sentence comparison of the two. ``store`` opens the
    ``RunStore`` (every recording; close it, or use ``with run.store as s:``).
    """

    path: Path  # the run folder (its store is path / "run.h5")
    status: str  # complete | stopped | failed | diverged
    episodes: int  # episodes in the store
    recovery_scores: list[float]
    online_loss: float
    seconds: float = 0.0
    stop_reason: str = ""
    control: Run | None = None
    finding: str = ""

    @classmethod
    def from_result(cls, result, control=None, finding: str = "") -> Run:
        """From the trainer's ``RunResult`` (and its control's)."""
        return cls(
            path=Path(result.path).parent,
            status=result.status,
            episodes=int(result.completed_episodes),
            recovery_scores=[float(x) for x in result.recovery_scores],
            online_loss=float(result.online_loss),
            seconds=float(result.seconds),
            stop_reason=result.stop_reason,
            control=cls.from_result(control) if control is not None else None,
            finding=finding,
        )

    @property
    def store(self):
        """The run's ``RunStore``, opened read-only (also while it still runs)."""
        return open(self.path)

    def analyze(self, probes=None, **options) -> Analysis:
        """``arprobe.analyze(self, probes, **options)``."""
        return analyze(self, probes, **options)

    def _rs_text(self) -> str:
        return ", ".join(
            f"RS({n})={'undefined' if math.isnan(s) else f'{s:.3f}'}"
            for n, s in enumerate(self.recovery_scores, start=1)
        )

    def __repr__(self) -> str:
        text = f"Run('{self.path}', {self.status}, {self.episodes} episodes"
        if self.recovery_scores:
            text += f", {self._rs_text()}"
        if not math.isnan(self.online_loss):
            text += f", online loss {self.online_loss:.4f}"
        if self.control is not None:
            text += f"; control: {self.control!r}"
        return text + ")"

    def _repr_html_(self) -> str:
        rows = [("run", str(self.path)), ("status", f"{self.status}, {self.episodes} episodes")]
        if self.stop_reason:
            rows.append(("stopped", self.stop_reason))
        if self.recovery_scores:
            rows.append(("recovery score per epoch", self._rs_text()))
        if not math.isnan(self.online_loss):
            rows.append(("mean online loss, epochs 2..E", f"{self.online_loss:.4f}"))
        if self.control is not None:
            c = self.control
            rows.append(
                ("control (shuffled)", f"{c.status}; {c._rs_text()}; online loss {c.online_loss:.4f}")
            )
        if self.finding:
            rows.append(("finding", self.finding))
        return _html_table(rows)


def run(config=None, *, callbacks=None, progress: bool = True, overwrite: bool = False, **overrides) -> Run:
    """Train a run as ``arprobe run`` does, and return its ``Run``.

    ``config`` and ``overrides``: see ``make_config`` (``arprobe.run(n_docs=5, epochs=3,
    control="shuffle", out="runs")``). ``callbacks``: objects with any of ``on_start``,
    ``on_step``, ``on_episode``, ``on_end``, each called with a dict of the metrics the store gets
    (``arprobe.trainer.callbacks``); ``report_to="tensorboard"`` (or wandb, mlflow) adds a live
    logger. ``overwrite``: replace an existing store of the same name. A run stopped by Ctrl-C
    (the first one finishes the episode) comes back with status ``stopped``; ``resume`` continues it.
    """
    # lazy: `import arprobe` loads no torch, numpy or trainer (tests/trainer/test_python_api.py)
    from arprobe.trainer.callbacks import check_callbacks
    from arprobe.trainer.control import run_with_control

    cfg = make_config(config, **overrides)
    both = run_with_control(cfg, progress=progress, overwrite=overwrite, callbacks=check_callbacks(callbacks))
    return Run.from_result(both.run, both.control, both.finding)


def resume(path, *, callbacks=None, progress: bool = True, trust_remote_code: bool = False) -> Run:
    """Continue an unfinished run (its folder or run.h5) as ``arprobe run --resume`` does."""
    # lazy: `import arprobe` loads no torch, numpy or trainer (tests/trainer/test_python_api.py)
    from arprobe.trainer.callbacks import check_callbacks
    from arprobe.trainer.control import resume_with_control

    both = resume_with_control(
        path, progress=progress, trust_remote_code=trust_remote_code, callbacks=check_callbacks(callbacks)
    )
    return Run.from_result(both.run, both.control, both.finding)


def open(path):  # noqa: A001 - arprobe.open(path), as the API names it
    """The ``RunStore`` of a run folder (or its run.h5), read-only; its repr shows the path, status
    and T/C/M/E. Close it (``store.close()``) or use it as a context manager."""
    # lazy: `import arprobe` loads no torch, numpy or trainer (tests/trainer/test_python_api.py)
    from arprobe.storage import RunStore

    return RunStore(_store_path(path))


def _store_path(run) -> str:
    if isinstance(run, Run):
        return str(run.path)
    path = getattr(run, "path", None)  # a RunStore
    if path is not None and not isinstance(run, str | Path):
        return str(Path(path).parent)
    return str(run)


# --- analysis ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One figure of a report, held in memory: shows itself in Jupyter (``_repr_png_``)."""

    name: str  # the file name, e.g. "recovery_score.png"
    png: bytes
    data: str = ""  # the numbers drawn, as CSV (the report's <name>.csv), if the probe wrote them

    def _repr_png_(self) -> bytes:
        return self.png

    def save(self, path) -> Path:
        """Write the PNG to ``path``."""
        Path(path).write_bytes(self.png)
        return Path(path)

    def __repr__(self) -> str:
        return f"Figure({self.name!r}, {len(self.png):,} bytes)"


@dataclass
class ProbeResult:
    """One probe's outcome: ``status`` (ok | skipped | failed) and ``reason``; ``headline`` (the
    numbers the report shows first) and ``result`` (everything it computed), plain dicts; its
    figures by file name. Shows itself in Jupyter with its figures."""

    name: str
    status: str
    reason: str = ""
    title: str = ""
    look_for: str = ""
    headline: dict = field(default_factory=dict)
    result: dict | None = None
    options: dict = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def read(cls, folder: Path) -> ProbeResult:
        record = json.loads((folder / "result.json").read_text())
        figures = {}
        for name in record.get("figures") or []:
            png = folder / name
            if png.is_file():
                csv = png.with_suffix(".csv")
                figures[name] = Figure(name, png.read_bytes(), csv.read_text() if csv.is_file() else "")
        return cls(
            name=record.get("probe", folder.name),
            status=record.get("status", "failed"),
            reason=record.get("reason", ""),
            title=record.get("title", ""),
            look_for=record.get("look_for", ""),
            headline=record.get("headline") or {},
            result=record.get("result"),
            options=record.get("options") or {},
            figures=figures,
            seconds=float(record.get("seconds") or 0.0),
        )

    @property
    def figure(self) -> Figure | None:
        """The first figure (most probes draw one)."""
        return next(iter(self.figures.values()), None)

    def __repr__(self) -> str:
        if self.status != "ok":
            return f"ProbeResult({self.name!r}, {self.status}: {self.reason})"
        return f"ProbeResult({self.name!r}, ok, headline={list(self.headline)}, figures={list(self.figures)})"

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title or self.name)}</h4>"]
        if self.status != "ok":
            return parts[0] + f"<p>{html.escape(self.status)}: {html.escape(self.reason)}</p>"
        if self.look_for:
            parts.append(f"<p><i>{html.escape(self.look_for)}</i></p>")
        parts.append(_html_table([(k, _short(v)) for k, v in self.headline.items()]))
        parts.extend(_img(f) for f in self.figures.values())
        return "\n".join(parts)


class Analysis:
    """What ``arprobe.analyze`` found: every probe's ``ProbeResult`` (``analysis.recovery_score``
    or ``analysis["recovery_score"]``), the report's ``summary`` (identity, finding and key numbers
    with intervals per run), for several runs each run's own ``Analysis`` in ``runs``, and for a
    sweep (or several runs' groups) the aggregate ``sweep`` dict and its ``figures``. ``path`` is
    the report folder when ``out=`` kept one (None otherwise: everything is in memory)."""

    def __init__(self, folder: Path, path: Path | None, log: str = ""):
        self.path = path
        self.log = log  # what the analysis printed
        self.probes: dict[str, ProbeResult] = {}
        self.runs: dict[str, Analysis] = {}
        self.summary: dict = _read_json(folder / "summary.json") or {}
        self.sweep: dict | None = _read_json(folder / "sweep.json")
        self.figures = {p.name: Figure(p.name, p.read_bytes()) for p in sorted(folder.glob("*.png"))}
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if (sub / "result.json").is_file():
                self.probes[sub.name] = ProbeResult.read(sub)
            elif sub.name == "groups" and (sub / "sweep.json").is_file():
                groups = Analysis(sub, None)
                self.sweep, self.figures = groups.sweep, {**self.figures, **groups.figures}
            elif (sub / "summary.json").is_file():
                self.runs[sub.name] = Analysis(sub, None)

    @property
    def finding(self) -> str:
        """The finding in one sentence: a sweep's (each point against its matched control), else the
        first run's (with its matched control, when it has one)."""
        if self.sweep and self.sweep.get("points") is not None:
            from arprobe.report.pages import sweep_finding  # the API loads report code on use

            return sweep_finding(self.sweep)
        runs = self.summary.get("runs") or []
        return runs[0].get("finding", "") if runs else ""

    @property
    def key_numbers(self) -> dict:
        """The first run's key numbers: {"recovery_score": {"value", "low", "high", "epoch"}, ...}."""
        runs = self.summary.get("runs") or []
        return runs[0].get("key_numbers", {}) if runs else {}

    @property
    def headlines(self) -> dict[str, dict]:
        """{probe: its headline numbers} of the probes that ran."""
        return {name: p.headline for name, p in self.probes.items() if p.status == "ok"}

    def __getitem__(self, probe: str) -> ProbeResult:
        try:
            return self.probes[probe]
        except KeyError:
            raise KeyError(f"no probe {probe!r} in this analysis; it has {', '.join(self.probes)}") from None

    def __getattr__(self, name: str) -> ProbeResult:
        probes = self.__dict__.get("probes", {})
        if name in probes:
            return probes[name]
        raise AttributeError(f"'Analysis' has no attribute or probe {name!r}")

    def __dir__(self):
        return [*super().__dir__(), *self.probes]

    def __repr__(self) -> str:
        states = ", ".join(f"{n}: {p.status}" for n, p in self.probes.items())
        runs = f", runs={list(self.runs)}" if self.runs else ""
        return f"Analysis({states}{runs})"

    def _repr_html_(self) -> str:
        parts = []
        if self.finding:
            parts.append(f"<p><b>Finding:</b> {html.escape(self.finding)}</p>")
        if self.key_numbers:
            rows = [
                (k, f"{_number(v['value'])} [{_number(v['low'])}, {_number(v['high'])}]")
                for k, v in self.key_numbers.items()
                if isinstance(v, dict) and {"value", "low", "high"} <= set(v)
            ]
            parts.append(_html_table(rows))
        parts.extend(_img(f) for f in self.figures.values())
        parts.extend(p._repr_html_() for p in self.probes.values())
        parts.extend(f"<h3>{html.escape(n)}</h3>{a._repr_html_()}" for n, a in self.runs.items())
        return "\n".join(parts)


def analyze(
    run=None,
    probes=None,
    *,
    out=None,
    timeout: float | None = None,
    progress: bool = False,
    verbose: bool = False,
    **options,
) -> Analysis:
    """Run probes on a run as ``arprobe analyze`` does, and return the ``Analysis``.

    ``run``: a ``Run``, a run folder or run.h5, a ``RunStore``, a list of them (probes that compare
    runs run once over all; the others on each run), a sweep folder (the aggregate over seeds and
    grid factors), or None (the probes that need no run, e.g. ``toy_model``). ``probes``: a name or
    a list of names (default: every probe whose data the run holds). ``options``: per probe, a
    dict of its options (``pairwise_recovery={"episode": 20}``). ``out``: also keep the usual
    report (index.html, figures, result.json) in that folder; without it everything is read into
    memory and no file is left behind. ``verbose``: print what the CLI prints (else in ``.log``).
    """
    targets = [_store_path(r) for r in (run if isinstance(run, list | tuple) else [run] if run else [])]
    names = [probes] if isinstance(probes, str) else list(probes or [])
    with tempfile.TemporaryDirectory(prefix="arprobe-analyze-") as tmp:
        report = Path(out) if out is not None else Path(tmp) / "report"
        argv = ["analyze", *targets, "--out", str(report)]
        for name in names:
            argv += ["--probe", name]
        if options:
            bad = [k for k, v in options.items() if not isinstance(v, dict)]
            if bad:
                raise UserError(
                    f"analyze option '{bad[0]}' must be a dict of that probe's options, e.g. "
                    "pairwise_recovery={'episode': 20}."
                )
            config = Path(tmp) / "options.toml"
            config.write_text(to_toml(options), encoding="utf-8")
            argv += ["--config", str(config)]
        if timeout is not None:
            argv += ["--probe-timeout", str(timeout)]
        if not progress:
            argv.append("--no-progress")
        printed = io.StringIO()
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(printed):
            _command(argv)
        return Analysis(report, report if out is not None else None, printed.getvalue())


# --- sweeps ------------------------------------------------------------------------------------


def sweep(spec, *, out=None, backend: str = "local", dry_run: bool = False, progress: bool = True, **options):
    """Run a sweep as ``arprobe sweep`` does, and return ``load_sweep`` of its folder.

    ``spec``: a sweep file (TOML) or the same as a dict (``{"name": "lr", "seeds": [0, 1],
    "epochs": 3, "grid": {"lr": [1e-3, 1e-4]}}``). ``options``: the command's flags by name
    (``workers=2``, ``threads=1``, ``batch_seeds=8``, ``extend=True``, a backend's own flags);
    a list repeats a flag: ``slurm=["partition=gpu", "time=60"]``; ``out``: the folder of sweep
    folders. Running it again finishes what is unfinished. ``dry_run``: print the plan and the
    estimates, run nothing (returns None).
    """
    # lazy: `import arprobe` loads no torch, numpy or trainer (tests/trainer/test_python_api.py)
    from arprobe.sweep.spec import load_sweep as load_sweep_file

    with tempfile.TemporaryDirectory(prefix="arprobe-sweep-") as tmp:
        if isinstance(spec, dict):
            name = str(spec.get("name") or "sweep")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
                raise UserError(
                    f"the sweep name '{name}' must be a plain folder name (letters, digits, . _ + -)."
                )
            path = Path(tmp) / f"{name}.toml"
            path.write_text(to_toml(spec), encoding="utf-8")
        elif isinstance(spec, str | Path):
            path = Path(spec)
        else:
            raise UserError(f"spec must be a sweep file or a dict, got {type(spec).__name__}.")
        argv = ["sweep", str(path), "--backend", backend]
        if out is not None:
            argv += ["--out", str(out)]
        if dry_run:
            argv.append("--dry-run")
        if not progress:
            argv.append("--no-progress")
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif isinstance(value, list | tuple):  # a repeatable flag: --slurm a=1 --slurm b=2
                for item in value:
                    argv += [flag, str(item)]
            elif value not in (False, None):
                argv += [flag, str(value)]
        with _main_hidden():
            _command(argv)
        if dry_run:
            return None
        loaded = load_sweep_file(path)
        return load_sweep(Path(out or loaded.out or "sweeps") / loaded.name)


def load_sweep(folder):
    """One row per run of a sweep folder: its name, grid options, seed, control, status, episodes,
    wall seconds, RS(n) of every epoch as ``rs_1 .. rs_<E-1>``, ``online_loss`` (epochs 2..E) and
    ``path``; numbers only for complete runs (NaN otherwise). A pandas DataFrame when pandas is
    installed, else a list of dicts."""
    # lazy: `import arprobe` loads no torch, numpy or trainer (tests/trainer/test_python_api.py)
    from arprobe.sweep.manifest import read_manifest
    from arprobe.sweep.report import read_run
    from arprobe.sweep.spec import show

    folder = Path(folder)
    manifest = read_manifest(folder)
    rows = []
    for entry in manifest["points"]:
        numbers = read_run(entry["name"], folder / entry["run"] / "run.h5")
        row = {"name": entry["name"]}
        row.update({k: show(v) if isinstance(v, dict) else v for k, v in entry["options"].items()})
        row.update(
            {
                "seed": entry["seed"],
                "control": entry.get("control") or "",
                "status": numbers.status
                if numbers.status != "unreadable"
                else entry.get("status", "pending"),
                "episodes": numbers.episodes,
                "seconds": float(entry.get("seconds", 0.0)),
            }
        )
        row.update({f"rs_{n}": float(v) for n, v in enumerate(numbers.recovery, start=1)})
        row["online_loss"] = float(numbers.online)
        row["path"] = str(folder / entry["run"])
        rows.append(row)
    try:
        import pandas  # optional: a DataFrame when it is installed
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


# --- helpers -----------------------------------------------------------------------------------


def _command(argv: list[str]) -> int:
    """Parse ``argv`` with the CLI's own parser and run the command; a parse error raises
    ``UserError`` with argparse's sentence instead of exiting."""
    # lazy: `import arprobe` loads no torch, numpy or trainer (tests/trainer/test_python_api.py)
    from arprobe.cli.main import build_parser

    parser = build_parser()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(argv)
    except SystemExit:
        message = errors.getvalue().strip().splitlines()
        raise UserError(message[-1] if message else f"could not parse {argv}") from None
    return int(args.func(args, []) or 0)


@contextlib.contextmanager
def _main_hidden():
    """While a sweep's worker processes start, hide the caller's script from multiprocessing, which
    would run it again in every worker (spawn) to find what it defines: a script without an
    ``if __name__ == "__main__":`` guard would start its sweep again there. The workers need nothing
    from it. A notebook's ``__main__`` has no file and is left alone."""
    main = sys.modules.get("__main__")
    if main is None or not getattr(main, "__file__", None):
        yield
        return
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def to_toml(table: dict) -> str:
    """A dict (sections nested or dotted; values str, bool, int, float, lists, dicts) as TOML text,
    every key at the top level as a dotted key: what ``tomllib`` reads back to the same dict."""
    lines = [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in flatten(table).items()]
    return "\n".join(lines) + "\n"


_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(key: str) -> str:
    return ".".join(part if _BARE.match(part) else json.dumps(part) for part in key.split("."))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's basic-string escapes
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in flatten(value).items()) + "}"
    raise UserError(
        f"{value!r} cannot be written as a TOML value (use text, numbers, booleans, lists, dicts)."
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _number(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and all(isinstance(v, int | float) or v is None for v in value):
        return "[" + ", ".join("n/a" if v is None else f"{v:.4g}" for v in value) + "]"
    return str(value)


def _html_table(rows) -> str:
    cell = "<td style='text-align:left'>{}</td>"
    body = "".join(
        f"<tr>{cell.format(html.escape(str(k)))}{cell.format(html.escape(str(v)))}</tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def _img(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode()
    return (
        f"<img src='data:image/png;base64,{data}' alt='{html.escape(figure.name)}' style='max-width:100%'/>"
    )
