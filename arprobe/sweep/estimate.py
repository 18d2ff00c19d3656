"""``arprobe sweep --dry-run``: the points, the store-size estimate and a time estimate.

Sizes and times come from the trainer's public plan (``arprobe.trainer.plan.plan``, what
``arprobe run --dry-run`` prints), once per point-without-seed: the data and tokenizer are built
and the model on the meta device (shapes only), so a hub model's config or dataset must be
reachable (or cached), as for the run itself.

Time is the plan's (``arprobe.trainer.rates``): the floating-point work of a run (6·N per trained
token, 2·N per evaluated token, N parameters) at a stated share (MFU) of the matmul rate of the
device the run will use — measured there (a GPU of this machine, or this CPU with each run's
threads), or a datasheet's with ``--plan-device`` — plus recordings, resume writes and a few
seconds of setup per run. Completed runs of the same sweep calibrate it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from arprobe.errors import UserError
from arprobe.sweep.spec import Point, SweepSpec, show
from arprobe.trainer import rates
from arprobe.trainer.config import load_config
from arprobe.trainer.memory import human_bytes
from arprobe.trainer.rates import format_seconds  # also arprobe.pretrain's

SETUP_SECONDS = 5.0  # imports, tokenizer from cache, model build, store creation


@dataclass
class PointPlan:
    store_bytes: int | None
    flops: float | None
    note: str = ""  # why the estimate is missing
    seconds: float | None = None  # the plan's time of one run (rates.time_estimate), setup not included
    basis: str = ""  # the rate the time assumes, in words (rates.Rate.describe)
    refusal: str = ""  # the plan's sentence when the run does not fit its device


def plan_point(overrides: dict, *, plan_device: str = "", threads: int = 0) -> PointPlan:
    """Store size, floating-point work and time of one run, from the trainer's plan of it; on a CPU
    the time at ``threads`` torch threads (the sweep's per run; 0: the run's own)."""
    # lazy: pulls in h5py, which importing this module does not need
    from arprobe.trainer.plan import plan, run_work

    cfg = load_config(None, overrides)
    try:
        planned = plan(cfg, plan_device=plan_device) if plan_device else plan(cfg)
    except UserError as exc:
        return PointPlan(None, None, str(exc))
    N, K = float(planned.n_params), planned.episodes
    C, M, T = cfg.data.context_length, cfg.schedule.steps_per_doc, cfg.data.n_docs
    flops = 6 * N * C * M * K + 2 * N * C * T * (K + 1)
    point = PointPlan(planned.store_bytes, flops, refusal=planned.refusal)
    if planned.times is not None:
        rate = planned.rate
        if rate.kind == "cpu" and threads:  # each run of the sweep gets its share of the cores
            rate = rates.Rate(rates.cpu_matmul_rate(threads), "fp32", "cpu",
                              f"measured on this CPU, {threads} thread(s)", rate.bandwidth)  # fmt: skip
        point.seconds = rates.time_estimate(run_work(cfg, planned), rate)["total"]
        point.basis = f"{rate.describe()} on {planned.device}"
    return point


def dry_run_text(
    spec: SweepSpec,
    points: list[Point],
    sweep_dir: Path,
    *,
    workers: int,
    threads: int,
    statuses: dict[str, str],
    note: str = "",
    plan_device: str = "",
) -> str:
    """The table --dry-run prints: every point, what would happen to it, sizes, time (on
    ``plan_device``'s datasheet when given, else on the device each run would use here)."""
    plans: dict[str, PointPlan] = {}
    for point in points:
        if point.group_key not in plans:
            overrides = spec.overrides(point, sweep_dir / "runs")
            plans[point.group_key] = plan_point(overrides, plan_device=plan_device, threads=threads)

    def estimate(plan: PointPlan) -> float | None:
        return None if plan.seconds is None else plan.seconds + SETUP_SECONDS

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
    bases = sorted({plan.basis for plan in plans.values() if plan.basis})
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
        else f"{'; '.join(bases) or 'no rate'} + {SETUP_SECONDS:.0f} s setup per run; a rough guide"
    )
    if known and any(plan.seconds is not None for plan in plans.values()):
        lines.append(
            f"time estimate: {format_seconds(todo_seconds)} of run time for the runs still to do, about "
            f"{format_seconds(wall)} of wall time with {workers} worker(s) ({basis})"
        )
    else:
        lines.append("time estimate: unknown")
    for reason in sorted(unknown):
        lines.append(f"no estimate for some runs: {reason}")
    for refusal in sorted({plan.refusal for plan in plans.values() if plan.refusal}):
        lines.append(f"does not fit: {refusal}")
    return "\n".join(lines)
