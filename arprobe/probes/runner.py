"""Running probes on runs: each in its own process, each outcome written as ``<probe>/result.json``,
then the report's summary.json and index page (``arprobe.report.pages``).

Layout of a report folder (``<run>/report`` by default)::

    summary.json            the run's identity, headline numbers, reference values, versions,
                            and the command that reproduces the run
    <probe>/result.json     status, options, headline numbers, the full result, figure names, and
                            the traceback of a probe that failed
    <probe>/*.png, *.svg    the probe's figures; *.csv next to each: the numbers drawn
    <probe>/*.html          interactive views (self-contained, work offline)
    index.html              the summary, then every probe in reading order: what to look for,
                            headline numbers, figures, and the reason for every skip or failure

Every probe runs isolated, in its own process forked from a clean server, on its own read-only
handle of the store: a probe that lacks data is skipped with the one-sentence reason; one that
raises, exits, crashes or runs past the timeout is recorded as failed with its traceback; the
next probe runs either way. A probe gets only read-only handles, so it cannot change the run,
and what it breaks in its own process stays there.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

from arprobe import __version__
from arprobe.errors import MissingDataError, UserError
from arprobe.jsonio import to_jsonable, write_json_atomic
from arprobe.probes.base import Probe
from arprobe.report.figures import set_figure_subtitle
from arprobe.report.guide import human_name, look_for, reading_position
from arprobe.report.pages import write_run_index
from arprobe.report.summary import figure_subtitle, one_line, run_summaries
from arprobe.storage import RunStore

DEFAULT_TIMEOUT = 1800.0  # seconds a probe may run before it is stopped (--probe-timeout)
MAX_TRACEBACK = 20_000  # characters of a traceback kept in result.json (a runaway recursion is long)


@dataclass
class Outcome:
    probe: str
    status: str  # ok | skipped | failed
    reason: str = ""  # why skipped or failed: one sentence
    headline: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    folder: Path | None = None


@dataclass
class ProbeRef:
    """A probe as the analysis plans it: its name and class, not an instance, so a plugin's
    constructor runs only inside the probe's own process."""

    name: str
    cls: type
    needs_store: bool = True
    multi_run: bool = False

    @classmethod
    def of(cls, name: str, probe_cls: type) -> ProbeRef:
        # Class attributes of a third-party probe may be anything: read them defensively.
        return cls(
            name,
            probe_cls,
            needs_store=_flag(probe_cls, "needs_store", True),
            multi_run=_flag(probe_cls, "multi_run", False),
        )


def _flag(obj, attr: str, default: bool) -> bool:
    try:
        value = getattr(obj, attr, default)
        return value if isinstance(value, bool) else default
    except Exception:  # a property that raises on the class
        return default


def _run_label(store) -> str:
    return str(store.path.parent)


def _short_traceback(text: str) -> str:
    if len(text) <= MAX_TRACEBACK:
        return text
    half = MAX_TRACEBACK // 2
    return f"{text[:half]}\n… ({len(text) - MAX_TRACEBACK:,} characters left out) …\n{text[-half:]}"


def run_probe(probe: Probe, stores: list, report_dir: Path, options: dict | None = None) -> Outcome:
    """Run one probe on ``stores`` (none, one, or several for a multi-run probe) in this process
    and write its folder. Never raises for the probe's own failures: they come back as the
    Outcome. ``write_report`` calls this inside each probe's own process."""
    report_dir = Path(report_dir)
    folder = report_dir / probe.name
    if folder.exists():  # figures of an earlier analysis must not outlive a failed re-run
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    outcome = Outcome(probe=probe.name, status="ok", folder=folder)
    record: dict = {
        "probe": probe.name,
        "title": human_name(probe.name, type(probe)),
        "look_for": look_for(probe.name, type(probe)),
        "description": "",
        "runs": [_run_label(s) for s in stores],
        "arprobe_version": __version__,
    }
    result = None
    error_trace = ""
    try:
        result = _checked_run(probe, stores, folder, options, record)
        outcome.headline = to_jsonable(probe.headline(result))
    except MissingDataError as exc:
        outcome.status, outcome.reason = "skipped", str(exc)
    except UserError as exc:
        outcome.status, outcome.reason = "failed", str(exc)
    except SystemExit as exc:  # a plugin calling sys.exit ends the probe, not the analysis
        outcome.status = "failed"
        outcome.reason = f"Probe '{probe.name}' called sys.exit({exc.code!r}) instead of returning a result."
        error_trace = traceback.format_exc()
    except Exception as exc:  # a probe's bug must not stop the others
        outcome.status = "failed"
        outcome.reason = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        error_trace = traceback.format_exc()
    outcome.seconds = time.perf_counter() - started
    _write_record(outcome, record, result, error_trace, folder)
    return outcome


def _checked_run(probe: Probe, stores: list, folder: Path, options: dict | None, record: dict) -> dict:
    """The probe's result, after its description, options and requirements are checked (each failure
    one sentence); ``record`` gets the description and the resolved options."""
    if not isinstance(probe.description, str):
        raise UserError(
            f"Probe '{probe.name}' has a description that is a {type(probe.description).__name__}, "
            "not a string; a description is one line of text."
        )
    record["description"] = probe.description
    resolved = probe.resolve_options(options)
    record["options"] = resolved
    if probe.needs_store and not stores:
        raise MissingDataError(
            f"Probe '{probe.name}' reads a run; give one: arprobe analyze RUN --probe {probe.name}."
        )
    for store in stores:
        probe.check_requirements(store, resolved)
    if probe.multi_run:
        target = list(stores)
    else:
        assert len(stores) <= 1, "a single-run probe gets at most one store"
        target = stores[0] if stores else None
    result = probe.run(target, folder, **resolved)
    if not isinstance(result, dict):
        raise TypeError(f"probe '{probe.name}' returned {type(result).__name__}, not a dict of numbers")
    return result


def _write_record(outcome: Outcome, record: dict, result, error_trace: str, folder: Path) -> None:
    """``folder/result.json``: the outcome, and the result when the probe succeeded; a result that is
    not JSON turns the outcome into a failure."""
    outcome.figures = sorted(p.name for p in folder.glob("*.png")) if outcome.status == "ok" else []
    if outcome.status != "ok":
        _remove_drawn(folder)
    record.update(
        {
            "status": outcome.status,
            "reason": outcome.reason,
            "seconds": round(outcome.seconds, 3),
            "headline": outcome.headline,
            "figures": outcome.figures,
            "views": sorted(p.name for p in folder.glob("*.html")) if outcome.status == "ok" else [],
            "result": result if outcome.status == "ok" else None,
        }
    )
    if error_trace:
        record["traceback"] = _short_traceback(error_trace)
    try:
        write_json_atomic(folder / "result.json", record)
    except (TypeError, ValueError) as exc:  # a result that is not JSON is the probe's failure too
        outcome.status, outcome.reason = "failed", f"result is not JSON-serialisable: {exc}"
        record.update(
            {"status": "failed", "reason": outcome.reason, "result": None, "headline": {}, "figures": []}
        )
        outcome.headline, outcome.figures = {}, []
        write_json_atomic(folder / "result.json", to_jsonable(record))


# --- isolation: one process per probe ------------------------------------------------------------

# Imported once by the fork server, so a probe process starts with them (never torch: a server
# that has started torch's threads would fork badly). A module that fails to import is skipped.
_PRELOAD = [
    "numpy",
    "h5py",
    "matplotlib.figure",
    "matplotlib.font_manager",
    "matplotlib.backends.backend_agg",
    "matplotlib.backends.backend_svg",
    "mpl_toolkits.mplot3d",
    "arprobe.storage",
    "arprobe.probes.runner",
    *(
        f"arprobe.probes.{m}"
        for m in (
            "loss_curves",
            "recovery_score",
            "online_loss",
            "gradient_similarity",
            "pairwise_recovery",
            "weight_residual_similarity",
            "pca_weights",
            "activation_drift",
            "toy_probe",
        )
    ),
]
_context = None


def _process_context(target):
    """A forkserver context (children forked from a clean server that has imported numpy, h5py and
    matplotlib once: about 10 ms a probe instead of a fresh interpreter's seconds), or plain fork for
    a probe that cannot be pickled by reference (a class defined inside a function)."""
    global _context
    cls = target if isinstance(target, type) else type(target)
    if cls.__module__ == "__main__":  # the probe process could not import it by name
        return mp.get_context("fork")
    try:
        pickle.dumps(target)
    except Exception:
        return mp.get_context("fork")
    if _context is None:
        _context = mp.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


@contextmanager
def _main_hidden():
    """While a probe process starts, hide the parent's ``__main__`` from multiprocessing, which would
    otherwise run the parent's script again in the child (to unpickle what it defines): a probe
    process needs nothing from it, and a script without an ``if __name__ == "__main__":`` guard
    would start its analysis again there."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _probe_process(conn, target, name, store_paths, report_dir, options, progress, subtitle) -> None:
    """Body of a probe's process: build the probe, open the stores read-only, run, write result.json,
    then say "done" on ``conn``."""
    if not progress:
        _silence_bars()
    set_figure_subtitle(subtitle)
    folder = Path(report_dir) / name
    stores = []
    try:
        try:
            probe = target() if isinstance(target, type) else target
            probe.name = name
            probe.progress = progress
        except BaseException as exc:  # the constructor is the plugin's code too
            if isinstance(exc, KeyboardInterrupt):
                raise
            _write_failure(folder, name, f"Probe '{name}' could not be constructed: {one_line(exc)}", exc)
            conn.send("done")
            return
        try:
            stores = [RunStore(p) for p in store_paths]
        except Exception as exc:
            _write_failure(folder, name, str(exc).splitlines()[0] if str(exc) else one_line(exc), None)
            conn.send("done")
            return
        run_probe(probe, stores, report_dir, options)
        conn.send("done")
    finally:
        for s in stores:
            try:
                s.close()
            except Exception:  # a probe may have closed or broken it already
                pass


def _silence_bars() -> None:
    """No tqdm bar in this process, also from a probe that ignores ``self.progress``."""
    os.environ["TQDM_DISABLE"] = "1"  # read by tqdm when it is imported
    std = sys.modules.get("tqdm.std")
    if std is not None:  # imported already, its defaults read: force it on every bar
        init = std.tqdm.__init__

        def quiet(self, *args, **kwargs):
            kwargs["disable"] = True
            init(self, *args, **kwargs)

        std.tqdm.__init__ = quiet


def _remove_drawn(folder: Path) -> None:
    """Delete a probe's figures, CSVs and views: half-drawn figures of a failed probe would mislead."""
    for ext in ("png", "svg", "csv", "html"):
        for drawn in folder.glob(f"*.{ext}"):
            drawn.unlink()


def _write_failure(folder: Path, name: str, reason: str, exc: BaseException | None, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _remove_drawn(folder)
    record = {
        "probe": name,
        "title": human_name(name),
        "look_for": look_for(name),
        "description": "",
        "status": "failed",
        "reason": reason,
        "headline": {},
        "figures": [],
        "views": [],
        "result": None,
        "arprobe_version": __version__,
        **extra,
    }
    if exc is not None:
        record["traceback"] = _short_traceback("".join(traceback.format_exception(exc)))
    write_json_atomic(folder / "result.json", record)


def run_probe_isolated(
    probe: Probe | ProbeRef,
    store_paths: list[Path],
    report_dir: Path,
    options: dict | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    subtitle: str = "",
) -> Outcome:
    """Run one probe in its own process on fresh read-only handles of ``store_paths``; a probe that
    exits, crashes or runs past ``timeout`` seconds comes back as a failed Outcome."""
    name = probe.name
    target = probe.cls if isinstance(probe, ProbeRef) else probe
    folder = Path(report_dir) / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    ctx = _process_context(target)
    receive, send = ctx.Pipe(duplex=False)
    args = (send, target, name, [str(p) for p in store_paths], str(report_dir), options, progress, subtitle)
    process = ctx.Process(target=_probe_process, args=args, name=f"arprobe-probe-{name}", daemon=True)
    started = time.perf_counter()
    with _main_hidden():
        process.start()
    send.close()
    done = False
    try:
        ready = wait([receive, process.sentinel], timeout=timeout)
        if receive in ready:
            try:
                done = receive.recv() == "done"
            except EOFError:
                done = False
        if done:
            process.join(timeout=10)  # a probe that leaves threads behind must not hold up the rest
        elif not ready:  # nothing within the timeout
            _stop(process)
            _write_failure(
                folder,
                name,
                f"Probe '{name}' did not finish within {timeout:g} s and was stopped; raise --probe-timeout "
                "if it needs longer.",
                None,
                seconds=round(time.perf_counter() - started, 3),
            )
        else:
            process.join(timeout=10)
    finally:
        _stop(process)
        receive.close()
    seconds = time.perf_counter() - started
    if not done and process.exitcode is not None and not (folder / "result.json").exists():
        code = process.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        _write_failure(
            folder,
            name,
            f"Probe '{name}' ended its process ({how}) before returning a result.",
            None,
            seconds=round(seconds, 3),
        )
    elif not done and not (folder / "result.json").exists():
        _write_failure(folder, name, f"Probe '{name}' ended without a result.", None)
    return outcome_from_record(folder, seconds)


def _stop(process) -> None:
    if process.is_alive():
        process.kill()
        process.join(timeout=10)


def outcome_from_record(folder: Path, seconds: float | None = None) -> Outcome:
    try:
        r = json.loads((folder / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        r = {"status": "failed", "reason": "result.json is unreadable"}
    return Outcome(
        probe=folder.name,
        status=r.get("status", "failed"),
        reason=r.get("reason", ""),
        headline=r.get("headline") or {},
        figures=r.get("figures") or [],
        seconds=float(r.get("seconds") or 0.0) if seconds is None else seconds,
        folder=folder,
    )


def write_report(
    stores: list,
    report_dir: Path,
    probes: list,
    options: dict[str, dict] | None = None,
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
    title: str = "",
    isolate: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
) -> list[Outcome]:
    """Run ``probes`` (Probe instances or ProbeRefs) on ``stores`` into ``report_dir``, each in its
    own process unless ``isolate`` is False, then (re)write summary.json and index.html."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    subtitle = figure_subtitle(stores)
    outcomes = []
    for probe in sorted(probes, key=lambda p: reading_position(p.name)):
        opts = (options or {}).get(probe.name)
        if isolate:
            show = progress if progress is not None else _flag(probe, "progress", True)
            outcome = run_probe_isolated(
                probe,
                [s.path for s in stores],
                report_dir,
                opts,
                timeout=timeout,
                progress=show,
                subtitle=subtitle,
            )
        else:
            instance = probe.cls() if isinstance(probe, ProbeRef) else probe
            instance.name = probe.name
            set_figure_subtitle(subtitle)
            try:
                outcome = run_probe(instance, stores, report_dir, opts)
            finally:
                set_figure_subtitle("")
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    if not title and len(stores) == 1:  # a report of a run still training should say so
        title = f"{_run_label(stores[0])} ({stores[0].status}, {stores[0].completed_episodes} episodes)"
    write_json_atomic(report_dir / "summary.json", run_summaries(stores))
    write_run_index(report_dir, title or ", ".join(_run_label(s) for s in stores) or "toy model")
    return outcomes


def failed_outcome(name: str, reason: str, report_dir: Path, trace: str = "") -> Outcome:
    """The outcome of a probe that could not even be loaded (e.g. a broken plugin), written like any other."""
    folder = Path(report_dir) / name
    _write_failure(folder, name, reason, None, **({"traceback": _short_traceback(trace)} if trace else {}))
    return Outcome(probe=name, status="failed", reason=reason, folder=folder)
