"""Batched training with torch.func: S seeds as one vmapped model, and the pairwise-recovery matrix.

    python -m benchmarks.batched [--runs 8] [--quick] [--threads 1] [--workdir DIR] [--out FILE]

1. Seeds: S default runs (``arprobe run`` with no options but the seed) trained one after another
   with ``loop.run`` against the same S as one model with ``batched_run.run_batched``, both in this
   process after one untimed warm-up run (imports, the tokenizer cache), so the difference is the
   training, not Python start-up. Throughput ratio = sequential seconds / batched seconds.
2. Pairwise: the T×T matrix of the ``pairwise_recovery`` probe on the first sequential run's store,
   sequential replays (batch 1) against all T as one model (batch T), next to that run's own wall
   time and the training time of one episode (M steps, as a replay trains it).

Writes JSON (default ``benchmarks/results/batched-<device>[-quick].json``) with the load average
before and after: on a machine shared with other work the timings move by more than the effects.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.timing import QUICK_RUN


def time_seeds(n_runs: int, workdir: Path, extra: dict, threads: int) -> dict:
    from arprobe.trainer.batched_run import run_batched
    from arprobe.trainer.config import load_config
    from arprobe.trainer.loop import run

    def cfg(folder: str, seed: int):
        return load_config(None, {**extra, "threads": threads, "seed": seed, "out": str(workdir / folder)})

    run(cfg("warmup", 100), progress=False)  # imports and the tokenizer cache, untimed
    started = time.perf_counter()
    sequential = [run(cfg("sequential", s), progress=False) for s in range(n_runs)]
    sequential_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = run_batched([cfg("batched", s) for s in range(n_runs)], progress=False)
    batched_s = time.perf_counter() - started
    assert all(r.status == "complete" for r in sequential + batched)
    import numpy as np

    from arprobe.storage import RunStore

    diffs = []
    for a, b in zip(sequential, batched):
        with RunStore(a.path) as sa, RunStore(b.path) as sb:
            diffs.append(float(np.abs(sa.eval_matrix() - sb.eval_matrix()).max()))
    return {
        "runs": n_runs,
        "sequential_seconds": sequential_s,
        "batched_seconds": batched_s,
        "throughput_ratio": sequential_s / batched_s,
        "target": 1.8,
        "sequential_run_seconds": [r.seconds for r in sequential],
        "eval_matrix_max_abs_diff": max(diffs),
        "first_store": str(sequential[0].path),
    }


def time_pairwise(store_path: Path, repeats: int) -> dict:
    import torch

    from arprobe.probes.pairwise_recovery import default_checkpoint
    from arprobe.storage import RunStore
    from arprobe.trainer.api import Replay, pairwise_rows

    with RunStore(store_path) as store:
        episode = default_checkpoint(store.checkpoint_episodes(), store.completed_episodes)
        replay = Replay(store, episode, device="cpu")
    T = replay.task.n_docs
    docs = list(range(T))
    times: dict[str, list[float]] = {"sequential": [], "batched": [], "one_episode_training": []}
    rows = {}
    for _ in range(repeats):
        for label, batch in (("sequential", 1), ("batched", T)):
            started = time.perf_counter()
            rows[label] = pairwise_rows(replay, docs, batch)
            times[label].append(time.perf_counter() - started)
        replay.reset()
        started = time.perf_counter()
        replay.train_episode(0)
        times["one_episode_training"].append(time.perf_counter() - started)
    replay.reset()
    import numpy as np

    best = {k: min(v) for k, v in times.items()}
    return {
        "T": T,
        "checkpoint_episode": episode,
        "threads": torch.get_num_threads(),
        "seconds": best,
        "all_seconds": times,
        "batched_over_sequential": best["batched"] / best["sequential"],
        "sequential_over_one_episode": best["sequential"] / best["one_episode_training"],
        "batched_over_one_episode": best["batched"] / best["one_episode_training"],
        "max_abs_diff": float(np.abs(rows["batched"] - rows["sequential"]).max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batched", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8, help="S: runs trained together (default 8)")
    parser.add_argument("--quick", action="store_true", help="tiny runs, to check the code path")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="pairwise timings: best of this many")
    parser.add_argument("--workdir", default="", help="where the stores go (default: a temporary folder)")
    parser.add_argument("--out", default="", help="JSON file (default benchmarks/results/batched-cpu.json)")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.timing import load_average, machine_info

    torch.set_num_threads(args.threads)
    out = Path(args.out or f"benchmarks/results/batched-cpu{'-quick' if args.quick else ''}.json")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arprobe-batched-"))
    extra = dict(QUICK_RUN) if args.quick else {}
    result = {
        "command": "python -m benchmarks.batched",
        "machine": machine_info(torch.device("cpu")),
        "load_average_start": load_average(),
        "quick": args.quick,
        "config": extra or "the default run (tiny preset, T=10, C=64, M=10, E=4)",
    }
    started = time.perf_counter()
    try:
        result["seeds"] = time_seeds(args.runs, workdir, extra, args.threads)
        seeds = result["seeds"]
        print(
            f"{args.runs} runs: sequential {seeds['sequential_seconds']:.1f} s, batched "
            f"{seeds['batched_seconds']:.1f} s: throughput x{seeds['throughput_ratio']:.2f}",
            flush=True,
        )
        pairwise = time_pairwise(Path(result["seeds"]["first_store"]), args.repeats)
        pairwise["run_seconds"] = result["seeds"]["sequential_run_seconds"][0]
        pairwise["batched_over_run"] = pairwise["seconds"]["batched"] / pairwise["run_seconds"]
        pairwise["sequential_over_run"] = pairwise["seconds"]["sequential"] / pairwise["run_seconds"]
        result["pairwise"] = pairwise
        s = pairwise["seconds"]
        print(
            f"pairwise T={pairwise['T']}: sequential {s['sequential']:.2f} s, batched {s['batched']:.2f} s, "
            f"one episode's training {s['one_episode_training']:.2f} s, "
            f"the run {pairwise['run_seconds']:.1f} s",
            flush=True,
        )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    result["load_average_end"] = load_average()
    result["benchmark_seconds"] = time.perf_counter() - started
    result["seeds"].pop("first_store", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
