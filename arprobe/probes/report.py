"""Running probes on runs and writing the report.

Layout of a report folder (``<run>/report`` by default)::

    summary.json            the run's identity, headline numbers, paper reference values, versions,
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

import html
import json
import os
import shlex
import shutil
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from arprobe import __version__
from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, set_figure_subtitle, to_jsonable
from arprobe.values import flatten

STATUSES = ("ok", "skipped", "failed")
DEFAULT_TIMEOUT = 1800.0  # seconds a probe may run before it is stopped (--probe-timeout)
MAX_TRACEBACK = 20_000  # characters of a traceback kept in result.json (a runaway recursion is long)

# Reading order of the built-in probes (and the four planned ones): the effect first, then its
# size and payoff, then the mechanisms. Probes not listed (third-party ones) come after, by name.
# name -> (human name, one sentence: what to look for). A probe class may set ``title`` and
# ``look_for`` itself; those win.
GUIDE: dict[str, tuple[str, str]] = {
    "loss_curves": (
        "Loss curves",
        "A document's loss should jump up after it is trained, then fall again before it comes back "
        "(an inverted U each epoch); under a shuffled order it keeps rising until the revisit.",
    ),
    "recovery_score": (
        "Recovery score",
        "RS(n) = 0 means no recovery before the revisit, 1 that the forgetting is fully undone; "
        "anticipatory recovery shows as RS well above a shuffled run's, growing over epochs.",
    ),
    "online_loss": (
        "Online (prequential) loss",
        "From epoch 2 on, a cyclic order should have lower online loss than a shuffled one (paper "
        "Table 1): recovery pre-trains the document that comes next.",
    ),
    "forgetting": (
        "Forgetting",
        "In a cyclic run the anticipation ratio should sit well above 0: much of what a document forgets "
        "is undone before its next turn; a backward transfer below 0 is forgetting.",
    ),
    "recovery_map": (
        "Recovery map",
        "A document's loss should start falling some episodes before its turn, and earlier epoch by "
        "epoch: a lag above 0 that grows over epochs.",
    ),
    "gradient_similarity": (
        "Gradient similarity",
        "Gradients of documents near each other in the cycle should point the same way (positive "
        "cosines), with a pattern that follows the position in the cycle (Fig. 8a).",
    ),
    "pairwise_recovery": (
        "Pairwise recovery",
        "Training one document should help its neighbours in the cycle most: a bright band near the "
        "diagonal, roughly symmetric (Fig. 8b).",
    ),
    "weight_residual_similarity": (
        "Weight-residual similarity",
        "Evenly spaced bright stripes, one cycle apart, mean the weights come back to similar places "
        "every epoch (Fig. 8c).",
    ),
    "pca_weights": (
        "Weight trajectory (PCA helix)",
        "With the drift removed, the weights should turn once per epoch around a circle whose radius "
        "shrinks: a converging helix (Fig. 9); rotate the 3-D view to see it.",
    ),
    "activation_drift": (
        "Activation drift",
        "Blocks that grow more similar epoch by epoch mean a trained document's representation "
        "settles and resists the other documents' updates (Fig. 8d).",
    ),
    "model_clock": (
        "Model clock",
        "A collapse ratio below 1 means forgetting and recovery line up better against model time "
        "(the summed update norm) than against the episode count.",
    ),
    "order_decoding": (
        "Order decoding",
        "A rank correlation well above 0 and a pair-order accuracy above 0.5 mean the activations "
        "encode how recently each document was trained.",
    ),
    "toy_model": (
        "Toy model",
        "The toy's task-1 loss should show the same inverted U, growing over epochs, and its task "
        "solutions should lie on a ring in task order (Fig. 10, 11).",
    ),
}
READING_ORDER = list(GUIDE)


def reading_position(name: str) -> tuple[int, str]:
    """Sort key: built-ins in ``READING_ORDER``, anything else after them by name."""
    return (READING_ORDER.index(name) if name in READING_ORDER else len(READING_ORDER), name)


def human_name(name: str, cls=None) -> str:
    title = getattr(cls, "title", "") if cls is not None else ""
    if isinstance(title, str) and title:
        return title
    return GUIDE[name][0] if name in GUIDE else name.replace("_", " ").capitalize()


def look_for(name: str, cls=None) -> str:
    text = getattr(cls, "look_for", "") if cls is not None else ""
    if isinstance(text, str) and text:
        return text
    return GUIDE[name][1] if name in GUIDE else ""


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


def write_json_atomic(path: Path, data) -> None:
    """Write JSON through a temporary file and os.replace: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


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
    outcome.figures = sorted(p.name for p in folder.glob("*.png")) if outcome.status == "ok" else []
    if outcome.status != "ok":
        for drawn in [
            *folder.glob("*.png"),
            *folder.glob("*.svg"),
            *folder.glob("*.csv"),
            *folder.glob("*.html"),
        ]:
            drawn.unlink()  # half-drawn figures of a failed probe would mislead
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
    return outcome


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
    "arprobe.probes.report",
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
    import multiprocessing as mp
    import pickle

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
            _write_failure(folder, name, f"Probe '{name}' could not be constructed: {_one_line(exc)}", exc)
            conn.send("done")
            return
        from arprobe.storage import RunStore

        try:
            stores = [RunStore(p) for p in store_paths]
        except Exception as exc:
            _write_failure(folder, name, str(exc).splitlines()[0] if str(exc) else _one_line(exc), None)
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


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.splitlines()[0]


def _write_failure(folder: Path, name: str, reason: str, exc: BaseException | None, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for drawn in [
        *folder.glob("*.png"),
        *folder.glob("*.svg"),
        *folder.glob("*.csv"),
        *folder.glob("*.html"),
    ]:
        drawn.unlink()
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
    from multiprocessing.connection import wait

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
    write_index(report_dir, title or ", ".join(_run_label(s) for s in stores) or "toy model")
    return outcomes


def failed_outcome(name: str, reason: str, report_dir: Path, trace: str = "") -> Outcome:
    """The outcome of a probe that could not even be loaded (e.g. a broken plugin), written like any other."""
    folder = Path(report_dir) / name
    _write_failure(folder, name, reason, None, **({"traceback": _short_traceback(trace)} if trace else {}))
    return Outcome(probe=name, status="failed", reason=reason, folder=folder)


# --- the run's identity and headline numbers ---------------------------------------------------------

# Paper Table 1 (Sec. 3.5): mean online loss over epochs 2-5, mean ± std over 10 seeds, at T = 100,
# C = 512, M = 10, E = 5, gradient descent lr 0.001, pre-trained Pythia on CNN/DailyMail.
TABLE1 = {
    ("410m", "cyclic"): "1.09 ± 0.03",
    ("1b", "cyclic"): "1.03 ± 0.03",
    ("1.4b", "cyclic"): "1.14 ± 0.06",
    ("2.8b", "cyclic"): "1.34 ± 0.06",
    ("410m", "shuffle"): "1.34 ± 0.02",
    ("1b", "shuffle"): "1.51 ± 0.04",
    ("1.4b", "shuffle"): "1.51 ± 0.04",
    ("2.8b", "shuffle"): "1.79 ± 0.06",
}
TABLE1_SETTING = {
    "data.n_docs": 100,
    "data.context_length": 512,
    "schedule.steps_per_doc": 10,
    "schedule.epochs": 5,
    "optim.name": "sgd",
    "optim.lr": 0.001,
    "optim.lr_schedule": "constant",
    "model.init": "pretrained",
}
# Not the paper's: arprobe's own measurement of its default run (DESIGN.md: a 4M-parameter model,
# T=10, C=64, M=10, E=4, Adam 1e-3, 3 seeds).
DEFAULT_SETTING = {
    "data.source": "pydoc",
    "data.n_docs": 10,
    "data.context_length": 64,
    "schedule.steps_per_doc": 10,
    "schedule.epochs": 4,
    "optim.name": "adam",
    "optim.lr": 0.001,
    "model.name": "tiny",
    "model.init": "pythia",
}
DEFAULT_RS = {"cyclic": "RS(3) 0.33–0.42", "shuffle": "RS(3) 0.07–0.16"}


def paper_reference(config: dict) -> dict:
    """Reference values for a run's setting: {"source", "online_loss"?, "recovery_score"?, "differs"}.

    The paper states numbers only in Table 1 (online loss); a run that matches its setting gets the
    paper's value; any other run gets the list of what differs from that setting."""
    flat = flatten(config)
    order = str(flat.get("schedule.order", ""))
    model = str(flat.get("model.name", "")).lower()
    size = next((s for s, _ in TABLE1 if model.endswith(f"pythia-{s}") or model == f"pythia-{s}"), None)
    differs = [
        f"{key.split('.')[-1]} {flat.get(key)!r} (paper {value!r})"
        for key, value in TABLE1_SETTING.items()
        if flat.get(key) != value
    ]
    if size is None:
        differs.append(f"model {flat.get('model.name')!r} (paper: pre-trained Pythia 410M–2.8B)")
    if order not in ("cyclic", "shuffle"):
        differs.append(f"order {order!r} (paper: cyclic or shuffle)")
    if "cnn_dailymail" not in str(flat.get("data.source", "")):
        differs.append(f"data {flat.get('data.source')!r} (paper: CNN/DailyMail articles)")
    ref: dict = {"differs": differs}
    if not differs:
        ref["source"] = f"paper Table 1, Pythia-{size.upper()}, {order} (mean ± std over 10 seeds)"
        ref["online_loss"] = TABLE1[(size, order)]
        ref["recovery_score"] = "not stated in the paper (Fig. 2 plots RS(4) without numbers)"
    elif all(flat.get(k) == v for k, v in DEFAULT_SETTING.items()) and order in DEFAULT_RS:
        ref["source"] = "arprobe's own measurement of its default run, 3 seeds (DESIGN.md; not the paper's)"
        ref["recovery_score"] = DEFAULT_RS[order]
    return ref


def reproduce_command(config: dict) -> str:
    """`arprobe run` with every key whose value differs from the default: the run again, bit for bit."""
    from arprobe.trainer.config import RunConfig

    defaults = flatten(RunConfig().to_dict())
    parts = ["arprobe", "run"]
    for key, value in flatten(config).items():
        if key in defaults and value == defaults[key] and key not in ("out", "name"):
            continue
        if key not in defaults:
            continue  # a key this version of arprobe does not know (an older store)
        text = (
            ",".join(str(v) for v in value)
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        parts += [f"--{key}", text]
    return shlex.join(parts)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return {"arprobe (this analysis)": __version__, "torch (this analysis)": torch}


def run_identity(store) -> dict:
    """The facts that say which run this is, as label -> text (for the summary and figure subtitles)."""
    config = store.config
    flat = flatten(config)
    try:
        info = store.model_info
    except Exception:
        info = {}
    n_params = info.get("n_params")
    model = str(flat.get("model.name", "?"))
    init = flat.get("model.init", "")
    model_text = model + (
        f" ({init} init)" if init and init != "pretrained" else " (pre-trained)" if init else ""
    )
    if n_params:
        model_text += f", {n_params / 1e6:.2f}M parameters"
    optim = (
        f"{flat.get('optim.name', '?')} lr {flat.get('optim.lr', '?'):g}"
        if isinstance(flat.get("optim.lr"), (int, float))
        else str(flat.get("optim.name", "?"))
    )
    if flat.get("optim.lr_schedule") not in (None, "constant"):
        optim += f", {flat['optim.lr_schedule']} schedule"
    data = info.get("data") or str(flat.get("data.source", "?"))
    return {
        "run": str(store.path.parent),
        "model": model_text,
        "T / C / M / E": (
            f"{flat.get('data.n_docs', '?')} / {flat.get('data.context_length', '?')} / "
            f"{flat.get('schedule.steps_per_doc', '?')} / {flat.get('schedule.epochs', '?')}"
        ),
        "order": str(flat.get("schedule.order", "?")),
        "optimizer": optim,
        "seed": str(flat.get("seed", store.seed)),
        "data": str(data),
    }


def figure_subtitle(stores: list) -> str:
    """One line under every figure: which run (or how many runs) it shows."""
    if not stores:
        return "arprobe toy model (no run)"
    if len(stores) > 1:
        return (
            f"{len(stores)} runs: "
            + ", ".join(s.path.parent.name for s in stores[:6])
            + (", …" if len(stores) > 6 else "")
        )
    try:
        i = run_identity(stores[0])
    except Exception:  # a damaged config must not stop the figures
        return str(stores[0].path.parent)
    model = i["model"].split(" (")[0]
    return (
        f"{Path(i['run']).name} · {model} · T/C/M/E {i['T / C / M / E'].replace(' ', '')} · "
        f"{i['order']} · {i['optimizer']} · seed {i['seed']}"
    )


def run_summary(store) -> dict:
    """Identity, status, headline numbers (RS per epoch, online loss), reference values, versions
    and the reproducing command of one run."""
    import numpy as np

    from arprobe.science.recovery import online_loss, recovery_scores

    summary: dict = {"identity": run_identity(store)}
    schedule = store.schedule()
    planned = len(store.planned_schedule())
    summary["status"] = f"{store.status}, {store.completed_episodes} of {planned} episodes"
    if store.stop_reason:
        summary["status"] += f" ({store.stop_reason})"
    numbers: dict = {}
    if store.completed_episodes:
        loss_eval = store.eval_matrix()
        rs = recovery_scores(loss_eval, schedule.doc)
        numbers["recovery_score"] = [None if not np.isfinite(v) else round(float(v), 4) for v in rs]
        ol = online_loss(loss_eval, schedule.doc, schedule.epoch)
        numbers["online_loss_after_epoch_1"] = ol.mean_after_first_epoch
        numbers["online_loss_per_epoch"] = ol.per_epoch
    summary["numbers"] = numbers
    summary["reference"] = paper_reference(store.config)
    summary["versions"] = {"arprobe (that wrote the run)": str(store.h5.attrs.get("arprobe_version", "?"))}
    summary["versions"].update(_versions())
    summary["reproduce"] = reproduce_command(store.config)
    return summary


def run_summaries(stores: list) -> dict:
    runs = []
    for store in stores:
        try:
            runs.append(run_summary(store))
        except Exception as exc:  # the header must not cost the report
            runs.append({"identity": {"run": str(store.path.parent)}, "error": _one_line(exc)})
    return {"runs": runs, "versions": _versions()}


# --- the index page ----------------------------------------------------------------------------


def format_value(value, digits: int = 4) -> str:
    """A headline value as a short string: numbers to ``digits`` significant digits, lists inline."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        shown = ", ".join(format_value(v, digits) for v in value[:12])
        return f"[{shown}{', …' if len(value) > 12 else ''}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v, digits)}" for k, v in value.items()) + "}"
    return str(value)


def humanize(key: str) -> str:
    """A result key as words: ``shift_avg_peak_position`` -> "Shift avg peak position"."""
    return key.replace("_", " ").capitalize()


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.status { font-size: 0.8em; padding: 0.1em 0.5em; border-radius: 0.3em; margin-left: 0.5em; }
.ok { background: #e3f4e3; } .skipped { background: #f4f0dc; } .failed { background: #f7dede; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.15em 0.8em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.key, th { color: #555; font-weight: normal; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
figure { margin: 0.5em 0 1.2em 0; } figcaption { font-size: 0.8em; color: #666; }
.reason { font-family: monospace; white-space: pre-wrap; } nav a { margin-right: 1em; }
.look { background: #eef4fb; padding: 0.4em 0.7em; border-left: 3px solid #7aa7d8; }
code.cmd { display: block; background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }
iframe { width: 100%; height: 560px; border: 1px solid #eee; }
pre.trace { background: #fbf3f3; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
"""

# Checks, once the page has loaded, that every figure did: a broken one is named on the console
# and the count is left on <body data-images-loaded="n/m"> (read by the report's browser test).
_CHECK_IMAGES = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  broken.forEach(function (im) { console.error("figure did not load: " + im.getAttribute("src")); });
  document.body.setAttribute("data-images-loaded", (images.length - broken.length) + "/" + images.length);
});
"""


def _summary_html(summary: dict) -> list[str]:
    esc = html.escape
    runs = summary.get("runs", [])
    parts: list[str] = []
    if not runs:
        return parts
    if len(runs) > 1:
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{esc(str(r.get('identity', {}).get(k, '')))}</td>"
                for k in ("run", "model", "T / C / M / E", "order", "optimizer", "seed")
            )
            + f"<td>{esc(format_value(r.get('numbers', {}).get('recovery_score'), 3))}</td>"
            + f"<td>{esc(format_value(r.get('numbers', {}).get('online_loss_after_epoch_1'), 4))}</td></tr>"
            for r in runs
        )
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "run",
                "model",
                "T / C / M / E",
                "order",
                "optimizer",
                "seed",
                "RS per epoch",
                "online loss",
            )
        )
        parts.append(f"<h2 id='summary'>Runs</h2><table><tr>{head}</tr>{rows}</table>")
        return parts
    r = runs[0]
    if r.get("error"):
        return [f"<p class='reason'>summary unavailable: {esc(r['error'])}</p>"]
    ident = "".join(
        f"<tr><td class='key'>{esc(k)}</td><td>{esc(str(v))}</td></tr>" for k, v in r["identity"].items()
    )
    ident += f"<tr><td class='key'>status</td><td>{esc(r['status'])}</td></tr>"
    numbers, ref = r.get("numbers", {}), r.get("reference", {})
    rs = numbers.get("recovery_score") or []
    rs_text = (
        ", ".join(f"RS({i + 1}) {format_value(v, 3)}" for i, v in enumerate(rs)) or "n/a (needs 2 epochs)"
    )
    ol = numbers.get("online_loss_after_epoch_1")
    head_rows = [
        ("recovery score per epoch", rs_text, ref.get("recovery_score", "")),
        ("online loss, mean over epochs 2..E", format_value(ol, 4), ref.get("online_loss", "")),
    ]
    heads = "".join(
        f"<tr><td class='key'>{esc(k)}</td><td>{esc(v)}</td><td>{esc(p or '—')}</td></tr>"
        for k, v, p in head_rows
    )
    if ref.get("source"):
        note = f"Reference: {ref['source']}."
    else:
        note = (
            "No paper setting matches this run, so there is no reference value (the paper states "
            "numbers only for Table 1: T=100, C=512, M=10, E=5, SGD lr 0.001, pre-trained Pythia on "
            "CNN/DailyMail). "
            "Differs in: " + "; ".join(ref.get("differs", [])) + "."
        )
    versions = " · ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
    parts += [
        "<h2 id='summary'>Summary</h2>",
        f"<table>{ident}</table>",
        "<table><tr><th>headline</th><th>this run</th><th>reference</th></tr>" + heads + "</table>",
        f"<p><small>{esc(note)}</small></p>",
        f"<p><small>{esc(versions)}</small></p>",
        "<p><small>Reproduce this run:</small></p>",
        f"<code class='cmd'>{esc(r.get('reproduce', ''))}</code>",
    ]
    return parts


def write_index(report_dir: Path, title: str) -> Path:
    """index.html: the summary (summary.json), then every ``<probe>/result.json`` in reading order."""
    report_dir = Path(report_dir)
    records = []
    for path in sorted(report_dir.glob("*/result.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError
        except (OSError, ValueError):
            record = {"probe": path.parent.name, "status": "failed", "reason": "result.json is unreadable"}
        record["probe"] = path.parent.name  # the folder is the name, whatever the file says
        records.append(record)
    records.sort(key=lambda r: reading_position(r["probe"]))
    try:
        summary = json.loads((report_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    esc = html.escape

    def text(r: dict, key: str) -> str:
        value = r.get(key, "")
        return value if isinstance(value, str) else ""

    counts = {s: sum(r.get("status") == s for r in records) for s in STATUSES}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>arprobe report: {esc(title)}</title><style>{_STYLE}</style>",
        f"<script>{_CHECK_IMAGES}</script></head><body>",
        f"<h1>arprobe report: {esc(title)}</h1>",
        f"<p><small>{counts['ok']} probe(s) ok, {counts['skipped']} skipped, "
        f"{counts['failed']} failed</small></p>",
        "<nav><a href='#summary'>Summary</a>"
        + "".join(
            f"<a href='#{esc(r['probe'])}' class='{esc(text(r, 'status'))}'>"
            f"{esc(text(r, 'title') or human_name(r['probe']))}</a>"
            for r in records
        )
        + "</nav>",
    ]
    parts += _summary_html(summary)
    for r in records:
        name = r["probe"]
        status = text(r, "status") if r.get("status") in STATUSES else "failed"
        parts.append(
            f"<h2 id='{esc(name)}'>{esc(text(r, 'title') or human_name(name))} <small>({esc(name)})</small>"
            f"<span class='status {status}'>{status}</span></h2>"
        )
        if text(r, "look_for"):
            parts.append(f"<p class='look'><b>What to look for:</b> {esc(text(r, 'look_for'))}</p>")
        if text(r, "description"):
            parts.append(f"<p>{esc(text(r, 'description'))}</p>")
        if status != "ok":
            parts.append(f"<p class='reason'>{esc(text(r, 'reason'))}</p>")
            if text(r, "traceback"):
                parts.append(
                    f"<details><summary>traceback</summary><pre class='trace'>{esc(text(r, 'traceback'))}"
                    "</pre></details>"
                )
            parts.append(f"<p><small><a href='{esc(name)}/result.json'>result.json</a></small></p>")
            continue
        if isinstance(r.get("headline"), dict) and r["headline"]:
            rows = "".join(
                f"<tr><td class='key' title='{esc(k)}'>{esc(humanize(k))}</td>"
                f"<td>{esc(format_value(v))}</td></tr>"
                for k, v in r["headline"].items()
            )
            parts.append(f"<table>{rows}</table>")
        opts = r.get("options") if isinstance(r.get("options"), dict) else {}
        opt_text = (
            ("options: " + ", ".join(f"{k}={format_value(v)}" for k, v in opts.items()) + " · ")
            if opts
            else ""
        )
        seconds = r.get("seconds", 0) if isinstance(r.get("seconds"), (int, float)) else 0
        parts.append(
            f"<p><small>{esc(opt_text)}{seconds:.1f} s · "
            f"<a href='{esc(name)}/result.json'>result.json</a></small></p>"
        )
        for fig in r.get("figures") or []:
            if not isinstance(fig, str):
                continue
            stem = fig.rsplit(".", 1)[0]
            links = [f"<a href='{esc(name)}/{esc(fig)}'>PNG</a>"]
            for ext in ("svg", "csv"):
                if (report_dir / name / f"{stem}.{ext}").exists():
                    links.append(f"<a href='{esc(name)}/{esc(stem)}.{ext}'>{ext.upper()}</a>")
            parts.append(
                f"<figure><img src='{esc(name)}/{esc(fig)}' alt='{esc(name)}: {esc(fig)}'>"
                f"<figcaption>{esc(fig)} · {' · '.join(links)}</figcaption></figure>"
            )
        for view in r.get("views") or []:
            if not isinstance(view, str):
                continue
            parts.append(
                f"<figure><iframe src='{esc(name)}/{esc(view)}' title='{esc(view)}'></iframe>"
                f"<figcaption>interactive view: <a href='{esc(name)}/{esc(view)}'>{esc(view)}</a> "
                "(works offline)</figcaption></figure>"
            )
    parts.append("</body></html>")
    index = report_dir / "index.html"
    tmp = index.with_name(".index.html.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, index)
    return index
