"""One point of a sweep, on whatever process or machine a backend picked.

``run_point(job)`` takes and returns plain JSON-able dicts, so a process pool and Ray ship it the
same way. It looks at the point's store itself (on a cluster only the worker may see the final
state): a complete store is left alone, a diverged one is final, an unfinished one is resumed
from its newest resume checkpoint, and a missing or unreadable one is started from scratch.
It never raises for a run's own failure: that comes back as ``status: failed`` with one line.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from arprobe.errors import UserError
from arprobe.sweep.batching import run_group
from arprobe.sweep.manifest import COMPLETE, DIVERGED, MISSING, UNFINISHED, inspect_store
from arprobe.trainer.config import load_config


def limit_threads(threads: int) -> None:
    """Torch (and BLAS/OpenMP, when called before they load) use ``threads`` threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    # lazy: after the variables above are set (OpenMP reads them when torch loads)
    import torch

    torch.set_num_threads(threads)


def run_point(job: dict) -> dict:
    """job: {"name", "overrides": run options, "threads": int}. Returns the attempt's record:
    {"name", "status", "action", "from_episode", "episodes", "seconds", "error", "host", "pid"}.
    A group job (``sweep.batching``, ``--batch-seeds``) returns {"name", "members": [records]}."""
    if "members" in job:
        return run_group(job)
    started = time.perf_counter()
    record = {
        "name": job["name"],
        "status": "failed",
        "action": "run",
        "from_episode": 0,
        "episodes": 0,
        "seconds": 0.0,
        "error": "",
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    try:
        limit_threads(int(job["threads"]))
        _run(job, record)
    except KeyboardInterrupt:
        record["status"], record["error"] = "failed", "interrupted"
        raise
    except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the sweep
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        record["status"], record["error"] = "failed", (message.splitlines() or [type(exc).__name__])[0]
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def _run(job: dict, record: dict) -> None:
    # lazy: the training loop pulls in torch and h5py; the sweep's driver imports this module too
    from arprobe.storage.resume import resumes
    from arprobe.trainer.loop import resume, run

    cfg = load_config(None, job["overrides"])
    store_path = Path(cfg.run_dir) / "run.h5"
    state, episodes, reason = inspect_store(store_path)
    record["from_episode"] = episodes
    if state in (COMPLETE, DIVERGED):
        record.update(action="skip", status=state, episodes=episodes, error=reason)
        return
    if state == UNFINISHED and resumes(cfg.record.resume_every):
        record["action"] = "resume"
        result = resume(store_path, progress=False)
    else:  # nothing to resume from: a store killed while being created, or recorded without resume points
        record["action"] = "run" if state == MISSING else "restart"
        record["from_episode"] = 0
        result = run(cfg, progress=False, overwrite=state != MISSING)
    record.update(status=result.status, episodes=result.completed_episodes, error=result.stop_reason)


def lost_record(job: dict, what: str, exc: BaseException | None) -> dict:
    """The record of a point whose worker died before it could answer (killed for memory, a lost node)."""
    detail = (str(exc).splitlines() or [""])[0] if exc is not None else ""
    kind = f" ({type(exc).__name__}{': ' + detail if detail else ''})" if exc is not None else ""
    return {
        "name": job["name"],
        "status": "failed",
        "action": "run",
        "error": f"{what}{kind}",
        "seconds": 0.0,
    }
