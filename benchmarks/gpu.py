"""arprobe on one GPU, in one command: ``python -m benchmarks.gpu --out benchmarks/results/gpu.json``.

Written for one H100/H200-class GPU and a budget of 8 minutes (``--budget``, default 480 s); every
section is guarded (a failure is recorded in the JSON as ``{"error": ...}`` and the other sections
still run), a section that would start after the budget is recorded as skipped, and the JSON is
written again after every section (a command killed later keeps what was done). ``--sections``
reruns some of them.

Sections:
- ``agreement``: the tiny run's eval matrix on the device against the CPU's, float32 (within 1e-3)
  and bf16 autocast (within 0.05);
- ``e2e``: the paper's default run (T = 25, C = 256, M = 10, E = 5, Adam 1e-5, bf16 autocast) at the
  Pythia-1B shape with the default recording, end to end: wall time, setup and training time, the
  GPU's busy share (NVML utilisation sampled every 0.2 s), peak memory and the store's size. Stopped
  by SIGTERM at 210 s (or the budget), then projected from the episodes done, labelled so;
- ``mfu``: training-step and eval-matrix MFU at the Pythia-410M and 1B shapes (random init from
  the presets in ``arprobe.models.text``: no download; arprobe's 4096-token BPE, so the unembedding
  is smaller than Pythia's 50k) in fp32, TF32 and bf16 autocast, each against the measured matmul
  peak of its own precision, with the peak device memory of the case;
- ``syncs``: host-device synchronisations per training step (``torch.cuda.set_sync_debug_mode``
  warnings counted);
- ``recordings``: per-episode seconds of every recording the default run takes, and of the resume
  write (the copy the loop waits for, and the whole write on the background thread) at 410M;
- ``batched``: one training step of 4 seeds stacked (``--batch-seeds``) against 4 separate ones at 410M.

``--smoke`` runs every section at tiny shapes on whatever device there is (CPU included) in seconds:
what ``tests/trainer/test_gpu_benchmark_smoke.py`` runs. Nothing in this file has been run on a GPU
yet (no GPU was lent when it was written): see the docs' GPU page.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import statistics
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.throughput import eval_fn, model_flop_params, train_step_fn
from benchmarks.timing import machine_info, median_seconds, sync

TINY_SHAPE = {"vocab_size": 512, "d_model": 64, "n_layers": 2, "n_heads": 2}
SMALL_RUN = {"n_docs": 5, "context_length": 32, "steps_per_doc": 3, "epochs": 2, **TINY_SHAPE}
# The paper's default run (Sec. 3, App. A.1: T = 25, C = 256, M = 10, E = 5, Adam lr 1e-5 with its
# state reset per document) at the Pythia-1B shape, random init, bf16 autocast as the paper configs
# set it, and the default recording.
PAPER_RUN = {
    "n_docs": 25,
    "context_length": 256,
    "steps_per_doc": 10,
    "epochs": 5,
    "optim.name": "adam",
    "optim.lr": 1e-5,
    "autocast": "bfloat16",
}
FULL = {
    "agreement_run": SMALL_RUN,
    "e2e": {"shape": "pythia-1b", "run": PAPER_RUN, "limit_s": 210.0},
    "shapes": ["pythia-410m", "pythia-1b"],
    "mfu_data": {"n_docs": 25, "context_length": 256},
    "batched_shape": "pythia-410m",
    "recording_shape": "pythia-410m",
    "peak_size": 8192,
    "repeats": 5,
}
QUIET = {"all_weights_dim": 0, "grads_at": "never", "weights_every": 0, "activations_every": 0}
SMOKE = {
    "agreement_run": {**SMALL_RUN, "n_docs": 3, "steps_per_doc": 1, "epochs": 1, **QUIET},
    "e2e": {"shape": "tiny", "run": {**SMALL_RUN, "optim.name": "adam"}, "limit_s": 120.0},
    "shapes": ["tiny"],
    "mfu_data": {"n_docs": 5, "context_length": 32},
    "batched_shape": "tiny",
    "recording_shape": "tiny",
    "peak_size": 256,
    "repeats": 2,
}
ACTIVATIONS_NOTE = (
    "an upper bound: a separate forward of the recorded documents and the copy to the host; a run "
    "reads them from its eval forward's hooks instead, so it pays the hooks and the copy only"
)
SECTIONS = ("agreement", "e2e", "mfu", "syncs", "recordings", "batched")
PRECISIONS = {  # name: (model.autocast, model.tf32, matmul dtype of the peak)
    "fp32": ("off", False, torch.float32),
    "tf32": ("off", True, torch.float32),
    "bf16": ("bfloat16", True, torch.bfloat16),
}


def config(out: Path, shape: str, device: str, smoke: bool, **overrides):
    from arprobe.trainer.config import load_config

    values = {"out": str(out), "name": f"{shape}-{len(list(out.glob('*')))}", "model.device": device}
    values.update({"model.name": shape, "model.init": "pythia", "threads": 0})
    values.update(TINY_SHAPE if smoke else {})
    values.update(overrides)
    return load_config(None, values)


def prepared(out: Path, shape: str, device: str, smoke: bool, **overrides):
    from arprobe.trainer.loop import prepare

    return prepare(config(out, shape, device, smoke, **overrides))


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


# --- sections ---------------------------------------------------------------------------------------


def agreement(work: Path, device: torch.device, sizes: dict) -> dict:
    """The tiny run's eval matrix on ``device`` against the CPU's (float32 and bf16 autocast)."""
    from arprobe.storage import RunStore
    from arprobe.trainer.loop import run

    def matrix(dev: str, autocast: str) -> np.ndarray:
        run_cfg = sizes["agreement_run"]
        cfg = config(work / f"agree-{dev}-{autocast}", "tiny", dev, True, **run_cfg, autocast=autocast)
        with RunStore(run(cfg, progress=False).path) as store:
            return store.eval_matrix()

    cpu = matrix("cpu", "off")
    out = {"device": str(device)}
    for name, autocast, tolerance in [("float32", "off", 1e-3), ("bf16", "bfloat16", 0.05)]:
        on_device = cpu if device.type == "cpu" and autocast == "off" else matrix(str(device), autocast)
        diff = float(np.abs(on_device - cpu).max())
        out[name] = {"max_abs_diff_vs_cpu_fp32": diff, "tolerance": tolerance, "within": diff <= tolerance}
    return out


class Utilisation(threading.Thread):
    """``torch.cuda.utilization`` (NVML: the share of the last sample period in which a kernel ran)
    every ``every`` seconds, with the time of each sample; nothing on a CPU."""

    def __init__(self, device: torch.device, every: float = 0.2):
        super().__init__(daemon=True)
        self.device, self.every = device, every
        self.samples: list[tuple[float, float]] = []  # (time.monotonic(), percent)
        self.error = ""
        self._done = threading.Event()

    def run(self) -> None:
        while self.device.type == "cuda" and not self._done.wait(self.every):
            try:
                self.samples.append((time.monotonic(), float(torch.cuda.utilization(self.device))))
            except Exception as exc:  # no NVML (pynvml) here: said in the JSON, the run goes on
                self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                return

    def stop(self) -> None:
        self._done.set()
        self.join()

    def busy(self, since: float = 0.0) -> float | None:
        """Mean utilisation (0..1) of the samples taken at or after ``since``; None without any."""
        kept = [u for t, u in self.samples if t >= since]
        return statistics.mean(kept) / 100 if kept else None


class EpisodeTimes:
    """A run callback: when training starts and when each episode is committed; at the first
    episode (the run's signal handlers are in place by then) it calls ``first``."""

    def __init__(self, first=lambda: None):
        self.start: float | None = None
        self.episodes: list[float] = []
        self.first = first

    def on_start(self, info: dict) -> None:
        self.start = time.monotonic()

    def on_episode(self, metrics: dict) -> None:
        self.episodes.append(time.monotonic())
        if len(self.episodes) == 1:
            self.first()


def end_to_end(work: Path, device: torch.device, sizes: dict, smoke: bool, deadline: float) -> dict:
    """The paper's default run at the Pythia-1B shape with the default recording, end to end as
    ``arprobe run`` runs it: wall time, the GPU's busy share of it (and of training alone), the
    store's size. At its time limit it is stopped as a user would stop it (SIGTERM: the run ends
    after the current episode, resumable), and the whole run's time is projected from the episodes
    done, labelled as a projection."""
    from arprobe.trainer.loop import run

    spec = sizes["e2e"]
    limit = min(spec["limit_s"], max(10.0, deadline - time.monotonic()))
    cfg = config(work, spec["shape"], str(device), smoke, **spec["run"])
    planned = cfg.data.n_docs * cfg.schedule.epochs
    started = time.monotonic()
    timers: list[threading.Timer] = []

    def arm() -> None:  # SIGTERM at the limit, counted from the start of the section
        left = max(0.0, limit - (time.monotonic() - started))
        timers.append(threading.Timer(left, signal.raise_signal, (signal.SIGTERM,)))
        timers[0].start()

    utilisation, times = Utilisation(device), EpisodeTimes(first=arm)
    # a signal that arrives after the run has restored its handlers is ignored, not fatal
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    utilisation.start()
    try:
        result = run(cfg, progress=False, callbacks=[times])
    finally:
        for timer in timers:
            timer.cancel()
            timer.join()
        utilisation.stop()
        signal.signal(signal.SIGTERM, previous)
    wall = time.monotonic() - started
    done = result.completed_episodes
    setup_s = (times.start or started) - started
    out = {
        "shape": spec["shape"],
        "run": spec["run"],
        "status": result.status,
        "episodes_done": done,
        "episodes_planned": planned,
        "wall_s": wall,
        "setup_s": setup_s,  # data, tokenizer, model built and moved, store created
        "training_s": wall - setup_s,
        "gpu_busy_share_of_wall": utilisation.busy(),
        "gpu_busy_share_of_training": utilisation.busy(since=times.start or started),
        "utilisation_samples": len(utilisation.samples),
        "utilisation_error": utilisation.error,
        "store_bytes": result.path.stat().st_size if result.path.exists() else None,
        "peak_memory_bytes": peak_memory(device),
    }
    if done < planned and done > 0 and times.episodes:
        per_episode = (times.episodes[-1] - (times.start or started)) / done
        out["projected_wall_s"] = setup_s + per_episode * planned
        out["projection"] = f"setup + {planned} episodes x the mean of the {done} done"
    return out


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    _, times = median_seconds(lambda: a @ b, device, repeats=repeats, warmup=2)
    return 2 * size**3 / min(times) / 1e9


def mfu(work: Path, device: torch.device, sizes: dict, smoke: bool, deadline: float) -> dict:
    """Train-step and eval MFU per shape and precision, against the same precision's matmul peak.
    One model per shape serves its three precisions (TF32 is a backend switch and bf16 autocast a
    forward wrapper, ``use_autocast``), so the CPU-bound build and initialisation (about 15 s at 1B)
    is paid once per shape, not three times."""
    from arprobe.models.text import use_autocast
    from arprobe.trainer.members import Single
    from arprobe.trainer.precision import use_tf32
    from benchmarks.throughput import recorder_of

    out: dict = {}
    for shape in sizes["shapes"]:
        setup, prepare_s = None, None
        for precision, (autocast, tf32, dtype) in PRECISIONS.items():
            key = f"{shape}/{precision}"
            if time.monotonic() > deadline:
                out[key] = {"skipped": "time budget"}
                continue
            print(f"  mfu {key}", flush=True)
            try:
                reset_peak(device)
                if setup is None:
                    started = time.monotonic()
                    setup = prepared(work, shape, str(device), smoke, **sizes["mfu_data"])
                    prepare_s = time.monotonic() - started
                setup.cfg.model.tf32, setup.cfg.model.autocast = tf32, autocast
                use_tf32(setup.cfg, device)
                setup.model.__dict__.pop("forward", None)  # the class's own forward: autocast off
                use_autocast(setup.model, autocast)
                if device.type == "cuda":  # the peak of this precision (TF32 on or off as the case)
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                peak = matmul_peak(device, dtype, sizes["peak_size"], sizes["repeats"])
                N, C, T = model_flop_params(setup.model), setup.cfg.data.context_length, setup.cfg.data.n_docs
                doc = int(torch.argmax(setup.task.lengths))
                step = train_step_fn(setup, recorder_of(setup), Single(setup.model, setup.cfg), doc)
                train_s, _ = median_seconds(step, device, repeats=sizes["repeats"], warmup=2)
                eval_s, _ = median_seconds(
                    eval_fn(setup, T, setup.task.eval_batch), device, repeats=sizes["repeats"]
                )
                train_gflops, eval_gflops = 6 * N * C / train_s / 1e9, 2 * N * C * T / eval_s / 1e9
                out[key] = {
                    "N": N,
                    "C": C,
                    "T": T,
                    "vocab": setup.model.config.vocab_size,
                    "peak_gflops": peak,
                    "train_step_s": train_s,
                    "train_mfu": train_gflops / peak,
                    "eval_row_s": eval_s,
                    "eval_mfu": eval_gflops / peak,
                    "peak_memory_bytes": peak_memory(device),
                    "prepare_s": prepare_s,  # the shape's one build, shared by its precisions
                }
                del step
            except Exception as exc:  # one case failing (out of memory) leaves the others
                out[key] = failure(exc)
        del setup
        reset_peak(device)
    return out


def syncs(work: Path, device: torch.device, sizes: dict, smoke: bool) -> dict:
    """Host-device synchronisations per training step of the loop (sync debug mode's warnings)."""
    from arprobe.trainer.members import Single
    from benchmarks.throughput import recorder_of

    setup = prepared(work, sizes["shapes"][0], str(device), smoke, **sizes["mfu_data"])
    step = train_step_fn(setup, recorder_of(setup), Single(setup.model, setup.cfg), 0)
    step()  # allocations and lazy initialisation, uncounted
    if device.type != "cuda":
        return {"per_step": 0, "note": f"{device.type}: no host-device synchronisation to count"}
    steps = 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return {"per_step": len(found) / steps, "kinds": sorted(set(found))[:10]}


def recordings(work: Path, device: torch.device, sizes: dict, smoke: bool) -> dict:
    """Seconds of every recording the default run takes after an episode, and of the resume write."""
    from arprobe.storage.resume import ResumeWriter
    from arprobe.trainer.checkpoints import keeps_optimizer_state, state_tensors
    from arprobe.trainer.members import Single
    from benchmarks.throughput import recorder_of

    setup = prepared(work, sizes["recording_shape"], str(device), smoke, **sizes["mfu_data"])
    recorder = recorder_of(setup)
    out = {}
    for recording in recorder.table:
        if recording.key not in recorder.capture:
            continue
        capture = recorder.capture[recording.key]
        episode = int(recording.episodes[0]) if len(recording.episodes) else 1
        if recording.kind == "activations":  # uncached each time: a forward of the recorded documents

            def snapshot(c=capture, e=episode):
                recorder._eval_activations = {}
                return c(e)

            seconds, _ = median_seconds(snapshot, device, repeats=sizes["repeats"])
            out[recording.key] = {"seconds": seconds, "note": ACTIVATIONS_NOTE}
            continue
        seconds, _ = median_seconds(lambda c=capture, e=episode: c(e), device, repeats=sizes["repeats"])
        out[recording.key] = {"seconds": seconds}
    members = Single(setup.model, setup.cfg)
    writer = ResumeWriter(work / "resume" / "run.h5", "benchmark")
    (work / "resume").mkdir(parents=True, exist_ok=True)
    params, optim = state_tensors(setup.model, members.optimizer, keeps_optimizer_state(setup.cfg))
    rng = torch.Generator().get_state().numpy()
    copies, totals = [], []
    for episode in range(1 + sizes["repeats"]):
        started = time.perf_counter()
        writer.submit(episode, params, optim, rng)
        copied = time.perf_counter() - started
        writer.wait()
        if episode:  # the first allocates the buffers
            copies.append(copied)
            totals.append(time.perf_counter() - started)
    out["resume_write"] = {
        "bytes": recorder.state_bytes,
        "copy_seconds_loop_waits": statistics.median(copies),
        "write_seconds_background": statistics.median(totals),
    }
    return out


def batched(work: Path, device: torch.device, sizes: dict, smoke: bool) -> dict:
    """One training step of 4 seeds stacked against 4 separate steps, same shape."""
    import dataclasses

    from arprobe.trainer.episode import TrainingRules, train_episode
    from arprobe.trainer.members import Single, make_members

    seeds = 4
    setups = [
        prepared(work, sizes["batched_shape"], str(device), smoke, **sizes["mfu_data"], seed=s)
        for s in range(seeds)
    ]
    cfg = setups[0].cfg
    rules = dataclasses.replace(
        TrainingRules.from_config(cfg, len(setups[0].schedule)), steps_per_doc=1, reset_optimizer=False
    )

    def step_of(members, runs):
        norms = members.grad_norms(runs[0].names.parameter_groups(runs[0].model), device)
        generators = [torch.Generator().manual_seed(s) for s in range(len(runs))]
        tasks = [r.task for r in runs]
        return lambda: train_episode(
            members, tasks, [0] * len(runs), episode=1, rules=rules, generators=generators, grad_norms=norms
        )

    single_s, _ = median_seconds(
        step_of(Single(setups[0].model, cfg), setups[:1]), device, repeats=sizes["repeats"], warmup=2
    )
    stacked_s, _ = median_seconds(
        step_of(make_members([s.model for s in setups], cfg), setups),
        device,
        repeats=sizes["repeats"],
        warmup=2,
    )
    return {
        "seeds": seeds,
        "separate_step_s": single_s,
        "stacked_step_s": stacked_s,
        "speedup": seeds * single_s / stacked_s,
        "peak_memory_bytes": peak_memory(device),
    }


# --- driver -----------------------------------------------------------------------------------------


def failure(exc: BaseException) -> dict:
    return {
        "error": f"{type(exc).__name__}: {exc}".splitlines()[0],
        "traceback": traceback.format_exc()[-2000:],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/gpu.json", help="JSON file written")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:N or cpu")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds; later sections are skipped")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny shapes, seconds, any device (a code check)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, in this order: {','.join(SECTIONS)} (a rerun of the ones that failed)",
    )
    args = parser.parse_args(argv)
    chosen = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")

    from arprobe.models.text import resolve_device

    device = resolve_device(args.device)
    sizes = SMOKE if args.smoke else FULL
    started = time.monotonic()
    deadline = started + args.budget
    result: dict = {
        "smoke": args.smoke,
        "budget_s": args.budget,
        "machine": machine_info(device),
        "total_s": 0.0,
    }
    with tempfile.TemporaryDirectory(prefix="arprobe-gpu-") as tmp:
        work = Path(tmp)
        sections = {
            "agreement": lambda: agreement(work / "agreement", device, sizes),
            "e2e": lambda: end_to_end(work / "e2e", device, sizes, args.smoke, deadline),
            "mfu": lambda: mfu(work / "mfu", device, sizes, args.smoke, deadline),
            "syncs": lambda: syncs(work / "syncs", device, sizes, args.smoke),
            "recordings": lambda: recordings(work / "recordings", device, sizes, args.smoke),
            "batched": lambda: batched(work / "batched", device, sizes, args.smoke),
        }
        assert list(sections) == list(SECTIONS)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        for name in [n for n in SECTIONS if n in chosen]:
            fn = sections[name]
            if time.monotonic() > deadline:
                result[name] = {"skipped": "time budget"}
                continue
            print(f"[{time.monotonic() - started:6.1f} s] {name}", flush=True)
            section_started = time.monotonic()
            try:
                result[name] = fn()
            except Exception as exc:  # recorded; the next section still runs
                result[name] = failure(exc)
                print(f"  {name} failed: {result[name]['error']}", flush=True)
            if isinstance(result[name], dict):
                result[name]["section_s"] = time.monotonic() - section_started
            sync(device)
            result["total_s"] = time.monotonic() - started
            write_json(out, result)  # after every section: a command killed later keeps these
    print(f"wrote {out} ({result['total_s']:.0f} s)")
    return result


def write_json(path: Path, result: dict) -> None:
    """Whole or not at all: a kill mid-write leaves the previous section's file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    tmp.replace(path)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
