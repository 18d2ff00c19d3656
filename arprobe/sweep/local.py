"""The local backend: worker processes on this machine, each with its torch threads limited so
that workers × threads does not exceed the cores this process may use.

A worker process lives for the whole sweep and runs points one after another, so the imports
(torch, transformers) and other start-up costs are paid once per worker, not once per point.
Each worker has its own pipe: a point that fails comes back as a failed record and the worker
goes on; a worker that dies (killed for memory, a crash in native code) costs only its own
point, which is handed out again once (it resumes from its store) and fails if its worker dies
again; a new worker takes the dead one's place. With GPUs, worker i sees only GPU i (mod the
number of GPUs) through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import wait

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


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries: the ones it already
    names, else 0 .. device_count - 1. Empty without CUDA."""
    # lazy: the sweep's driver loads torch only when its runs would use a GPU
    import torch

    if not torch.cuda.is_available():
        return []
    named = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    count = torch.cuda.device_count()
    return named[:count] if named else [str(i) for i in range(count)]


class LocalBackend(SweepBackend):
    name = "local"

    def __init__(self, workers: int, threads: int, gpus: list[str] | None = None, runner=run_point):
        self.workers, self.threads = workers, threads
        self.gpus = list(gpus or [])  # worker i gets gpus[i % len(gpus)]; empty: CPU (or the parent's view)
        self.runner = (
            runner  # job -> record in the worker process (a module-level function: spawn pickles it)
        )

    @classmethod
    def plan(cls, options: BackendOptions) -> tuple[int, int]:
        # GPU runs: one worker per visible GPU unless told (one run per GPU at a time).
        workers = options.workers or (max(1, len(visible_gpus())) if options.uses_gpu else 0)
        return split_cores(available_cores(), max(options.n_jobs, 1), workers, options.threads)

    @classmethod
    def from_options(cls, options: BackendOptions) -> LocalBackend:
        gpus = visible_gpus() if options.uses_gpu else []
        workers, threads = cls.plan(options)
        if options.uses_gpu and not options.workers:
            if len(gpus) > 1:
                print(
                    f"GPU runs: one per GPU on the local backend, {workers} at a time "
                    "(CUDA_VISIBLE_DEVICES per worker); --workers N sets another number."
                )
            else:
                print(
                    "GPU runs: one at a time on the local backend; --workers N shares the GPU among N runs."
                )
        return cls(workers, threads, gpus)

    def describe(self) -> str:
        gpus = f", GPU(s) {','.join(self.gpus)} one per worker" if len(self.gpus) > 1 else ""
        return f"local: {self.workers} worker process(es) × {self.threads} torch thread(s){gpus}"

    def gpu_of(self, index: int) -> str | None:
        """The ``CUDA_VISIBLE_DEVICES`` of worker ``index`` (None: inherit this process's)."""
        return self.gpus[index % len(self.gpus)] if len(self.gpus) > 1 else None

    def run(
        self, jobs: list[dict], on_start: Callable[[dict], None], on_done: Callable[[dict, dict], None]
    ) -> None:
        """Run every job; ``on_start(job)`` when it is first handed to a worker, ``on_done(job,
        record)`` when it returns. At most ``workers`` jobs are in flight, so "started" means running."""
        if not jobs:
            return
        # spawn, not fork: a forked child of a process that already ran torch can deadlock in OpenMP.
        context = multiprocessing.get_context("spawn")
        pending, started, died_once = list(jobs), set(), set()
        workers: list[_Worker | None] = [None] * min(self.workers, len(jobs))
        try:
            while pending or any(w is not None and w.job is not None for w in workers):
                for i, worker in enumerate(workers):
                    if not pending:
                        break
                    if worker is None or (worker.job is None and not worker.process.is_alive()):
                        worker = workers[i] = _Worker(context, self.threads, self.gpu_of(i), self.runner)
                    if worker.job is None:
                        worker.give(pending.pop(0))
                        if worker.job["name"] not in started:
                            started.add(worker.job["name"])
                            on_start(worker.job)
                busy = [w for w in workers if w is not None and w.job is not None]
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for i, worker in enumerate(workers):
                    if worker is None or worker.job is None:
                        continue
                    job, record, exitcode = worker.poll()
                    if record is not None:
                        on_done(job, record)
                    elif exitcode is not None:  # died with the job: a new worker takes its place
                        workers[i] = None
                        if job["name"] in died_once:
                            on_done(
                                job,
                                lost_record(
                                    job, f"the worker process died twice (exit code {exitcode})", None
                                ),
                            )
                        else:
                            died_once.add(job["name"])
                            pending.insert(0, job)  # once more: it resumes from its store
        finally:
            # Normal end, Ctrl-C or an error: every worker is told to stop and waited for (a run
            # that got the Ctrl-C too finishes its episode and closes its store first).
            for worker in workers:
                if worker is not None:
                    worker.stop()


class _Worker:
    """One worker process and its pipe; ``job`` is the point it is running (None: idle)."""

    def __init__(self, context, threads: int, gpu: str | None, runner):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, threads, gpu, runner), daemon=True)
        self.process.start()
        child.close()
        self.job: dict | None = None

    def give(self, job: dict) -> None:
        self.job = job
        self.conn.send(job)

    def poll(self) -> tuple[dict, dict | None, int | None]:
        """(job, its record or None, the exit code if the process died without one)."""
        job = self.job
        try:
            if self.conn.poll():
                record = self.conn.recv()
                self.job = None
                return job, record, None
        except (EOFError, OSError):
            pass
        if self.process.is_alive():
            return job, None, None
        self.process.join()
        self.job = None
        return job, None, self.process.exitcode

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):  # already gone
            pass
        self.process.join()
        self.conn.close()


def _worker_main(conn, threads: int, gpu: str | None, runner) -> None:
    """A worker process: run the points it is sent, one after another, until told to stop."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before torch loads (limit_threads imports it)
    limit_threads(threads)
    try:
        while (job := conn.recv()) is not None:
            conn.send(runner(job))
    except (KeyboardInterrupt, EOFError):  # Ctrl-C reaches the whole process group; the parent handles it
        return
