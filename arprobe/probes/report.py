"""Running probes on runs and writing the report.

Layout of a report folder (``<run>/report`` by default)::

    <probe>/result.json     status, options, headline numbers, the full result, figure names
    <probe>/*.png           the probe's figures
    index.html              every probe in the folder: description, headline numbers, figures,
                            and the reason for every skipped or failed probe

Every probe runs on its own: a probe that lacks data is skipped with the one-sentence reason,
a probe that raises is recorded as failed with its error, and the next probe runs either way.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from arprobe import __version__
from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, to_jsonable

STATUSES = ("ok", "skipped", "failed")


@dataclass
class Outcome:
    probe: str
    status: str  # ok | skipped | failed
    reason: str = ""  # why skipped or failed: one sentence
    headline: dict = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    folder: Path | None = None


def write_json_atomic(path: Path, data) -> None:
    """Write JSON through a temporary file and os.replace: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _run_label(store) -> str:
    return str(store.path.parent)


def run_probe(probe: Probe, stores: list, report_dir: Path, options: dict | None = None) -> Outcome:
    """Run one probe on ``stores`` (none, one, or several for a multi-run probe) and write its
    folder. Never raises for the probe's own failures: they come back as the Outcome."""
    report_dir = Path(report_dir)
    folder = report_dir / probe.name
    if folder.exists():  # figures of an earlier analysis must not outlive a failed re-run
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    outcome = Outcome(probe=probe.name, status="ok", folder=folder)
    record: dict = {
        "probe": probe.name,
        "description": probe.description,
        "runs": [_run_label(s) for s in stores],
        "arprobe_version": __version__,
    }
    result = None
    error_trace = ""
    try:
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
    except Exception as exc:  # a probe's bug must not stop the others
        outcome.status = "failed"
        outcome.reason = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        error_trace = traceback.format_exc()
    outcome.seconds = time.perf_counter() - started
    outcome.figures = sorted(p.name for p in folder.glob("*.png")) if outcome.status == "ok" else []
    if outcome.status != "ok":
        for png in folder.glob("*.png"):  # half-drawn figures of a failed probe would mislead
            png.unlink()
    record.update(
        {
            "status": outcome.status,
            "reason": outcome.reason,
            "seconds": round(outcome.seconds, 3),
            "headline": outcome.headline,
            "figures": outcome.figures,
            "result": result if outcome.status == "ok" else None,
        }
    )
    if error_trace:
        record["traceback"] = error_trace
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


def write_report(
    stores: list,
    report_dir: Path,
    probes: list[Probe],
    options: dict[str, dict] | None = None,
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
    title: str = "",
) -> list[Outcome]:
    """Run ``probes`` in order on ``stores`` into ``report_dir`` and (re)write its index.html."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for probe in probes:
        outcome = run_probe(probe, stores, report_dir, (options or {}).get(probe.name))
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)
    if not title and len(stores) == 1:  # a report of a run still training should say so
        title = f"{_run_label(stores[0])} ({stores[0].status}, {stores[0].completed_episodes} episodes)"
    write_index(report_dir, title or ", ".join(_run_label(s) for s in stores) or "toy model")
    return outcomes


def failed_outcome(name: str, reason: str, report_dir: Path) -> Outcome:
    """The outcome of a probe that could not even be loaded (e.g. a broken plugin), written like any other."""
    folder = Path(report_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    for png in folder.glob("*.png"):
        png.unlink()
    write_json_atomic(
        folder / "result.json",
        {
            "probe": name,
            "description": "",
            "status": "failed",
            "reason": reason,
            "headline": {},
            "figures": [],
            "result": None,
            "arprobe_version": __version__,
        },
    )
    return Outcome(probe=name, status="failed", reason=reason, folder=folder)


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


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.status { font-size: 0.8em; padding: 0.1em 0.5em; border-radius: 0.3em; margin-left: 0.5em; }
.ok { background: #e3f4e3; } .skipped { background: #f4f0dc; } .failed { background: #f7dede; }
table { border-collapse: collapse; margin: 0.5em 0; }
td { padding: 0.15em 0.8em; border-bottom: 1px solid #eee; }
td.key { color: #555; } img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
.reason { font-family: monospace; white-space: pre-wrap; } nav a { margin-right: 1em; }
"""


def write_index(report_dir: Path, title: str) -> Path:
    """index.html of every ``<probe>/result.json`` in ``report_dir``, ok first, then skipped, then failed."""
    report_dir = Path(report_dir)
    records = []
    for path in sorted(report_dir.glob("*/result.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            records.append(
                {"probe": path.parent.name, "status": "failed", "reason": "result.json is unreadable"}
            )
    records.sort(
        key=lambda r: (
            STATUSES.index(r.get("status", "failed")) if r.get("status") in STATUSES else 3,
            r["probe"],
        )
    )
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>arprobe report: {esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>arprobe report: {esc(title)}</h1>",
        "<nav>" + "".join(f"<a href='#{esc(r['probe'])}'>{esc(r['probe'])}</a>" for r in records) + "</nav>",
    ]
    for r in records:
        name, status = r["probe"], r.get("status", "failed")
        parts.append(
            f"<h2 id='{esc(name)}'>{esc(name)}<span class='status {esc(status)}'>{esc(status)}</span></h2>"
        )
        if r.get("description"):
            parts.append(f"<p>{esc(r['description'])}</p>")
        if status != "ok":
            parts.append(f"<p class='reason'>{esc(r.get('reason', ''))}</p>")
            continue
        if r.get("headline"):
            rows = "".join(
                f"<tr><td class='key'>{esc(k)}</td><td>{esc(format_value(v))}</td></tr>"
                for k, v in r["headline"].items()
            )
            parts.append(f"<table>{rows}</table>")
        if r.get("options"):
            opts = ", ".join(f"{k}={format_value(v)}" for k, v in r["options"].items())
            parts.append(
                f"<p><small>options: {esc(opts)} · {r.get('seconds', 0):.1f} s · "
                f"<a href='{esc(name)}/result.json'>result.json</a></small></p>"
            )
        else:
            parts.append(
                f"<p><small>{r.get('seconds', 0):.1f} s · "
                f"<a href='{esc(name)}/result.json'>result.json</a></small></p>"
            )
        for fig in r.get("figures", []):
            parts.append(f"<div><img src='{esc(name)}/{esc(fig)}' alt='{esc(name)}: {esc(fig)}'></div>")
    parts.append("</body></html>")
    index = report_dir / "index.html"
    tmp = index.with_name(".index.html.tmp")
    tmp.write_text("\n".join(parts))
    os.replace(tmp, index)
    return index
