"""`arprobe sweep SWEEP.toml`: a run config × grid × seeds, run locally or on Ray, into one folder.

Re-running the same command skips complete runs, resumes interrupted ones and starts the rest;
a failed or diverged run never stops the others and is listed at the end (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arprobe.errors import UserError
from arprobe.sweep.backend import BackendOptions, backend_class


def sweep_command_parser(subparsers) -> argparse.ArgumentParser:
    # long because it is a table of arguments, one add_argument each
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of options × seeds (locally or on Ray) into sweeps/<name>/",
        description="Run every point of a sweep file: a run config (the keys of `arprobe run`) plus "
        "[grid] (option -> list of values) and seeds = [...]. Each point is an ordinary run store "
        "under <out>/<name>/runs/<point>/run.h5; manifest.json lists them. Run the same command again "
        "to finish a sweep that was stopped; `arprobe analyze <out>/<name>` aggregates over seeds.",
        epilog="Examples: arprobe sweep configs/cpu/sweeps/table1.toml;  arprobe sweep S.toml --dry-run;  "
        "arprobe sweep S.toml --backend ray --address ray://head:10001 --out /shared/sweeps",
    )
    p.add_argument("sweep_file", metavar="SWEEP.toml", help="the sweep file")
    p.add_argument(
        "--backend",
        default="local",
        metavar="NAME",
        help="where runs go: local, ray, slurm, or an installed arprobe.sweep_backends plugin "
        "(default: local)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="runs at once (local default: cores / threads per run; ray: as many as the cluster fits)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="N",
        help="torch threads per run (local default: cores / workers; ray default: 1 CPU per run)",
    )
    p.add_argument(
        "--address", default="", metavar="ADDR", help="ray: the cluster to join (default: start Ray here)"
    )
    p.add_argument(
        "--gpus-per-run", type=float, default=0.0, metavar="G", help="ray, slurm: GPUs each run reserves"
    )
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="slurm: an option of the job array, over the sweep file's [slurm] table (repeatable), e.g. "
        "partition=gpu, time=120 (minutes), mem_gb=16, cpus_per_run=4, account=lab, array_parallelism=8, "
        "sbatch=--mail-type=END",
    )
    p.add_argument(
        "--out", metavar="DIR", help="folder of sweep folders (default: the file's `out`, else sweeps/)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs, the store-size and time estimates; run nothing"
    )
    p.add_argument(
        "--plan-device",
        default="",
        metavar="NAME",
        help="with --dry-run: time and memory for this GPU from its datasheet (h100, h200, a100-40, a100-80, "
        "l40s, v100, rtx4090) or cpu, instead of the device each run would use here (measured)",
    )
    p.add_argument(
        "--extend", action="store_true", help="the sweep file gained grid values or seeds: add those runs"
    )
    p.add_argument(
        "--batch-seeds",
        type=int,
        nargs="?",
        const=-1,  # sweep.batching.AUTO: as many as the device's free memory holds, up to 8
        default=0,
        metavar="N",
        help="train points that differ only in seed, order or data randomness as one vmapped model, "
        "up to N at once (without N: as many as the device's free memory holds, up to 8; an N that does "
        "not fit is refused before anything runs); each still writes its own store",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=sweep_command)
    return p


command_parser = sweep_command_parser  # what arprobe.cli.main calls


def check_counts(args) -> None:
    for flag, value in (
        ("--workers", args.workers),
        ("--threads", args.threads),
        ("--batch-seeds", args.batch_seeds),
    ):
        if value < (-1 if flag == "--batch-seeds" else 0):  # --batch-seeds without N is -1 (auto)
            raise UserError(f"{flag} must be a positive number, got {value}.")
    if args.gpus_per_run < 0:
        raise UserError(f"--gpus-per-run must be zero or positive, got {args.gpus_per_run:g}.")
    accepted = backend_class(args.backend).remote_flags
    for field, flag in (("address", "--address"), ("gpus_per_run", "--gpus-per-run")):
        if getattr(args, field) and field not in accepted:
            raise UserError(f"{flag} is an option of the ray backend; add --backend ray.")
    if args.slurm and args.backend != "slurm":
        raise UserError("--slurm sets options of the slurm backend; add --backend slurm.")


def uses_gpu(spec) -> bool:
    """Whether the sweep's runs would land on a GPU of this machine (model.device auto or cuda*)."""
    devices = {str(spec.base.get("model.device", "auto"))}
    for values in spec.grid.values():
        devices |= {str(v.get("model.device", "auto")) for v in values if isinstance(v, dict)}
    devices |= {str(v) for v in spec.grid.get("model.device", [])}
    if all(d == "cpu" for d in devices):
        return False
    # lazy: keeps `arprobe --help` fast
    import torch

    return torch.cuda.is_available()


def backend_options(args, n_jobs: int, gpu: bool = False) -> BackendOptions:
    return BackendOptions(
        workers=args.workers,
        threads=args.threads,
        n_jobs=n_jobs,
        uses_gpu=gpu,
        address=args.address,
        gpus_per_run=args.gpus_per_run,
        settings=getattr(args, "backend_settings", {}),
        sweep_dir=getattr(args, "sweep_dir", ""),
    )


def make_backend(args, n_jobs: int, spec=None):
    """The backend, with workers and threads split so the cores are not oversubscribed."""
    cls = backend_class(args.backend)
    gpu = not cls.remote_flags and spec is not None and uses_gpu(spec)  # a machine's own GPU
    return cls.from_options(backend_options(args, n_jobs, gpu))


def dry_run_statuses(sweep_dir: Path) -> dict[str, tuple[str, float]]:
    """name -> (state of its store, wall seconds so far) of an existing sweep folder; reads only."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.sweep.manifest import inspect_store, is_sweep_dir, read_manifest

    if not is_sweep_dir(sweep_dir):
        return {}
    statuses = {}
    for entry in read_manifest(sweep_dir)["points"]:
        state, episodes, _ = inspect_store(sweep_dir / entry["run"] / "run.h5")
        label = {"missing": "new", "unfinished": f"resume@{episodes}", "unreadable": "restart"}.get(
            state, state
        )
        statuses[entry["name"]] = (label, float(entry.get("seconds", 0.0)))
    return statuses


def sweep_command(args, extra) -> int:
    # lazy: keeps `arprobe --help` fast
    from arprobe.sweep.spec import load_sweep

    check_counts(args)
    backend_class(args.backend).check_available()  # before anything else: a missing extra says how
    spec = load_sweep(args.sweep_file)
    sweep_dir = Path(args.out or spec.out or "sweeps") / spec.name
    if not args.threads and int(spec.base.get("threads", 0) or 0) > 0:
        args.threads = int(spec.base["threads"])  # the file's threads per run decide the workers
    args.sweep_dir = str(sweep_dir)
    if args.backend == "slurm":
        # lazy: keeps `arprobe --help` fast
        from arprobe.sweep.slurm_backend import parse_option_flags

        args.backend_settings = {**spec.slurm, **parse_option_flags(args.slurm)}

    if args.dry_run:
        return dry_run(spec, sweep_dir, args)

    # lazy: keeps `arprobe --help` fast
    from arprobe.sweep.execute import execute_sweep

    points = spec.points()
    n_jobs = len(points)
    if args.batch_seeds:  # cores are split among the jobs, and a group of points is one job
        # lazy: keeps `arprobe --help` fast
        from arprobe.sweep.batching import group_jobs

        jobs = [{"name": p.name, "overrides": spec.overrides(p, Path("runs")), "threads": 0} for p in points]
        n_jobs = len(group_jobs(jobs, args.batch_seeds))
    backend = make_backend(args, n_jobs, spec)
    outcome = execute_sweep(
        spec,
        sweep_dir,
        backend,
        extend=args.extend,
        progress=not args.no_progress,
        batch_seeds=args.batch_seeds,
    )
    print(
        f"{outcome.complete} of {outcome.total} runs complete ({outcome.skipped} were already done, "
        f"{outcome.ran} run in this call)."
    )
    if outcome.failures:
        print(f"arprobe sweep: {len(outcome.failures)} run(s) did not complete:", file=sys.stderr)
        for f in outcome.failures:
            print(f"  {f['name']}: {f['status']}{': ' + f['error'] if f['error'] else ''}", file=sys.stderr)
        print(
            "Run the same command again to resume interrupted or failed runs; diverged ones stay.",
            file=sys.stderr,
        )
        return 1
    print(f"next: arprobe analyze {outcome.sweep_dir}")
    return 0


def dry_run(spec, sweep_dir: Path, args) -> int:
    # lazy: keeps `arprobe --help` fast
    from arprobe.sweep.estimate import dry_run_text
    from arprobe.sweep.manifest import SWEEP_FILE, is_sweep_dir, read_manifest
    from arprobe.sweep.spec import Point, differing_keys, load_sweep

    note, taken = "", {}
    if is_sweep_dir(sweep_dir):
        manifest = read_manifest(sweep_dir)
        taken = {Point.from_entry(e).key: e["name"] for e in manifest["points"]}
        changed = differing_keys(load_sweep(sweep_dir / SWEEP_FILE, name=manifest["name"]), spec)
        if changed:
            note = (
                f"note: the folder was made with a different sweep file ({', '.join(changed)}); "
                "running it needs --extend (new points only)"
            )
    points = spec.points(taken)
    backend_workers, threads = backend_class(args.backend).plan(backend_options(args, max(1, len(points))))
    print(
        dry_run_text(
            spec,
            points,
            sweep_dir,
            workers=backend_workers,
            threads=threads,
            statuses=dry_run_statuses(sweep_dir),
            note=note,
            plan_device=args.plan_device,
        )
    )
    if args.backend == "slurm":  # the job array it would submit: its size and sbatch script
        statuses = dry_run_statuses(sweep_dir)
        todo = [p for p in points if statuses.get(p.name, ("new",))[0] not in ("complete", "diverged")]
        backend = backend_class(args.backend).from_options(backend_options(args, max(1, len(todo))))
        print(backend.dry_run_text(len(todo)))
    return 0
