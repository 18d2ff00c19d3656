"""Whole runs: arprobe against the naive loop, recording on against off, and what the store costs.

Each variant is one call, timed end to end (data, tokenizer from cache, model build, every
episode, the store closed), in the order naive, arprobe, arprobe without recording, repeated
so slow spells of a shared machine hit all three; medians are reported.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from arprobe.trainer.plan import human_bytes

# Recording off: only losses, learning rates and per-layer gradient norms are written.
RECORDING_OFF = dict(
    weights_every=0,
    all_weights_dim=0,
    activations_every=0,
    grads_at="never",
    checkpoints="none",
    resume_every=0,
)


def compare_runs(base: dict, workdir: Path, *, repeats: dict[str, int]) -> dict:
    """Wall seconds of the naive loop, arprobe, and arprobe with recording off, on the same run.

    ``repeats``: runs of each variant ("naive", "arprobe", "arprobe_recording_off"), interleaved.
    The recording overhead, a difference of a few percent, is also measured inside the default
    run, free of run-to-run noise: the seconds spent taking and appending the recordings (the
    recorder's capture functions, checkpoints, resume slots) plus all of the store's per-episode
    commits (which the recordings make larger), over the rest of the run.
    """
    from arprobe.storage import RunStore
    from arprobe.trainer.config import load_config
    from arprobe.trainer.loop import run
    from benchmarks.naive import naive_run

    times: dict[str, list[float]] = {"naive": [], "arprobe": [], "arprobe_recording_off": []}
    recorder_seconds: list[float] = []
    for r in range(max(repeats.values())):
        for variant in times:
            if r >= repeats[variant]:
                continue
            if variant == "naive":
                cfg = load_config(None, {**base, "out": str(workdir), "name": "naive"})
                started = time.perf_counter()
                naive = naive_run(cfg, workdir / "naive")
                times["naive"].append(time.perf_counter() - started)
                shutil.rmtree(workdir / "naive", ignore_errors=True)
                continue
            extra = RECORDING_OFF if variant == "arprobe_recording_off" else {}
            cfg = load_config(None, {**base, **extra, "out": str(workdir), "name": variant})
            with _timed_recorder() as spent:
                started = time.perf_counter()
                result = run(cfg, progress=False, overwrite=True)
                times[variant].append(time.perf_counter() - started)
            assert result.status == "complete", result.stop_reason
            if variant == "arprobe":
                recorder_seconds.append(spent[0])  # recordings, checkpoints and commits, seconds
    store = workdir / "arprobe" / "run.h5"
    with RunStore(store) as s:
        eval_matrix = s.eval_matrix()
        K = s.completed_episodes
    seconds = {k: statistics.median(v) for k, v in times.items()}
    fastest = {k: min(v) for k, v in times.items()}  # least disturbed by other work on the machine
    return {
        "config": base,
        "episodes": K,
        "seconds": seconds,
        "min_seconds": fastest,
        "all_seconds": times,
        "speedup_vs_naive": seconds["naive"] / seconds["arprobe"],
        "speedup_vs_naive_min": fastest["naive"] / fastest["arprobe"],
        "speedup_vs_naive_recording_off": seconds["naive"] / seconds["arprobe_recording_off"],
        # recording cost measured inside the default run (recordings, checkpoints, resume slots and
        # every commit's flush) over the rest of that run: the number to read on a shared machine
        "recording_seconds_in_run": statistics.median(recorder_seconds),
        "recording_overhead": statistics.median(
            [spent / (total - spent) for spent, total in zip(recorder_seconds, times["arprobe"])]
        ),
        # the same from whole runs, default vs recording off: what the issue asks, noisier
        "recording_overhead_run_vs_run": seconds["arprobe"] / seconds["arprobe_recording_off"] - 1,
        "recording_overhead_run_vs_run_min": fastest["arprobe"] / fastest["arprobe_recording_off"] - 1,
        # Both loops compute the same eval matrix: before training exactly the same model and
        # documents; after that the optimizers' rounding differs (fused vs per-parameter Adam).
        "eval_row0_max_abs_diff": float(np.abs(eval_matrix[0] - naive["eval"][0]).max()),
        "eval_max_abs_diff": float(np.abs(eval_matrix - naive["eval"]).max()),
        "store": store_parts(store, K),
        "naive_bytes_per_episode": naive["bytes_per_episode"],
    }


@contextlib.contextmanager
def _timed_recorder():
    """Add up the wall seconds spent recording, inside ``run``. Yields [seconds].

    Timed through public methods only: every capture function a recorder declares
    (``Recorder.add``), the store's appends of recordings and checkpoints
    (``RunWriter.append_recording``, ``append_checkpoint``), the resume point
    (``RunWriter.write_resume``) and the store's commits (a conservative bound: without
    recordings a commit still flushes the losses). Not timed: copying the training state to
    host memory before a checkpoint or resume write (one copy of the parameters, about a
    millisecond per 5M parameters). Nested calls count once.
    """
    from arprobe.storage import RunWriter
    from arprobe.trainer.recorders import Recorder

    spent = [0.0]
    depth = [0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            depth[0] += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - started

        return wrapper

    add = Recorder.add

    def add_timed(recorder, recording, capture=None):
        add(recorder, recording, timed(capture) if capture is not None else None)

    originals = {
        (owner, name): getattr(owner, name)
        for owner, name in (
            (Recorder, "add"),
            (RunWriter, "append_recording"),
            (RunWriter, "append_checkpoint"),
            (RunWriter, "write_resume"),
            (RunWriter, "commit"),
        )
    }
    for (owner, name), fn in originals.items():
        setattr(owner, name, add_timed if name == "add" else timed(fn))
    try:
        yield spent
    finally:
        for (owner, name), fn in originals.items():
            setattr(owner, name, fn)


def store_parts(path: Path, episodes: int) -> dict:
    """Bytes on disk of a finished store, per top-level group, and per episode."""
    import h5py

    parts: dict[str, int] = {}
    with h5py.File(path, "r") as h5:

        def add(name, obj):
            if isinstance(obj, h5py.Dataset):
                top = name.split("/")[0]
                parts[top] = parts.get(top, 0) + obj.id.get_storage_size()

        h5.visititems(add)
    file_bytes = path.stat().st_size
    return {"file_bytes": file_bytes, "bytes_per_episode": file_bytes // max(episodes, 1), "parts": parts}


def store_from_shapes(cfg, vocab_size: int, plan_device: str = "h200") -> dict:
    """The store, device memory and time of a run of ``cfg`` from the public plan
    (``arprobe.trainer.plan.plan``): the model is built on the meta device (shapes only, no weights:
    seconds even at 2.8B), the recording table is the recorder's, and memory and time are planned
    for ``plan_device``'s datasheet. ``vocab_size``: the BPE tokenizer's target size
    (``data.vocab_size``); the tokenizer trained on the run's documents may hold fewer (``vocab``).
    """
    import dataclasses

    from arprobe.trainer.plan import plan

    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, vocab_size=vocab_size))
    planned = plan(cfg, plan_device=plan_device)
    shape, parts, K = planned.shape, planned.sizes, planned.episodes
    by_key = {r.key: r for r in planned.recordings}
    unembed, grads = (
        by_key.get("weights/unembed"),
        next((r for r in planned.recordings if r.kind == "grads"), None),
    )
    recordings = sum(
        parts[k] for k in ("losses and stats", "docs", "weights", "activations", "grads") if k in parts
    )
    size, writes = planned.resume_write
    return {
        "model": cfg.model.name,
        "n_params": planned.n_params,
        "width": shape.d_model,
        "depth": shape.n_layers,
        "vocab": shape.vocab,
        "T": cfg.data.n_docs,
        "C": cfg.data.context_length,
        "M": cfg.schedule.steps_per_doc,
        "E": cfg.schedule.epochs,
        "episodes": K,
        "sketch_dim": cfg.record.sketch_dim,
        "all_weights_dim": cfg.record.all_weights_dim,
        "unembed_values": unembed.sketch["full_dim"] if unembed and unembed.sketch else None,
        "unembed_stored": unembed.row_shape[0] if unembed else None,
        "attn_values": grads.sketch["full_dim"] if grads and grads.sketch else None,
        "attn_stored": grads.row_shape[1] if grads else None,
        "parts": parts,
        # what grows with every episode: losses, weights, activations, gradients (amortised over epochs)
        "recordings_per_episode": recordings // K,
        "checkpoints_per_episode": parts["checkpoints"] // K,
        "resume_bytes": parts["resume"],  # the resume point beside the store while the run goes
        "resume_write_bytes": size,
        "resume_writes": writes,
        "total_per_episode": parts["per_episode"],
        "naive_per_episode": 4 * planned.n_params,  # full float32 state_dict every episode
        "plan_device": planned.device,
        "device_memory": {part: size for part, (size, _) in planned.device_memory.items()},
        "peak_device_bytes": planned.peak_device_bytes,
        "seconds": planned.times,
    }


human = human_bytes  # one formatter for the CLI's estimates and the benchmark's table
