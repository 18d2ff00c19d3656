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
from types import SimpleNamespace

import numpy as np
import torch

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


def store_from_shapes(cfg, vocab_size: int) -> dict:
    """The store of a run with ``cfg``'s default recording, computed from the model's shapes alone.

    For models too large to build here (``arprobe.trainer.plan.plan`` builds the model): the model
    is built on the meta device (no memory, instant even at 1B), the recording table follows the
    recorder's rules (``stored_dim`` for sketches, ``weights/all`` a sketch of ``all_weights_dim``,
    gradients at epoch ends, checkpoints) with each kind's row shape from the recording table, and
    ``store_layout`` and ``estimate_store_bytes`` size it, as ``plan`` does. A test checks it
    against ``plan`` on a model that can be built. Handles the default recording (``unembed`` and
    ``all`` weights, ``blocks.mid.attn`` gradients, ``ln_final`` activations) of a GPT-NeoX model
    with a cyclic schedule.
    """
    from transformers import AutoModelForCausalLM

    from arprobe.models.text import build_config
    from arprobe.science.schedule import Schedule
    from arprobe.storage.recordings import Recording, every, kind
    from arprobe.storage.sketch import stored_dim
    from arprobe.trainer.plan import estimate_store_bytes, store_layout
    from arprobe.trainer.recorders import checkpoint_episodes

    rec, d = cfg.record, cfg.data
    assert (rec.weights, rec.grads, rec.activations) == (
        ["unembed"],
        ["blocks.mid.attn"],
        ["ln_final.hook_normalized"],
    )
    assert cfg.schedule.order == "cyclic" and cfg.optim.reset_per_doc
    config, _ = build_config(cfg.model, vocab_size, d.context_length)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    width, depth = config.hidden_size, config.num_hidden_layers
    T, C, M, E = d.n_docs, d.context_length, cfg.schedule.steps_per_doc, cfg.schedule.epochs
    schedule = Schedule(np.tile(np.arange(T), E), np.repeat(np.arange(1, E + 1), T), T)
    K = len(schedule)
    epoch_ends = tuple(int(k) for k in schedule.epoch_ends)
    unembed = model.get_output_embeddings().weight.numel()
    attn = sum(p.numel() for p in model.gpt_neox.layers[depth // 2].attention.parameters())
    n_params = sum(p.numel() for p in model.parameters())

    def recording(name: str, row_shape: tuple, episodes: tuple, **extra) -> Recording:
        group, _, name = name.partition("/")
        row = kind(group).row_shape(row_shape, T)  # the table's rule (grads: one row per document)
        return Recording(kind=group, name=name, what="", when="", row_shape=row, episodes=episodes, **extra)

    table = []
    if rec.weights_every:
        table.append(
            recording("weights/unembed", (stored_dim(unembed, rec.sketch_dim),), every(rec.weights_every, K))
        )
    if rec.all_weights_dim:
        table.append(recording("weights/all", (min(rec.all_weights_dim, n_params),), every(1, K)))
    grad_episodes = {"epoch": epoch_ends, "end": (K,), "never": ()}[rec.grads_at]
    if grad_episodes:
        table.append(recording("grads/blocks.mid.attn", (stored_dim(attn, rec.sketch_dim),), grad_episodes))
    if rec.activations_every:
        shape = (len(rec.activation_docs), C, width)
        table.append(
            recording("activations/ln_final.hook_normalized", shape, every(rec.activations_every, K))
        )
    if rec.checkpoints != "none":
        # optim.reset_per_doc (asserted above): no Adam state to keep, 4 bytes per parameter
        episodes, _ = checkpoint_episodes(rec.checkpoints, list(epoch_ends), K)
        table.append(recording("checkpoints/model", (n_params,), episodes, bytes_per_snapshot=4 * n_params))
    by_key = {r.key: r for r in table}
    # embed, ln1/ln2/attn/mlp of every block, ln_final, unembed: the layer groups of grad_norm
    recorder = SimpleNamespace(layer_names=[""] * (4 * depth + 3), table=table)
    W = C + 2 * d.max_shift  # a document row: the C-token window and S tokens either side
    docs = {
        "tokens": np.zeros((T, W), np.int32),
        "lengths": np.zeros(T, np.int32),
        "window_start": np.zeros(T, np.int32),
    }
    setup = SimpleNamespace(
        cfg=cfg,
        schedule=schedule,
        model=model,
        task=SimpleNamespace(store_arrays=lambda: docs),
        texts=["x" * 4 * C] * T,  # a stand-in for the documents' text: about 4 bytes a token
    )
    parts = estimate_store_bytes(store_layout(setup, recorder), setup)
    recordings = sum(parts[k] for k in ("losses and stats", "docs", "weights", "activations", "grads"))
    return {
        "model": cfg.model.name,
        "n_params": n_params,
        "width": width,
        "depth": depth,
        "vocab": vocab_size,
        "T": T,
        "C": C,
        "M": M,
        "E": E,
        "episodes": K,
        "sketch_dim": rec.sketch_dim,
        "all_weights_dim": rec.all_weights_dim,
        "unembed_values": unembed,
        "unembed_stored": by_key["weights/unembed"].row_shape[0] if "weights/unembed" in by_key else None,
        "attn_values": attn,
        "attn_stored": by_key["grads/blocks.mid.attn"].row_shape[1]
        if "grads/blocks.mid.attn" in by_key
        else None,
        "parts": parts,
        # what grows with every episode: losses, weights, activations, gradients (amortised over epochs)
        "recordings_per_episode": recordings // K,
        "checkpoints_per_episode": parts["checkpoints"] // K,  # full model at every epoch end
        "resume_bytes": parts["resume"],  # two rolling full-model slots, overwritten, not growing
        "total_per_episode": parts["per_episode"],
        "naive_per_episode": 4 * n_params,  # full float32 state_dict every episode
    }


human = human_bytes  # one formatter for the CLI's estimates and the benchmark's table
