"""The SLURM backend: every unfinished point of a sweep as one task of one SLURM job array, through
submitit (``pip install -e ".[slurm]"``).

Options come from a ``[slurm]`` table in the sweep file, overridden by ``--slurm KEY=VALUE`` on the
command line (see ``OPTIONS``)::

    [slurm]
    partition = "gpu"
    time = 240                 # minutes per run (the array task's time limit)
    gpus_per_run = 1
    cpus_per_run = 4           # also the run's torch threads
    mem_gb = 16
    account = "my-lab"
    array_parallelism = 16     # tasks of the array running at once
    sbatch = ["--mail-type=END", "--exclude=node07"]   # any other sbatch option
    setup = ["module load cuda/12.1"]                  # shell lines before the run

``arprobe sweep`` submits the array, then waits for its tasks, filling the manifest from each run's
store as tasks end (the stores are the truth: submitit's result files are never read). Ctrl-C stops
the waiting, not the jobs (``scancel`` does that); running the command again while ``squeue`` still
lists the sweep's last array is refused (the two would race for the same run folders).

Preemption and time limits: a run killed by SIGTERM (preemption) stops after its episode with a
resume point; at the time limit SLURM sends USR2 ``signal_delay_s`` seconds early and submitit calls
``SweepTask.checkpoint``, which requeues the same point: the requeued task finds its unfinished store
and resumes it from the newest resume point (``worker.run_point``), up to ``max_requeue`` times.
"""

from __future__ import annotations

import difflib
import json
import logging
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from arprobe.errors import UserError
from arprobe.jsonio import write_json_atomic
from arprobe.sweep.backend import BackendOptions, SweepBackend
from arprobe.sweep.batching import member_jobs
from arprobe.sweep.manifest import COMPLETE, DIVERGED, UNFINISHED, inspect_store
from arprobe.sweep.worker import run_point

INSTALL = 'pip install -e ".[slurm]"'

# [slurm] key -> (type, what it sets). A table of options, not logic.
OPTIONS: dict[str, tuple[type, str]] = {
    "partition": (str, "#SBATCH --partition"),
    "time": (int, "minutes each run may take (#SBATCH --time); default 60"),
    "gpus_per_run": (int, "GPUs per run (#SBATCH --gpus-per-node); default 0"),
    "cpus_per_run": (int, "CPUs per run (#SBATCH --cpus-per-task), also its torch threads; default 1"),
    "mem_gb": (float, "memory per run in GB (#SBATCH --mem)"),
    "account": (str, "#SBATCH --account"),
    "qos": (str, "#SBATCH --qos"),
    "constraint": (str, "#SBATCH --constraint"),
    "array_parallelism": (int, "tasks of the array running at once (the %N of --array); default 256"),
    "sbatch": (list, 'any other sbatch options, e.g. ["--mail-type=END"]'),
    "setup": (list, 'shell lines run before each run, e.g. ["module load cuda"]'),
    "max_requeue": (int, "times a run is requeued at its time limit; default 3"),
    "signal_delay_s": (int, "seconds before the time limit that USR2 asks for a requeue; default 90"),
    "poll_s": (float, "seconds between checks of the tasks' states while waiting; default 30"),
    "logs": (str, "folder of submitit's job files and logs; default <sweep>/slurm"),
    "executor": (str, '"slurm", or "local" to run the tasks as processes here through submitit'),
}
DEFAULT_TIME_MIN = 60
LAST_ARRAY = "last_array.json"  # in the job-files folder: the array last submitted for this sweep
log = logging.getLogger(__name__)  # --verbose: the submission's parameters and each task's state


def import_submitit():
    try:
        # lazy: optional extra
        import submitit
    except ImportError:
        raise UserError(
            f"The slurm backend needs submitit, which is not installed; install it with: {INSTALL}"
        ) from None
    return submitit


def parse_option_flags(flags: list[str]) -> dict:
    """["partition=gpu", "time=120", ...] (``--slurm KEY=VALUE``) -> {"partition": "gpu", "time": 120}.
    A value is read as a TOML value when it is one (numbers, lists), else as text."""
    options: dict = {}
    for flag in flags:
        key, eq, value = flag.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--slurm takes KEY=VALUE, e.g. --slurm partition=gpu; got '{flag}'.")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        key = key.strip()
        if OPTIONS.get(key, (None,))[0] is list and not isinstance(parsed, list):
            options.setdefault(key, []).append(str(parsed))  # repeatable: --slurm sbatch=--exclusive
        else:
            options[key] = parsed
    return options


def check_options(options: dict) -> dict:
    """The [slurm] options with their types checked; an unknown key or a wrong type is one sentence."""
    checked = {}
    for key, value in options.items():
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, list(OPTIONS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(f"Unknown slurm option '{key}'.{hint} Known: {', '.join(OPTIONS)}.")
        kind = OPTIONS[key][0]
        if kind is float and type(value) is int:
            value = float(value)
        if kind is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise UserError(f"slurm option '{key}' must be a list of strings, e.g. {key} = [\"...\"].")
        if type(value) is not kind or (kind in (int, float) and value < 0):
            what = f"a non-negative {kind.__name__}" if kind in (int, float) else "text"
            raise UserError(f"slurm option '{key}' must be {what}, got {value!r}.")
        checked[key] = value
    if checked.get("executor", "slurm") not in ("slurm", "local"):
        raise UserError(f'slurm option \'executor\' must be "slurm" or "local", got {checked["executor"]!r}.')
    if checked.get("time", 1) == 0 or checked.get("array_parallelism", 1) == 0:
        raise UserError("slurm options 'time' and 'array_parallelism' must be at least 1.")
    return checked


def sbatch_extra(args: list[str]) -> dict:
    """["--mail-type=END", "--exclusive"] -> {"mail-type": "END", "exclusive": True} (submitit's
    additional_parameters, which it writes as #SBATCH lines)."""
    extra: dict = {}
    for arg in args:
        if not arg.startswith("--"):
            raise UserError(
                f"slurm option 'sbatch' takes long sbatch options like '--mail-type=END'; got '{arg}'."
            )
        key, eq, value = arg[2:].partition("=")
        extra[key] = value if eq else True
    return extra


def submitit_parameters(options: dict, name: str) -> dict:
    """The SlurmExecutor parameters (the arguments of submitit's sbatch script) of the options."""
    params: dict = {"job_name": f"arprobe-{name}", "time": options.get("time", DEFAULT_TIME_MIN)}
    params["cpus_per_task"] = options.get("cpus_per_run", 1)
    if options.get("gpus_per_run"):
        params["gpus_per_node"] = options["gpus_per_run"]
    if "mem_gb" in options:
        mem = options["mem_gb"]
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    for key in ("partition", "account", "qos", "constraint", "array_parallelism", "signal_delay_s", "setup"):
        if key in options:
            params[key] = options[key]
    if options.get("sbatch"):
        params["additional_parameters"] = sbatch_extra(options["sbatch"])
    return params


class SweepTask:
    """What each array task runs: one point (``worker.run_point``). Checkpointable in submitit's sense:
    at the time limit submitit calls ``checkpoint`` and requeues what it returns — the same point,
    which then resumes from its store's newest resume point (run_point resumes an unfinished store)."""

    def __call__(self, job: dict) -> dict:

        return run_point(job)

    def checkpoint(self, job: dict):
        # lazy: optional extra
        from submitit.helpers import DelayedSubmission

        print(f"arprobe: {job['name']} requeued; it resumes from its newest resume point.", flush=True)
        return DelayedSubmission(SweepTask(), job)


class SlurmBackend(SweepBackend):
    name = "slurm"
    remote_flags = ("gpus_per_run",)

    def __init__(self, options: dict, sweep_dir: Path, sweep_name: str = "sweep"):
        self.options = check_options(options)
        self.sweep_dir = Path(sweep_dir).resolve()
        self.sweep_name = sweep_name
        self.threads = self.options.get("cpus_per_run", 1)
        self.poll_s = self.options.get("poll_s", 30.0)
        self.logs = Path(self.options.get("logs") or self.sweep_dir / "slurm").resolve()

    @classmethod
    def check_available(cls) -> None:
        import_submitit()

    @staticmethod
    def _options(options: BackendOptions) -> dict:
        merged = dict(options.settings)
        if options.gpus_per_run:
            if options.gpus_per_run != int(options.gpus_per_run):
                raise UserError(
                    f"--gpus-per-run must be a whole number on SLURM, got {options.gpus_per_run:g}."
                )
            merged["gpus_per_run"] = int(options.gpus_per_run)
        if options.threads:
            merged.setdefault("cpus_per_run", options.threads)
        if options.workers:
            merged.setdefault("array_parallelism", options.workers)
        return check_options(merged)

    @classmethod
    def plan(cls, options: BackendOptions) -> tuple[int, int]:
        opts = cls._options(options)
        return min(opts.get("array_parallelism", 256), max(options.n_jobs, 1)), opts.get("cpus_per_run", 1)

    @classmethod
    def from_options(cls, options: BackendOptions) -> SlurmBackend:
        return cls(
            cls._options(options), Path(options.sweep_dir or "."), Path(options.sweep_dir or "sweep").name
        )

    def describe(self) -> str:
        where = "local processes (submitit's local executor)" if self.executor_kind == "local" else "SLURM"
        part = f" on partition {self.options['partition']}" if "partition" in self.options else ""
        gpus = f", {self.options['gpus_per_run']} GPU(s)" if self.options.get("gpus_per_run") else ""
        return (
            f"slurm: one job array on {where}{part}, {self.threads} CPU(s){gpus} and "
            f"{self.options.get('time', DEFAULT_TIME_MIN)} min per run"
        )

    @property
    def executor_kind(self) -> str:
        return self.options.get("executor", "slurm")

    def parameters(self) -> dict:
        return submitit_parameters(self.options, self.sweep_name)

    def submission_text(self, n_tasks: int) -> str:
        """The sbatch script the array would be submitted with (for --dry-run), without submitting."""
        # lazy: optional extra
        from submitit.slurm.slurm import _make_sbatch_string

        command = (
            f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(self.logs / '%j'))}"
        )
        return _make_sbatch_string(
            command=command, folder=self.logs / "%j", map_count=n_tasks, **self.parameters()
        )

    def dry_run_text(self, n_tasks: int) -> str:
        if n_tasks == 0:
            return "slurm: nothing to submit (every run is complete or diverged)."
        at_once = min(self.options.get("array_parallelism", 256), n_tasks)
        return (
            f"slurm: would submit one job array of {n_tasks} task(s), {at_once} at once, with this sbatch "
            f"script (job files in {self.logs}):\n{self.submission_text(n_tasks)}"
        )

    def _executor(self):
        submitit = import_submitit()
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.executor_kind == "local":
            executor = submitit.LocalExecutor(folder=self.logs / "%j")
            executor.update_parameters(timeout_min=self.options.get("time", DEFAULT_TIME_MIN))
            return executor
        try:
            executor = submitit.SlurmExecutor(
                folder=self.logs / "%j", max_num_timeout=self.options.get("max_requeue", 3)
            )
        except RuntimeError:
            raise UserError(
                "The slurm backend found no 'srun' on PATH; run the sweep on a SLURM login node "
                '(or set executor = "local" in [slurm] to try it here).'
            ) from None
        executor.update_parameters(**self.parameters())
        return executor

    def _refuse_if_still_queued(self) -> None:
        """The sweep's previous array, while SLURM still lists it, would race the new one for the same
        run folders: say so instead of submitting again."""
        try:
            array_id = str(json.loads((self.logs / LAST_ARRAY).read_text())["array"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if self.executor_kind != "slurm" or not array_id.isdigit():
            return
        try:
            listed = subprocess.run(
                ["squeue", "-h", "-j", array_id, "-o", "%i"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError):
            return  # no squeue here: the runs' writer locks still keep one writer per run
        if listed.returncode == 0 and listed.stdout.strip():
            raise UserError(
                f"Job array {array_id} of this sweep is still queued or running (squeue -j {array_id}); "
                f"wait for it to end, or stop it with scancel {array_id}, then run the same command again."
            )

    def run(
        self, jobs: list[dict], on_start: Callable[[dict], None], on_done: Callable[[dict, dict], None]
    ) -> None:
        """Submit every job as one array, then wait for its tasks; each ended task's record comes
        from its point's store. Ctrl-C stops the waiting and leaves the tasks running."""
        if not jobs:
            return
        self._refuse_if_still_queued()
        executor = self._executor()
        log.info("submitit %s executor, parameters: %s", self.executor_kind, self.parameters())
        try:
            submitted = executor.map_array(SweepTask(), jobs)
        except Exception as exc:  # noqa: BLE001 - sbatch refused (bad partition, account): its own words
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
            raise UserError(f"sbatch refused the job array: {detail}") from None
        array_id = submitted[0].job_id.split("_")[0]
        write_json_atomic(self.logs / LAST_ARRAY, {"array": array_id, "points": [j["name"] for j in jobs]})
        print(f"submitted job array {array_id} ({len(jobs)} task(s)); job files in {self.logs}", flush=True)
        for job in jobs:
            on_start(job)
        waiting = dict(zip(submitted, jobs))
        try:
            while waiting:
                for task, job in list(waiting.items()):
                    if task.done():
                        log.info("task %s (%s) ended", task.job_id, job["name"])
                        del waiting[task]
                        on_done(job, task_record(job, task))
                if waiting:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            if self.executor_kind == "slurm":
                print(
                    f"Stopped waiting; the tasks of job array {array_id} keep running (scancel {array_id} "
                    "stops them). Run the same command again once they end to collect their results.",
                    file=sys.stderr,
                )
            raise


def task_record(job: dict, task) -> dict:
    """The record of an ended array task, read from its point's store (the stores are the truth;
    submitit's pickled result is not read back). A group job gets one record per member."""

    try:
        state = str(task.state)
    except Exception:  # noqa: BLE001 - sacct unavailable: the store still tells
        state = "UNKNOWN"
    records = [point_record(member, task.job_id, state, _stderr_tail(task)) for member in member_jobs(job)]
    return records[0] if "members" not in job else {"name": job["name"], "members": records}


def point_record(job: dict, job_id: str, state: str, stderr_tail: str) -> dict:

    store = Path(job["overrides"]["out"]) / str(job["overrides"]["name"]) / "run.h5"
    found, episodes, reason = inspect_store(store)
    status = {COMPLETE: "complete", DIVERGED: "diverged", UNFINISHED: "interrupted"}.get(found, "failed")
    error = reason if status != "complete" else ""
    if status in ("interrupted", "failed") and not error:
        error = f"SLURM task {job_id} ended {state}" + (f": {stderr_tail}" if stderr_tail else "")
    return {
        "name": job["name"],
        "status": status,
        "action": "slurm",
        "episodes": episodes,
        "seconds": 0.0,
        "error": error,
        "host": "",
        "slurm_job": job_id,
    }


def _stderr_tail(task) -> str:
    """The last non-empty line of a task's stderr log, if it has one."""
    try:
        text = task.stderr() or ""
    except Exception:  # noqa: BLE001 - no log (yet)
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
