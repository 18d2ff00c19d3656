"""The sweep folder::

    <out>/<name>/sweep.toml      the sweep file as run
    <out>/<name>/manifest.json   every point: options, seed, run folder, status, wall time, attempts
    <out>/<name>/runs/<point>/run.h5

Only the process that runs ``arprobe sweep`` writes the manifest, always whole (temporary file
and os.replace). The stores are the truth about a run; the manifest is refreshed from them
every time the sweep starts.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from arprobe.errors import UserError
from arprobe.jsonio import write_json_atomic
from arprobe.sweep.spec import Point, SweepSpec, differing_keys, load_sweep

FORMAT = "arprobe-sweep"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SWEEP_FILE = "sweep.toml"

# Store states, as inspect_store reports them.
MISSING, COMPLETE, DIVERGED, UNFINISHED, UNREADABLE = (
    "missing",
    "complete",
    "diverged",
    "unfinished",
    "unreadable",
)


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(sweep_dir: str | Path) -> dict:
    path = Path(sweep_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"'{sweep_dir}' is not a sweep folder (it has no {MANIFEST}).") from None
    except (OSError, json.JSONDecodeError):
        raise UserError(f"'{path}' is not readable JSON; the sweep folder is damaged.") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"'{path}' is not an arprobe sweep manifest.")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"'{path}' was written by a newer arprobe; upgrade arprobe.")
    return manifest


def inspect_store(store_path: Path) -> tuple[str, int, str]:
    """(state, completed episodes, stop reason) of a point's store, without changing it."""
    # lazy: pulls in h5py, which importing this module does not need
    from arprobe.storage import RunStore

    if not Path(store_path).exists():
        return MISSING, 0, ""
    try:
        with RunStore(store_path) as store:
            status, episodes = store.status, store.completed_episodes
            reason = store.stop_reason if status != "complete" else ""
    except (UserError, OSError, KeyError):
        return UNREADABLE, 0, ""
    if status == "complete":
        return COMPLETE, episodes, ""
    if status == "diverged":
        return DIVERGED, episodes, reason
    return UNFINISHED, episodes, reason


def new_entry(point: Point) -> dict:
    return {
        "name": point.name,
        "options": point.options,
        "seed": point.seed,
        "run": f"runs/{point.name}",
        "status": "pending",
        "episodes": 0,
        "seconds": 0.0,
        "error": "",
        "attempts": [],
        **({"control": point.control} if point.control else {}),  # a matched control (spec.CONTROLS)
    }


def open_sweep_dir(spec: SweepSpec, sweep_dir: Path, *, extend: bool) -> tuple[dict, list[Point]]:
    """Create the sweep folder, or check an existing one against ``spec``.

    Returns the manifest and the points to run (old and new). A file that differs from the one the
    folder was made with is refused with the differing keys, unless ``extend`` and the new file
    only adds grid values or seeds.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.exists():
        points = spec.points()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": spec.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "factors": list(spec.grid),
            "grid": spec.grid,
            "seeds": spec.seeds,
            "points": [new_entry(p) for p in points],
        }
        # Made under a temporary name and renamed: a folder is either a whole sweep or absent.
        sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sweep_dir.name}.", dir=sweep_dir.parent))
        try:
            shutil.copyfile(spec.path, tmp / SWEEP_FILE)
            (tmp / "runs").mkdir()
            write_json_atomic(tmp / MANIFEST, manifest)
            os.rename(tmp, sweep_dir)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not is_sweep_dir(sweep_dir):
                raise
            # Another `arprobe sweep` made the folder at the same moment: check against its file.
            return open_sweep_dir(spec, sweep_dir, extend=extend)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return manifest, points
    if not is_sweep_dir(sweep_dir):
        raise UserError(
            f"'{sweep_dir}' exists and is not a sweep folder; choose another --out or sweep name."
        )
    manifest = read_manifest(sweep_dir)
    old = load_sweep(sweep_dir / SWEEP_FILE, name=manifest["name"])
    changed = differing_keys(old, spec)
    taken = {Point.from_entry(e).key: e["name"] for e in manifest["points"]}
    if not changed:
        return manifest, spec.points(taken)
    if not extend:
        raise UserError(
            f"The sweep file differs from the one '{sweep_dir}' was made with ({', '.join(changed)}); "
            "pass --extend to add only its new points, or use another --out or sweep name."
        )
    refuse_unless_extension(old, spec, sweep_dir)
    points = spec.points(taken)
    known = {e["name"] for e in manifest["points"]}
    manifest["points"].extend(new_entry(p) for p in points if p.name not in known)
    manifest["grid"], manifest["seeds"] = spec.grid, spec.seeds
    shutil.copyfile(spec.path, sweep_dir / f".{SWEEP_FILE}.tmp")
    os.replace(sweep_dir / f".{SWEEP_FILE}.tmp", sweep_dir / SWEEP_FILE)
    write_json_atomic(sweep_dir / MANIFEST, manifest)
    return manifest, points


def refuse_unless_extension(old: SweepSpec, new: SweepSpec, sweep_dir: Path) -> None:
    """--extend adds points; it cannot change what the existing points are."""
    base_changed = sorted(k for k in set(old.base) | set(new.base) if old.base.get(k) != new.base.get(k))
    if base_changed:
        raise UserError(
            f"--extend only adds points, but the file changes the options every run shares "
            f"({', '.join(base_changed)}); make a new sweep for that."
        )
    if list(old.grid) != list(new.grid):
        raise UserError(
            f"--extend only adds values to the grid, but the factors changed from "
            f"{', '.join(old.grid) or 'none'} to {', '.join(new.grid) or 'none'}; make a new sweep for that."
        )
    for key, values in old.grid.items():
        gone = [v for v in values if v not in new.grid[key]]
        if gone:
            raise UserError(f"--extend only adds points, but grid.{key} drops {gone}; keep the old values.")
    gone = [s for s in old.seeds if s not in new.seeds]
    if gone:
        raise UserError(f"--extend only adds points, but 'seeds' drops {gone}; keep the old seeds.")


def refresh_from_stores(manifest: dict, sweep_dir: Path) -> None:
    """Set every point's status and episodes from its store (the truth after a kill)."""
    refresh_entries(manifest["points"], sweep_dir)


def refresh_entries(entries: list[dict], sweep_dir: Path) -> None:
    """Set these points' status and episodes from their stores: after Ctrl-C, the runs that were
    going say how far their stores got (their workers' records never arrived)."""
    for entry in entries:
        state, episodes, reason = inspect_store(Path(sweep_dir) / entry["run"] / "run.h5")
        entry["episodes"] = episodes
        entry["status"] = {
            MISSING: "pending",
            COMPLETE: "complete",
            DIVERGED: "diverged",
            UNFINISHED: "interrupted",
            UNREADABLE: "interrupted",
        }[state]
        if state == DIVERGED:
            entry["error"] = reason
        elif state == COMPLETE:
            entry["error"] = ""
