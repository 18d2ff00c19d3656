"""A sweep of N default runs on the local backend against the same N runs started one after
another with `arprobe run` (issue 10's target: the sweep in at most 0.9× the time).

    python -m benchmarks.sweep_speed [--runs 8] [--repeats 1] [--quick] [--workdir DIR] [--out FILE]

Both sides are timed end to end as a user starts them (a fresh `python -m arprobe` process per
command): the sequential side is N `arprobe run --seed i` calls, each with torch's default
threads (every core); the sweep side is one `arprobe sweep` over seeds 0..N-1, whose local backend
runs cores / 1 runs side by side with one thread each. Repeats alternate which side goes first, so
a slow spell of a shared machine hits both; the load average before and after is recorded.
``--quick``: tiny runs (T=5, C=32, M=3, E=2, a 2-block d64 model) to check the code path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.timing import QUICK_RUN


def arprobe(*args: str) -> float:
    """Wall seconds of one `python -m arprobe ...` call (which must succeed)."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "arprobe", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"`arprobe {' '.join(args)}` failed:\n{result.stderr}")
    return seconds


def sequential(n_runs: int, workdir: Path, extra: dict) -> float:
    flags = [x for k, v in extra.items() for x in (f"--{k}", str(v))]
    total = 0.0
    for seed in range(n_runs):
        total += arprobe(
            "run",
            "--seed",
            str(seed),
            "--out",
            str(workdir),
            "--name",
            f"seq-s{seed}",
            "--no-progress",
            *flags,
        )
    return total


def sweep(n_runs: int, workdir: Path, extra: dict) -> float:
    lines = ['name = "speed"', f"seeds = {list(range(n_runs))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    sweep_file = workdir / "speed.toml"
    sweep_file.write_text("\n".join(lines) + "\n")
    return arprobe("sweep", str(sweep_file), "--out", str(workdir / "sweeps"), "--no-progress")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sweep_speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--workdir", default="", help="where the stores go (default: a temporary folder, removed)"
    )
    parser.add_argument("--out", default="", help="JSON file for the numbers (default: print only)")
    args = parser.parse_args(argv)

    from arprobe.sweep.local import available_cores, split_cores

    extra = QUICK_RUN if args.quick else {}
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arprobe-sweep-speed-"))
    load_before = os.getloadavg()
    seq_times, sweep_times = [], []
    try:
        for r in range(args.repeats):
            for side in ("sequential", "sweep") if r % 2 == 0 else ("sweep", "sequential"):
                folder = workdir / f"{side}-{r}"
                folder.mkdir(parents=True)
                if side == "sequential":
                    seq_times.append(sequential(args.runs, folder, extra))
                else:
                    sweep_times.append(sweep(args.runs, folder, extra))
                last = (seq_times if side == "sequential" else sweep_times)[-1]
                print(f"repeat {r}: {side:<10} {last:7.1f} s", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    workers, threads = split_cores(available_cores(), args.runs)
    result = {
        "runs": args.runs,
        "quick": args.quick,
        "cores": available_cores(),
        "sweep_workers": workers,
        "sweep_threads_per_run": threads,
        "sequential_seconds": seq_times,
        "sweep_seconds": sweep_times,
        "ratio": min(sweep_times) / min(seq_times),
        "target": 0.9,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    print(
        f"{args.runs} runs: sequential `arprobe run` {min(seq_times):.1f} s, `arprobe sweep` (local, "
        f"{workers} workers × {threads} thread) {min(sweep_times):.1f} s: ratio {result['ratio']:.2f} "
        "(target ≤ 0.90)"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
