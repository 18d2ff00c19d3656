"""The sweep backend protocol, and the registry of backends (the ``arprobe.sweep_backends`` group).

A backend decides where the runs of a sweep train; it shares nothing with the sweep but the
folder. What it gets and what it must do:

- ``from_options(options)``: built from the command line's ``BackendOptions`` — workers (runs at
  once, 0: the backend's default), threads (torch threads per run, 0: the backend's default),
  the number of jobs, whether runs would use this machine's GPU, and the flags of remote
  backends (address, gpus_per_run). It keeps ``threads``, the torch threads of every run.
- ``describe()``: one line for people ("local: 2 worker process(es) × 1 torch thread(s)").
- ``run(jobs, on_start, on_done)``: run every job — a dict {"name", "overrides", "threads"} that
  ``arprobe.sweep.worker.run_point(job)`` trains into its run folder under the sweep folder and
  answers with a record {"name", "status", "error", "episodes", "seconds", ...}. Call
  ``on_start(job)`` when a job starts and ``on_done(job, record)`` when it ends, from the calling
  thread; a job whose worker died gets ``worker.lost_record(job, why, exc)``. A run stopped half-way
  is resumed from its store the next time the sweep runs, so a backend never retries by itself
  beyond what it says in its docstring. Return when every job is done; let KeyboardInterrupt through.

Built-ins (``local``, ``ray``, ``slurm``) are declared in pyproject.toml as a third-party backend is::

    [project.entry-points."arprobe.sweep_backends"]
    slurm = "my_package.slurm:SlurmBackend"
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from arprobe.registry import Registry

GROUP = "arprobe.sweep_backends"


@dataclass
class BackendOptions:
    """What the command line says about where runs go."""

    workers: int = 0  # runs at once (0: the backend's default)
    threads: int = 0  # torch threads per run (0: the backend's default)
    n_jobs: int = 1  # jobs the sweep hands over (a batched group of seeds is one job)
    uses_gpu: bool = False  # runs would land on a GPU of this machine
    address: str = ""  # a cluster to join (remote backends)
    gpus_per_run: float = 0.0  # GPUs each run reserves (remote backends)
    settings: dict = field(default_factory=dict)  # the backend's own options: [slurm] table + --slurm
    sweep_dir: str = ""  # the sweep folder (where a batch backend keeps its job files)


class SweepBackend(ABC):
    name: str = ""
    threads: int  # torch threads of every run it starts
    remote_flags: tuple[str, ...] = ()  # the BackendOptions fields beyond workers/threads it accepts

    @classmethod
    def check_available(cls) -> None:
        """Raise a one-sentence UserError when the backend cannot run here (a missing extra)."""
        return None

    @classmethod
    @abstractmethod
    def from_options(cls, options: BackendOptions) -> SweepBackend:
        """The backend for one `arprobe sweep` call."""

    @classmethod
    @abstractmethod
    def plan(cls, options: BackendOptions) -> tuple[int, int]:
        """(runs at once, threads per run) it would use, without starting anything (--dry-run)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people: where the runs go, how many at once, with how many threads."""

    @abstractmethod
    def run(
        self, jobs: list[dict], on_start: Callable[[dict], None], on_done: Callable[[dict, dict], None]
    ) -> None:
        """Run every job, calling ``on_start(job)`` and ``on_done(job, record)`` as they go."""


@functools.cache
def backend_registry() -> Registry:
    """The registry of installed sweep backends, built once per process."""
    return Registry(GROUP, base=SweepBackend, kind="sweep backend")


def backend_class(name: str) -> type[SweepBackend]:
    """The backend class of ``name``; an unknown name lists the installed ones."""
    return backend_registry().load(name)
