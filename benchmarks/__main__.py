"""arprobe's performance, measured in one process: ``python -m benchmarks [--quick] [--out FILE]``.

Prints a table and writes JSON (default ``benchmarks/results/<device>.json``):
- the machine's float32 matmul peak, and the MFU of training steps and of the eval matrix for
  random-init GPT-NeoX models of width 256 and 512, depth 8, C = 256 (benchmarks/throughput.py
  says what is counted);
- eval-matrix time per documents-per-forward, and per-document gradients by vmap vs a loop;
- a short cyclic run (T=25, C=256, M=10, E=2, the default 5M model) with arprobe, with arprobe
  recording nothing, and with the naive loop of the paper's released code (benchmarks/naive.py);
- the store per episode, measured, and computed from shapes for a Pythia-1B-sized model;
- the split of an episode between training and evaluation as T grows (25, 50, 100).

Wall times are medians of repeats; on a machine shared with other work they still move by
±15%, so the load average before and after is recorded. Full run: about 8 minutes on 2 CPU cores.
``--quick``: tiny sizes, seconds, for checking the code path. ``--device auto`` uses CUDA when
there is one (bf16 autocast and vmap over seeds are not measured here).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Sizes:
    """Everything that differs between the full benchmark and --quick."""

    widths: list[tuple[int, int]]  # (d_model, n_heads) for the MFU models
    depth: int
    context: int  # C
    n_docs: int  # T of the MFU / eval measurements
    vocab: int  # BPE vocabulary (the default, 4096, at full size)
    peak_size: int
    peak_repeats: int
    train_repeats: int
    eval_repeats: int
    eval_batches: list[int]
    run: dict  # the short cyclic run's config overrides
    run_repeats: dict  # whole runs of each variant: naive, arprobe, arprobe_recording_off
    split_docs: list[int]  # T values of the train/eval split
    split_episodes: int
    grads_cases: list[dict] = field(default_factory=list)  # per-document gradient timings
    grads_repeats: int = 3


FULL = Sizes(
    widths=[(256, 4), (512, 8)],
    depth=8,
    context=256,
    n_docs=25,
    vocab=4096,
    peak_size=4096,
    peak_repeats=5,
    train_repeats=6,
    eval_repeats=3,
    eval_batches=[1, 4, 25],
    run=dict(n_docs=25, context_length=256, steps_per_doc=10, epochs=2),
    run_repeats={"naive": 1, "arprobe": 2, "arprobe_recording_off": 1},
    split_docs=[25, 50, 100],
    split_episodes=3,
    grads_cases=[dict(n_docs=25, context_length=256), dict(n_docs=10, context_length=64)],
)
QUICK = Sizes(
    widths=[(64, 2)],
    depth=2,
    context=32,
    n_docs=5,
    vocab=512,
    peak_size=256,
    peak_repeats=2,
    train_repeats=2,
    eval_repeats=1,
    eval_batches=[1, 5],
    run=dict(n_docs=5, context_length=32, steps_per_doc=2, epochs=2, d_model=64, n_layers=2, n_heads=2),
    run_repeats={"naive": 1, "arprobe": 1, "arprobe_recording_off": 1},
    split_docs=[5, 10],
    split_episodes=1,
    grads_cases=[dict(n_docs=5, context_length=32, d_model=64, n_layers=2, n_heads=2)],
    grads_repeats=1,
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the code path in seconds")
    parser.add_argument(
        "--out", default="", help="JSON file to write (default benchmarks/results/<cpu|cuda>[-quick].json)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--run-repeats",
        type=int,
        default=0,
        help="whole runs of every variant (0: naive 1, arprobe 2, recording off 1; --quick 1 each)",
    )
    parser.add_argument(
        "--workdir", default="", help="where the runs' stores go (default: a temporary folder, removed)"
    )
    args = parser.parse_args(argv)

    import torch

    from arprobe.models.text import resolve_device
    from benchmarks.timing import load_average, machine_info

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    device = resolve_device(args.device)
    out = Path(args.out or f"benchmarks/results/{device.type}{'-quick' if args.quick else ''}.json")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="arprobe-bench-"))
    started = time.perf_counter()
    results: dict = {
        "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_info(device),
        "load_average_start": load_average(),
        "quick": args.quick,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_repeats = (
            {k: args.run_repeats for k in sizes.run_repeats} if args.run_repeats else sizes.run_repeats
        )
        _measure(results, sizes, device, workdir, run_repeats=run_repeats)
    except BaseException as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"  # what was measured so far is still written
        raise
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        results["load_average_end"] = load_average()
        results["benchmark_seconds"] = time.perf_counter() - started
        out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(format_table(results))
    print(f"\nwritten: {out}")
    return results


def _measure(results: dict, sizes: Sizes, device, workdir: Path, *, run_repeats: dict) -> None:
    from arprobe.trainer.config import load_config
    from arprobe.trainer.loop import prepare
    from benchmarks import runs, throughput

    def setup_for(**overrides):
        values = {"vocab_size": sizes.vocab, "device": str(device), "out": str(workdir), **overrides}
        return prepare(load_config(None, values))

    log = _progress()
    peak_size = (
        sizes.peak_size if device.type == "cpu" or sizes is QUICK else 8192
    )  # a GPU needs more work to fill
    peak = throughput.measure_peak(device, size=peak_size, repeats=sizes.peak_repeats)
    results["peak"] = peak
    log(f"peak {peak['gflops']:.0f} GFLOP/s")

    results["mfu"] = []
    for width, heads in sizes.widths:
        setup = setup_for(
            n_docs=sizes.n_docs,
            context_length=sizes.context,
            d_model=width,
            n_layers=sizes.depth,
            n_heads=heads,
        )
        results["mfu"].append(
            throughput.mfu_of(
                setup, peak["gflops"], train_repeats=sizes.train_repeats, eval_repeats=sizes.eval_repeats
            )
        )
        log(f"MFU width {width}")
    results["eval_batch"] = throughput.eval_batch_sweep(
        setup, peak["gflops"], sizes.eval_batches, repeats=sizes.eval_repeats
    )
    del setup
    log("eval batch sizes")

    results["per_document_grads"] = []
    for case in sizes.grads_cases:
        setup = setup_for(**case)
        results["per_document_grads"].append(
            throughput.per_document_grads_methods(setup, case["n_docs"], repeats=sizes.grads_repeats)
        )
    log("per-document gradients")

    run_base = {"vocab_size": sizes.vocab, "device": str(device), **sizes.run}
    results["short_run"] = runs.compare_runs(run_base, workdir, repeats=run_repeats)
    log("short run")

    results["store_from_shapes"] = {
        "this_run": runs.store_from_shapes(load_config(None, run_base), sizes.vocab),
        # the paper's 1B setting: T=25, C=256, M=10, E=5, a BPE of up to 50304 tokens (Pythia's rows)
        "pythia_1b": runs.store_from_shapes(
            load_config(
                None,
                {
                    "model.name": "pythia-1b",
                    "n_docs": 25,
                    "context_length": 256,
                    "steps_per_doc": 10,
                    "epochs": 5,
                },
            ),
            50304,
        ),
    }

    split_run = {k: v for k, v in sizes.run.items() if k not in ("n_docs", "epochs")}
    setup = setup_for(**split_run, n_docs=min(sizes.split_docs))
    results["train_eval_split"] = throughput.train_eval_split(
        setup, sizes.split_docs, episodes=sizes.split_episodes
    )
    log("train/eval split")
    # The peak again: if it moved, so did everything measured in between.
    results["peak_end"] = throughput.measure_peak(device, size=peak_size, repeats=sizes.peak_repeats)


def _progress():
    started = time.perf_counter()

    def log(what: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {what}", file=sys.stderr, flush=True)

    return log


def format_table(r: dict) -> str:
    from benchmarks.runs import human

    m = r["machine"]
    load_start, load_end = r["load_average_start"], r["load_average_end"]
    busy = max([*load_start[:1], *load_end[:1]], default=0) > (m["cpu_count"] or 1) + 0.5
    peak, peak_end = r["peak"], r["peak_end"]
    lines = [
        f"arprobe benchmark on {m.get('gpu') or m['processor']} "
        f"({m['device']}, {m['threads']} threads, torch {m['torch']})"
        f"{'  [--quick]' if r['quick'] else ''}",
        f"load average before/after: {load_start} / {load_end}; took {r['benchmark_seconds']:.0f} s"
        + (
            f"\nnote: the machine was busy (load above its {m['cpu_count']} cores): "
            "timings include other work; run again"
            if busy
            else ""
        ),
        f"float32 matmul peak ({peak['size']}^2): {peak['gflops']:.0f} GFLOP/s at start, "
        f"{peak_end['gflops']:.0f} at end (median {peak['median_gflops']:.0f})",
        "",
        "MFU (6N FLOPs/token train, 2N eval; N = params without the input embedding)",
        f"  {'width':>5} {'depth':>5} {'N':>10} {'train step':>11} {'train MFU':>9} "
        f"{'eval row':>9} {'eval MFU':>8}",
    ]
    for x in r["mfu"]:
        lines.append(
            f"  {x['width']:>5} {x['depth']:>5} {x['N']:>10,} {x['train_step_s'] * 1e3:>8.0f} ms "
            f"{x['train_mfu']:>9.0%} {x['eval_matrix_row_s']:>7.2f} s {x['eval_mfu']:>8.0%}"
        )
    lines.append(
        "  eval MFU by documents per forward (width {}): ".format(r["mfu"][-1]["width"])
        + ", ".join(f"{e['batch']}: {e['mfu']:.0%}" for e in r["eval_batch"])
    )
    lines.append("")
    lines.append("per-document gradients (gradient_similarity): one backward per doc vs torch.func vmap")
    for g in r["per_document_grads"]:
        lines.append(
            f"  {g['layer']} (D={g['D']:,}), T={g['T']}, C={g['C']}, width {g['width']}: "
            f"loop {g['loop_s']:.2f} s, vmap {g['vmap_s']:.2f} s ({g['vmap_speedup']:.2f}x)"
        )
    s = r["short_run"]
    c = s["config"]
    sec = s["seconds"]
    store = s["store"]
    lines += [
        "",
        f"short cyclic run T={c['n_docs']} C={c['context_length']} M={c['steps_per_doc']} E={c['epochs']} "
        f"({s['episodes']} episodes; median of "
        + ", ".join(f"{len(v)} {k}" for k, v in s["all_seconds"].items())
        + " runs):",
        f"  naive loop (released code's habits)   {sec['naive']:7.1f} s",
        f"  arprobe, default recording            {sec['arprobe']:7.1f} s   "
        f"{s['speedup_vs_naive']:.2f}x faster than naive (fastest runs: {s['speedup_vs_naive_min']:.2f}x)",
        f"  arprobe, recording off                {sec['arprobe_recording_off']:7.1f} s",
        f"  recording overhead: {s['recording_overhead']:+.1%} within the run "
        f"({s['recording_seconds_in_run']:.1f} s recording and committing); "
        f"run vs run {s['recording_overhead_run_vs_run']:+.1%} "
        f"(fastest runs {s['recording_overhead_run_vs_run_min']:+.1%})",
        f"  eval matrices agree: row 0 max |diff| {s['eval_row0_max_abs_diff']:.1e}, "
        f"all rows {s['eval_max_abs_diff']:.1e}",
        "",
        "store per episode",
        f"  this run, measured: {human(store['bytes_per_episode'])} (file {human(store['file_bytes'])}); "
        f"naive writes {human(s['naive_bytes_per_episode'])}",
    ]
    for key, label in (("this_run", "this run, from shapes"), ("pythia_1b", "Pythia-1B-sized, from shapes")):
        b = r["store_from_shapes"][key]
        lines.append(
            f"  {label} (T={b['T']}, C={b['C']}, E={b['E']}, sketch_dim {b['sketch_dim']:,}, "
            f"all_weights_dim {b['all_weights_dim']:,}): "
            f"recordings {human(b['recordings_per_episode'])}/episode "
            f"+ checkpoints {human(b['checkpoints_per_episode'])}/episode "
            f"+ resume slots {human(b['resume_bytes'])} once = {human(b['total_per_episode'])}/episode; "
            f"naive {human(b['naive_per_episode'])}/episode"
        )
    lines += ["", "time per episode as T grows (M steps, then the eval row of T documents)"]
    for x in r["train_eval_split"]:
        lines.append(
            f"  T={x['T']:>4}: train {x['train_s_per_episode']:6.2f} s, "
            f"eval {x['eval_s_per_episode']:6.2f} s ({x['eval_fraction']:.0%} eval)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
