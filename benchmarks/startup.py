"""Start-up cost of `arprobe run` and the per-point overhead of a local sweep (issue 23).

Measures, each in fresh processes (the first warm-up run of each kind is not timed):

- ``import``: ``python -X importtime`` of the tiny run: the total import time, and whether
  transformer-lens was imported;
- ``tiny_run``: wall time of ``arprobe run`` on a tiny run (T=2, C=64, M=1, E=1, the default
  recording) end to end, and of the same run with ``--dry-run`` (parse, plan, no model);
- ``sweep``: a tiny sweep (recording off) of 1 and of N points through the local backend with one
  worker: the marginal wall time of a point inside a worker, ``(wall_N - wall_1) / (N - 1)``,
  against one `arprobe run` process for the same point — the difference is what a point pays when
  every point starts its own process (imports, start-up).

``--tree PATH`` measures another checkout (its ``arprobe`` on PYTHONPATH), e.g. a ``git archive``
of an older commit, to compare before and after. Writes ``benchmarks/results/startup.json``
(``--out``), merged under the ``--label`` key. Pins OMP_NUM_THREADS=1; the JSON records the load
average so a shared machine shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--n_docs", "2", "--steps_per_doc", "1", "--epochs", "1", "--no-progress"]
# issue 23's side-by-side with the released training script: T=10, C=128, M=5, E=2, d128, 4 blocks
SMALL = ["--n_docs", "10", "--context_length", "128", "--steps_per_doc", "5", "--epochs", "2"]
SMALL += ["--model.d_model", "128", "--model.n_layers", "4", "--no-progress"]
RECORDING_OFF = ["--weights_every", "0", "--activations_every", "0", "--grads_at", "never"]
RECORDING_OFF += ["--checkpoints", "none", "--all_weights_dim", "0"]
SWEEP = """name = "startup"
seeds = [{seeds}]
[data]
n_docs = 2
[schedule]
steps_per_doc = 2
epochs = 1
[record]
weights_every = 0
activations_every = 0
grads_at = "never"
checkpoints = "none"
all_weights_dim = 0
"""


def env_for(tree: Path, cache: Path) -> dict:
    return dict(
        os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", ARPROBE_CACHE=str(cache), HF_HUB_OFFLINE="1"
    )


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return seconds, out


def arprobe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "arprobe", *args]


def measure(tree: Path, repeats: int, points: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="arprobe-startup-"))
    env = env_for(tree, work / "cache")
    run = arprobe_cmd("run", "--out", str(work / "runs"), "--overwrite", *TINY)
    timed(run, env, work)  # warm-up: tokenizer and name tables cached, files in the page cache
    runs = [timed(run, env, work)[0] for _ in range(repeats)]
    dry = [timed([*run, "--dry-run"], env, work)[0] for _ in range(repeats)]
    _, imported = timed([sys.executable, "-X", "importtime", *run[1:]], env, work)
    rows = [line.split("|") for line in imported.stderr.splitlines() if line.startswith("import time:")]
    top = [r for r in rows if len(r) == 3 and not r[2].startswith("  ")]  # top-level imports only
    total_us = sum(int(r[1]) for r in top if r[1].strip().isdigit())
    names = {r[2].strip() for r in rows if len(r) == 3}

    def sweep(n: int) -> float:
        spec = work / f"sweep{n}.toml"
        spec.write_text(SWEEP.format(seeds=", ".join(str(s) for s in range(n))))
        out = work / f"sweeps{n}-{time.monotonic_ns()}"
        cmd = arprobe_cmd("sweep", str(spec), "--out", str(out), "--workers", "1", "--threads", "1")
        return timed([*cmd, "--no-progress"], env, work)[0]

    one, many = sweep(1), sweep(points)
    point = arprobe_cmd("run", "--out", str(work / "point"), "--overwrite", "--no-progress")
    point += ["--n_docs", "2", "--steps_per_doc", "2", "--epochs", "1", *RECORDING_OFF]
    alone = min(timed(point, env, work)[0] for _ in range(repeats))
    marginal = (many - one) / (points - 1)
    small = arprobe_cmd("run", "--out", str(work / "small"), "--overwrite", *SMALL)
    small_runs = [timed(small, env, work)[0] for _ in range(repeats)]
    small_off = [timed([*small, *RECORDING_OFF], env, work)[0] for _ in range(repeats)]
    return {
        "import": {
            "top_level_import_seconds": round(total_us / 1e6, 2),
            "transformer_lens_imported": "transformer_lens" in names,
        },
        "tiny_run": {
            "command": "arprobe run " + " ".join(TINY),
            "wall_seconds": [round(s, 2) for s in runs],
            "dry_run_wall_seconds": [round(s, 2) for s in dry],
        },
        "small_run": {
            "command": "arprobe run " + " ".join(SMALL),
            "wall_seconds": [round(s, 2) for s in small_runs],
            "recording_off_wall_seconds": [round(s, 2) for s in small_off],
        },
        "sweep": {
            "points": points,
            "one_point_sweep_seconds": round(one, 2),
            f"{points}_point_sweep_seconds": round(many, 2),
            "marginal_seconds_per_point_in_a_worker": round(marginal, 2),
            "one_process_per_point_seconds": round(alone, 2),
            "per_point_overhead_saved_seconds": round(alone - marginal, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", default=str(ROOT), help="checkout to measure (default: this one)")
    p.add_argument("--label", default="after", help="key of this measurement in the JSON")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--points", type=int, default=4)
    p.add_argument("--note", default="", help="what else ran on the machine")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "startup.json"))
    args = p.parse_args(argv)
    result = measure(Path(args.tree).resolve(), args.repeats, args.points)
    result.update(load_average=[round(x, 2) for x in os.getloadavg()], cores=os.cpu_count(), note=args.note)
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[args.label] = result
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({args.label: result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
