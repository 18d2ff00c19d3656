"""Running a sweep: open or check the folder, refresh the manifest from the stores, hand the
unfinished points to a backend, keep the manifest and a progress bar current, list failures."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from arprobe.errors import UserError
from arprobe.jsonio import write_json_atomic
from arprobe.storage.lock import pid_alive
from arprobe.sweep.batching import group_jobs, member_jobs, member_records
from arprobe.sweep.manifest import (
    MANIFEST,
    is_sweep_dir,
    open_sweep_dir,
    refresh_entries,
    refresh_from_stores,
)
from arprobe.sweep.spec import Point, SweepSpec
from arprobe.trainer.config import all_keys

log = logging.getLogger(__name__)  # --verbose: a line per finished run

# Statuses a point can end a sweep with that are not success.
BAD = ("failed", "diverged", "stopped", "interrupted")


@dataclass
class SweepOutcome:
    sweep_dir: Path
    total: int
    complete: int
    ran: int  # points trained (started or resumed) in this call
    skipped: int  # points already complete when the call began
    failures: list[dict]  # manifest entries that did not complete: name, status, error


def run_threads_option() -> bool:
    """Whether RunConfig has the ``threads`` field (the loop then applies it itself)."""
    return "threads" in all_keys()


def make_jobs(spec: SweepSpec, sweep_dir: Path, entries: list[dict], threads: int) -> list[dict]:
    jobs = []
    with_threads = run_threads_option()
    for entry in entries:
        point = Point.from_entry(entry)
        # Absolute: a Ray worker on another node starts elsewhere; the folder must be the same path there.
        overrides = spec.overrides(point, Path(sweep_dir).resolve() / "runs")
        if with_threads and "threads" not in overrides:
            overrides["threads"] = threads
        jobs.append({"name": point.name, "overrides": overrides, "threads": threads})
    return jobs


def execute_sweep(
    spec: SweepSpec, sweep_dir: Path, backend, *, extend: bool, progress: bool, batch_seeds: int = 0
) -> SweepOutcome:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.exists():
        open_sweep_dir(spec, sweep_dir, extend=extend)  # made whole, or not at all
    elif not is_sweep_dir(sweep_dir):
        raise UserError(
            f"'{sweep_dir}' exists and is not a sweep folder; choose another --out or sweep name."
        )
    with sweep_lock(sweep_dir):  # the check against the folder's file, and any --extend, under the lock
        manifest, points = open_sweep_dir(spec, sweep_dir, extend=extend)
        return _execute(
            spec, sweep_dir, backend, manifest, points, progress=progress, batch_seeds=batch_seeds
        )


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path):
    """One `arprobe sweep` per folder at a time: two would train the same points and race on the
    manifest. A lock left by a killed sweep (its process gone) is taken over."""
    lock = Path(sweep_dir) / ".lock"
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            host, _, pid = lock.read_text().partition(" ")
            if host == socket.gethostname() and pid.strip().isdigit() and pid_alive(int(pid)):
                raise UserError(
                    f"'{sweep_dir}' is being run by process {pid.strip()}; wait for it or stop it first."
                ) from None
            if host != socket.gethostname():
                raise UserError(
                    f"'{sweep_dir}' is being run from {host} (or was, and was killed there); "
                    f"if no sweep runs there, delete {lock} and try again."
                ) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


class Tracker:
    """The manifest and the progress bar, kept up to date as the backend starts and finishes jobs
    (a job is one point, or a group of batched seeds); the manifest is rewritten at each change."""

    def __init__(self, entries: dict, manifest: dict, sweep_dir: Path, skipped: int, progress: bool):
        # lazy: tqdm takes seconds to import; only this path needs it
        from tqdm.auto import tqdm

        self.entries, self.manifest, self.sweep_dir = entries, manifest, sweep_dir
        self.running: list[str] = []
        self.bar = tqdm(
            total=len(entries),
            initial=skipped,
            desc="runs",
            unit="run",
            disable=not progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )

    def show_running(self) -> None:
        running = self.running
        shown = ", ".join(running[:3]) + (f" +{len(running) - 3}" if len(running) > 3 else "")
        self.bar.set_postfix_str(f"running: {shown}" if running else "")

    def on_start(self, job: dict) -> None:
        for point in member_jobs(job):
            entry = self.entries[point["name"]]
            entry["status"] = "running"
            entry["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.running.append(point["name"])
        self.show_running()
        write_json_atomic(self.sweep_dir / MANIFEST, self.manifest)

    def on_done(self, job: dict, record: dict) -> None:
        for point, point_record in member_records(job, record):
            entry = self.entries[point["name"]]
            entry["status"] = point_record["status"]
            entry["error"] = point_record.get("error", "")
            entry["episodes"] = point_record.get("episodes", entry["episodes"])
            entry["seconds"] = round(entry.get("seconds", 0.0) + point_record.get("seconds", 0.0), 3)
            entry["attempts"].append({k: v for k, v in point_record.items() if k != "name"})
            self.running.remove(point["name"])
            self.bar.update(1)
            log.info(
                "%s: %s after %s episodes, %.1f s%s",
                point["name"],
                point_record["status"],
                point_record.get("episodes", "?"),
                point_record.get("seconds", 0.0),
                f" on {point_record['host']}" if point_record.get("host") else "",
            )
            if point_record["status"] != "complete":
                self.bar.write(
                    f"  {point['name']}: {point_record['status']}: {entry['error']}", file=sys.stderr
                )
        self.show_running()
        write_json_atomic(self.sweep_dir / MANIFEST, self.manifest)


def _execute(
    spec: SweepSpec,
    sweep_dir: Path,
    backend,
    manifest: dict,
    points: list,
    *,
    progress: bool,
    batch_seeds: int = 0,  # > 0: batchable points go as groups of up to this many (sweep.batching)
) -> SweepOutcome:
    refresh_from_stores(manifest, sweep_dir)
    wanted = {p.name for p in points}
    entries = {e["name"]: e for e in manifest["points"] if e["name"] in wanted}
    skipped = sum(e["status"] in ("complete", "diverged") for e in entries.values())
    todo = [e for e in entries.values() if e["status"] not in ("complete", "diverged")]
    resuming = sum(e["status"] == "interrupted" for e in todo)
    print(
        f"sweep {spec.name}: {len(entries)} runs — {skipped} already done, {resuming} to resume, "
        f"{len(todo) - resuming} to start; {backend.describe()}"
    )
    print(f"folder: {sweep_dir}")
    write_json_atomic(sweep_dir / MANIFEST, manifest)

    tracker = Tracker(entries, manifest, sweep_dir, skipped, progress)
    jobs = make_jobs(spec, sweep_dir, todo, backend.threads)
    if batch_seeds:
        jobs = group_jobs(jobs, batch_seeds)
    try:
        backend.run(jobs, tracker.on_start, tracker.on_done)
    except KeyboardInterrupt:
        # The backend has stopped its workers by now: their stores say how far each run got.
        refresh_entries([entries[name] for name in tracker.running], sweep_dir)
        for name in tracker.running:
            if entries[name]["status"] == "pending":  # no store yet: it was only starting
                entries[name]["status"] = "interrupted"
        raise
    finally:
        tracker.bar.close()
        write_json_atomic(sweep_dir / MANIFEST, manifest)

    failures = [
        {"name": e["name"], "status": e["status"], "error": e.get("error", "")}
        for e in entries.values()
        if e["status"] != "complete"
    ]
    return SweepOutcome(
        sweep_dir=sweep_dir,
        total=len(entries),
        complete=sum(e["status"] == "complete" for e in entries.values()),
        ran=len(todo),
        skipped=skipped,
        failures=failures,
    )
