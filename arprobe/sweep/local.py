"""The local backend: a pool of worker processes on this machine, each with its torch threads
limited so that workers × threads does not exceed the cores this process may use."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from arprobe.sweep.backend import BackendOptions, SweepBackend
from arprobe.sweep.worker import limit_threads, lost_record, run_point


def available_cores() -> int:
    """Cores in this process's affinity mask (what a container or taskset allows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def split_cores(cores: int, n_jobs: int, workers: int = 0, threads: int = 0) -> tuple[int, int]:
    """(workers, torch threads per run) for ``n_jobs`` runs on ``cores`` cores.

    Default: one thread per run and a worker per core (small models scale badly over threads, so
    runs side by side beat threads inside a run); fewer runs than cores share the spare cores.
    A given --workers gets the cores split among its workers; a given --threads, cores / threads
    workers.
    """
    if workers and threads:
        return workers, threads
    if workers:
        return workers, max(1, cores // workers)
    if threads:
        return max(1, min(cores // threads, n_jobs)), threads
    workers = max(1, min(cores, n_jobs))
    return workers, max(1, cores // workers)


def _init_worker(threads: int) -> None:
    limit_threads(threads)


class LocalBackend(SweepBackend):
    name = "local"

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads

    @classmethod
    def plan(cls, options: BackendOptions) -> tuple[int, int]:
        # Runs of one machine share its GPU (device auto is cuda:0): one at a time unless told.
        workers = options.workers or (1 if options.uses_gpu else 0)
        return split_cores(available_cores(), max(options.n_jobs, 1), workers, options.threads)

    @classmethod
    def from_options(cls, options: BackendOptions) -> LocalBackend:
        if options.uses_gpu and not options.workers:
            print("GPU runs: one at a time on the local backend; --workers N shares the GPU among N runs.")
        return cls(*cls.plan(options))

    def describe(self) -> str:
        return f"local: {self.workers} worker process(es) × {self.threads} torch thread(s)"

    def run(
        self, jobs: list[dict], on_start: Callable[[dict], None], on_done: Callable[[dict, dict], None]
    ) -> None:
        """Run every job; ``on_start(job)`` when it is handed to a worker, ``on_done(job, record)``
        when it returns. At most ``workers`` jobs are in flight, so "started" means running."""
        if not jobs:
            return
        # spawn, not fork: a forked child of a process that already ran torch can deadlock in OpenMP.
        context = multiprocessing.get_context("spawn")
        pending, in_flight, broken_once = list(jobs), {}, set()
        pool = None
        try:
            while pending or in_flight:
                if pool is None:
                    pool = ProcessPoolExecutor(
                        max_workers=self.workers,
                        mp_context=context,
                        initializer=_init_worker,
                        initargs=(self.threads,),
                    )
                while pending and len(in_flight) < self.workers:
                    job = pending.pop(0)
                    in_flight[pool.submit(run_point, job)] = job
                    on_start(job)
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    # A worker died (killed for memory, a signal): the pool ends every run in it. Runs
                    # caught in a first break go again (they resume from their stores); a second
                    # break fails them, so a run that kills its worker cannot loop forever.
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = None
                    for future, job in in_flight.items():
                        if job["name"] in broken_once:
                            exc = None if future.cancelled() else future.exception()
                            on_done(job, lost_record(job, "the worker process died", exc))
                        else:
                            broken_once.add(job["name"])
                            pending.insert(0, job)
                    in_flight = {}
                    continue
                for future in done:
                    job = in_flight.pop(future)
                    try:
                        record = future.result()
                    except Exception as exc:  # noqa: BLE001 - e.g. a result that could not be sent back
                        record = lost_record(job, "the worker process failed", exc)
                    on_done(job, record)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
