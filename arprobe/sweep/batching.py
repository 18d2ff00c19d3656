"""``arprobe sweep --batch-seeds``: points that may train as one vmapped model go as one job.

Points are grouped when their run configs are equal but for what ``trainer.members.BATCHABLE``
allows (seed, order, data randomness); each group of up to N points is one job whose worker
trains the points that have no store yet as one stacked model (``loop.run_many``) and every other
point (to resume, or when the group turns out not to be batchable, e.g. ``insert`` schedules of
different lengths) as an ordinary run. A group job carries its points' jobs under ``members``;
the sweep's manifest keeps one entry per point as always.

How many points a group takes is checked against the free memory of the runs' device before any
job starts (``members_for``): an asked-for N that does not fit is refused in one sentence naming
the N that does; ``--batch-seeds`` without N (``AUTO``) takes as many as fit, up to 8.
"""

from __future__ import annotations

import time
from pathlib import Path

from arprobe.errors import UserError
from arprobe.sweep.manifest import MISSING, inspect_store
from arprobe.trainer.config import load_config
from arprobe.trainer.memory import check_members_fit, members_that_fit

AUTO = -1  # --batch-seeds without N: as many points a group as the device holds, up to AUTO_MOST
AUTO_MOST = 8


def members_for(cfg, asked: int, points: int) -> int:
    """Points per group job for runs of ``cfg`` (``points`` of them batchable together): ``asked``
    when it fits the runs' device (else UserError naming what fits), or for ``AUTO`` the most that
    fit, up to ``AUTO_MOST``. A model whose shapes cannot be read here is not checked."""
    # lazy: pulls in torch, which importing this module does not need
    from arprobe.models.text import resolve_device

    # lazy: pulls in h5py, which importing this module does not need
    from arprobe.trainer.plan import config_shape, planned_free_memory

    most = min(AUTO_MOST if asked == AUTO else asked, max(points, 1))
    shape = config_shape(cfg)
    if shape is None or most <= 1:
        return max(most, 1)
    device, free = planned_free_memory(resolve_device(cfg.model.device))
    if asked != AUTO:
        check_members_fit(cfg, shape, most, device, free)
        return most
    return max(1, members_that_fit(cfg, shape, free, most))


def group_jobs(jobs: list[dict], max_members: int) -> list[dict]:
    """Jobs with the batchable points gathered into group jobs of at most ``max_members`` (``AUTO``:
    as many as the device holds), each size checked against the device's free memory."""
    from arprobe.trainer.members import batch_key  # torch: not at `arprobe sweep --help`

    groups: dict[str, list[dict]] = {}
    for job in jobs:
        key = f"{job['threads']}|{batch_key(load_config(None, job['overrides']))}"
        groups.setdefault(key, []).append(job)
    out = []
    for members in groups.values():
        size = members_for(load_config(None, members[0]["overrides"]), max_members, len(members))
        for lo in range(0, len(members), size):
            chunk = members[lo : lo + size]
            if len(chunk) == 1:
                out.append(chunk[0])
            else:
                name = f"batch[{chunk[0]['name']} +{len(chunk) - 1}]"
                out.append({"name": name, "members": chunk, "threads": chunk[0]["threads"]})
    return out


def member_jobs(job: dict) -> list[dict]:
    """The points' own jobs of a job (itself, unless it is a group)."""
    return job.get("members", [job])


def member_records(job: dict, record: dict) -> list[tuple[dict, dict]]:
    """(point job, its record) for every point of a finished job."""
    if "members" not in job:
        return [(job, record)]
    by_name = {r["name"]: r for r in record.get("members", [])}
    return [(m, by_name.get(m["name"]) or {**record, "name": m["name"]}) for m in job["members"]]


def run_group(job: dict) -> dict:
    """Worker side of a group job: the points without a store as one batched model, the rest (and
    all of them when the group cannot be batched) one by one. Returns {"name", "members": records}."""
    # lazy: import cycle (arprobe.sweep.worker imports this module)
    from arprobe.sweep.worker import limit_threads, lost_record, run_point

    # lazy: pulls in h5py, torch, which importing this module does not need
    from arprobe.trainer.loop import run_many

    limit_threads(int(job["threads"]))
    fresh, records = [], []
    for member in job["members"]:
        cfg = load_config(None, member["overrides"])
        if inspect_store(Path(cfg.run_dir) / "run.h5")[0] == MISSING:
            fresh.append((member, cfg))
        else:
            records.append(run_point(member))
    if len(fresh) == 1:
        records.append(run_point(fresh[0][0]))
    elif fresh:
        started = time.perf_counter()
        try:
            results = run_many([cfg for _, cfg in fresh], progress=False)
        except UserError:  # not batchable after all (schedule lengths): one by one
            records += [run_point(member) for member, _ in fresh]
        except Exception as exc:  # noqa: BLE001 - one group's failure must not stop the sweep
            records += [lost_record(member, "the batched run failed", exc) for member, _ in fresh]
        else:
            share = round((time.perf_counter() - started) / len(fresh), 3)
            for (member, _), result in zip(fresh, results):
                records.append(
                    {
                        "name": member["name"],
                        "status": result.status,
                        "action": f"run-batched x{len(fresh)}",
                        "from_episode": 0,
                        "episodes": result.completed_episodes,
                        "seconds": share,  # the group's wall time over its members
                        "error": result.stop_reason,
                    }
                )
    return {"name": job["name"], "members": records}
