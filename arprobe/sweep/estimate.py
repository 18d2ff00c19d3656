"""``arprobe sweep --dry-run``: the points, the store-size estimate and a time estimate.

Sizes come from the trainer's public plan (``arprobe.trainer.plan.plan``, what ``arprobe run
--dry-run`` prints), once per point-without-seed: the data, tokenizer and model are built to
count parameters and shapes, so a hub model or dataset must be reachable (or cached), as for the
run itself.

Time is a rough model: the floating-point work of a run (6·N per trained token, 2·N per
evaluated token, N parameters) at 30% of this machine's measured matmul rate with the run's
threads, plus a few seconds of setup per run. Completed runs of the same sweep calibrate it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from arprobe.errors import UserError
from arprobe.sweep.spec import Point, SweepSpec

EFFICIENCY = 0.3  # fraction of the measured matmul rate a training step reaches (benchmarks: 0.35-0.47)
SETUP_SECONDS = 5.0  # imports, tokenizer from cache, model build, store creation


@dataclass
class PointPlan:
    store_bytes: int | None
    flops: float | None
    note: str = ""  # why the estimate is missing


def plan_point(overrides: dict) -> PointPlan:
    """Store size and floating-point work of one run, from the trainer's plan of it."""
    from arprobe.trainer.config import load_config
    from arprobe.trainer.plan import plan

    cfg = load_config(None, overrides)
    try:
        planned = plan(cfg)
    except UserError as exc:
        return PointPlan(None, None, str(exc))
    N, K = float(planned.n_params), planned.episodes
    C, M, T = cfg.data.context_length, cfg.schedule.steps_per_doc, cfg.data.n_docs
    flops = 6 * N * C * M * K + 2 * N * C * T * (K + 1)
    return PointPlan(planned.store_bytes, flops)


def matmul_rate(threads: int) -> float:
    """float32 FLOP/s of a 1024² matmul with ``threads`` torch threads (best of a few)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        a @ b
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(before)
    return 2 * 1024**3 / best


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def dry_run_text(
    spec: SweepSpec,
    points: list[Point],
    sweep_dir: Path,
    *,
    workers: int,
    threads: int,
    statuses: dict[str, str],
    note: str = "",
) -> str:
    """The table --dry-run prints: every point, what would happen to it, sizes, time."""
    from arprobe.trainer.plan import human_bytes

    plans: dict[str, PointPlan] = {}
    for point in points:
        if point.group_key not in plans:
            plans[point.group_key] = plan_point(spec.overrides(point, sweep_dir / "runs"))
    rate = matmul_rate(threads) * EFFICIENCY

    def estimate(plan: PointPlan) -> float | None:
        return None if plan.flops is None else plan.flops / rate + SETUP_SECONDS

    # Calibrate on this sweep's finished runs: measured wall time over the model's estimate.
    ratios = [
        seconds / est
        for p in points
        if statuses.get(p.name, ("", 0.0))[0] == "complete"
        and (seconds := statuses[p.name][1]) > 0
        and (est := estimate(plans[p.group_key]))
    ]
    factor = statistics.median(ratios) if ratios else 1.0

    width = max([len(p.name) for p in points] + [5])
    lines = [
        f"sweep {spec.name}: {len(points)} runs ({len(spec.seeds)} seed(s) × {len(plans)} point(s)) "
        f"-> {sweep_dir}"
    ]
    if spec.grid:
        from arprobe.sweep.spec import show

        lines.append(
            "grid: " + "; ".join(f"{k} = [{' | '.join(show(v) for v in vs)}]" for k, vs in spec.grid.items())
        )
    if note:
        lines.append(note)
    lines.append(f"  {'run':<{width}}  {'status':<11} {'store':>9} {'time':>7}")
    total_bytes, todo_seconds, longest, unknown = 0, 0.0, 0.0, set()
    for point in points:
        plan = plans[point.group_key]
        status = statuses.get(point.name, ("new", 0.0))[0]
        seconds = estimate(plan)
        size = human_bytes(plan.store_bytes) if plan.store_bytes is not None else "?"
        shown = format_seconds(seconds * factor) if seconds is not None else "?"
        lines.append(f"  {point.name:<{width}}  {status:<11} {size:>9} {shown:>7}")
        if plan.store_bytes is None:
            unknown.add(plan.note)
        else:
            total_bytes += plan.store_bytes
        if status not in ("complete", "diverged") and seconds is not None:
            todo_seconds += seconds * factor
            longest = max(longest, seconds * factor)
    known = sum(plans[p.group_key].store_bytes is not None for p in points)
    if known == 0:
        lines.append("total store estimate: unknown")
    else:
        lines.append(
            f"total store estimate: {human_bytes(total_bytes)}{' (some unknown)' if unknown else ''}"
        )
    wall = max(todo_seconds / max(workers, 1), longest)
    basis = (
        f"calibrated on {len(ratios)} finished run(s) of this sweep"
        if ratios
        else f"{EFFICIENCY:.0%} of this machine's measured matmul rate "
        f"({rate / EFFICIENCY / 1e9:.0f} GFLOP/s "
        f"with {threads} thread(s)) + {SETUP_SECONDS:.0f} s setup per run; a rough guide"
    )
    if known:
        lines.append(
            f"time estimate: {format_seconds(todo_seconds)} of run time for the runs still to do, about "
            f"{format_seconds(wall)} of wall time with {workers} worker(s) ({basis})"
        )
    else:
        lines.append("time estimate: unknown")
    for reason in sorted(unknown):
        lines.append(f"no estimate for some runs: {reason}")
    return "\n".join(lines)
