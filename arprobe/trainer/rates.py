"""How fast a device multiplies matrices, and what that makes of a run's time.

A rate is measured on the device that will run (a short matmul probe in the run's precision,
kept per process, and on disk per GPU model under the arprobe cache), or read from
``DATASHEETS`` when planning for another device (``--plan-device h100``). A run's time
(``time_estimate``) is its floating-point work — 6·N per trained token, 2·N per evaluated token
(N parameters), 6·N per token of a per-document gradient — at ``MFU`` of the rate, never faster
than the kernel launches a step needs, plus the memory-bound recordings (sketches) at the
device's memory bandwidth and the files (store, checkpoints, resume point) at ``DISK_BYTES_PER_S``.
All of it a guide, not a measurement of the run.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

import torch

from arprobe.errors import UserError
from arprobe.models.hub import cache_root


@dataclass(frozen=True)
class DeviceSpec:
    """One device's datasheet figures (dense tensor-core rates, no sparsity), in SI units."""

    label: str
    memory: float  # bytes of device memory
    fp32: float  # FLOP/s of float32 matmuls without tensor cores
    tf32: float  # FLOP/s of float32 matmuls on TF32 tensor cores (fp32 where there are none)
    bf16: float  # FLOP/s of bf16 matmuls, float32 accumulate (fp32 where there is no bf16)
    bandwidth: float  # bytes/s of device memory


# NVIDIA datasheets: H100 SXM5, H200 SXM, A100 SXM4 40/80 GB, L40S, V100 SXM2 32 GB (no TF32 or
# bf16: its fp32 rate), GeForce RTX 4090 (bf16 with float32 accumulate).
DATASHEETS: dict[str, DeviceSpec] = {
    "h100": DeviceSpec("NVIDIA H100 SXM 80 GB", 80e9, 67e12, 495e12, 989e12, 3.35e12),
    "h200": DeviceSpec("NVIDIA H200 SXM 141 GB", 141e9, 67e12, 495e12, 989e12, 4.8e12),
    "a100-40": DeviceSpec("NVIDIA A100 SXM 40 GB", 40e9, 19.5e12, 156e12, 312e12, 1.555e12),
    "a100-80": DeviceSpec("NVIDIA A100 SXM 80 GB", 80e9, 19.5e12, 156e12, 312e12, 2.039e12),
    "l40s": DeviceSpec("NVIDIA L40S 48 GB", 48e9, 91.6e12, 183e12, 362e12, 0.864e12),
    "v100": DeviceSpec("NVIDIA V100 SXM2 32 GB", 32e9, 15.7e12, 15.7e12, 15.7e12, 0.9e12),
    "rtx4090": DeviceSpec("NVIDIA GeForce RTX 4090 24 GB", 24e9, 82.6e12, 82.6e12, 165.2e12, 1.008e12),
}
# Fraction of the rate a training step reaches: 40% of a GPU's (a stated assumption for
# H100-class GPUs at Pythia shapes); 30% of a CPU's measured 1024² matmul rate (benchmarks: 0.35-0.47).
MFU = {"cuda": 0.40, "cpu": 0.30}
# A GPU step is never faster than its kernel launches: about 80 per block (forward, backward,
# optimizer) plus 20, at 5 us each (eager PyTorch, no CUDA graphs).
LAUNCH_SECONDS = 5e-6
DISK_BYTES_PER_S = 1e9  # assumed write rate of the store's and the resume point's disk
# Memory traffic of a count-sketch per coordinate: the value, and the int64 hash temporaries.
SKETCH_BYTES_PER_VALUE = 48
CPU_BANDWIDTH = 10e9  # bytes/s a CPU streams, for sketches on CPU runs (a conservative figure)


@dataclass(frozen=True)
class Rate:
    """The matmul rate a plan uses, and where it comes from."""

    flops: float  # FLOP/s before MFU
    precision: str  # "fp32", "tf32" or "bf16"
    kind: str  # "cuda" or "cpu"
    source: str  # "measured on <device>" or "datasheet of <device>"
    bandwidth: float  # bytes/s of device memory

    @property
    def mfu(self) -> float:
        return MFU[self.kind]

    def describe(self) -> str:
        return f"{self.flops / 1e12:.3g} TFLOP/s {self.precision} ({self.source}) at {self.mfu:.0%} MFU"


def precision(cfg, kind: str) -> str:
    """The matmul precision a run of ``cfg`` uses on a device of ``kind``."""
    if cfg.model.autocast == "bfloat16" or cfg.model.dtype in ("bfloat16", "float16"):
        return "bf16"
    return "tf32" if kind == "cuda" and getattr(cfg.model, "tf32", False) else "fp32"


def datasheet(name: str) -> DeviceSpec:
    key = name.lower().replace(" ", "").replace("_", "-")
    if key not in DATASHEETS:
        raise UserError(f"Unknown --plan-device '{name}'; known: {', '.join(DATASHEETS)}, cpu.")
    return DATASHEETS[key]


def rate_for(cfg, device: torch.device, plan_device: str = "", threads: int = 0) -> Rate:
    """The rate a run of ``cfg`` would get: ``plan_device``'s datasheet when given (another device),
    else measured on ``device`` (this machine's)."""
    if plan_device and plan_device != "cpu":
        spec = datasheet(plan_device)
        p = precision(cfg, "cuda")
        return Rate(getattr(spec, p), p, "cuda", f"datasheet of {spec.label}", spec.bandwidth)
    if device.type == "cuda" and plan_device != "cpu":
        p = precision(cfg, "cuda")
        name = torch.cuda.get_device_name(device)
        return Rate(cuda_matmul_rate(device, p), p, "cuda", f"measured on {name}", _bandwidth_of(name))
    threads = threads or torch.get_num_threads()
    where = f"measured on this CPU, {threads} thread(s)"
    return Rate(cpu_matmul_rate(threads), "fp32", "cpu", where, CPU_BANDWIDTH)


def _bandwidth_of(gpu_name: str) -> float:
    """A measured GPU's memory bandwidth from the datasheet of its model (H100 when unknown)."""
    name = gpu_name.lower().replace(" ", "")
    for key, spec in DATASHEETS.items():
        if key.replace("-", "") in name:
            return spec.bandwidth
    return DATASHEETS["h100"].bandwidth


@functools.cache
def cpu_matmul_rate(threads: int) -> float:
    """float32 FLOP/s of a 1024² matmul with ``threads`` torch threads (best of 5; once per process)."""
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


def cuda_matmul_rate(device: torch.device, precision: str) -> float:
    """FLOP/s of a 4096² matmul on ``device`` in ``precision`` (best of 10, about a second), kept
    per GPU model and precision in ``<arprobe cache>/device_rates.json``."""
    path = cache_root() / "device_rates.json"
    key = f"{torch.cuda.get_device_name(device)}|{precision}|torch {torch.__version__}"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached, dict) and isinstance(cached.get(key), (int, float)):
        return float(cached[key])
    rate = _probe_cuda(device, precision)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**(cached if isinstance(cached, dict) else {}), key: rate}, indent=1))
    except OSError:
        pass  # a read-only cache: measured again next time
    return rate


def _probe_cuda(device: torch.device, precision: str) -> float:
    n = 4096
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        torch.cuda.synchronize(device)
        best = float("inf")
        for _ in range(10):
            started = time.perf_counter()
            a @ b
            torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return 2 * n**3 / best


@dataclass(frozen=True)
class Work:
    """What a run does, counted from its plan: the inputs of ``time_estimate``."""

    n_params: int  # N
    n_layers: int
    steps: int  # gradient steps (K x M)
    step_tokens: int  # tokens per step (C: batch size 1)
    eval_tokens: int  # tokens of all eval rows ((K + 1) x T x C)
    eval_forwards: int  # eval forwards ((K + 1) x ceil(T / eval batch))
    grad_tokens: int  # tokens of per-document gradients (recordings x T x C)
    sketched_values: int  # values sketched over the run (every snapshot's D)
    store_bytes: int  # the store, checkpoints included
    resume_bytes: int  # bytes of one resume write
    resume_writes: int  # resume writes per run


def time_estimate(work: Work, rate: Rate) -> dict[str, float]:
    """Seconds per part: "step" (one gradient step), "training", "eval", "recording", "resume
    writes" and "total"; the arithmetic in the module docstring."""
    achieved = rate.flops * rate.mfu
    N = work.n_params
    launch = (LAUNCH_SECONDS * (80 * work.n_layers + 20)) if rate.kind == "cuda" else 0.0
    step = max(6 * N * work.step_tokens / achieved, launch)
    eval_compute = 2 * N * work.eval_tokens / achieved
    # a forward launches about a third of a step's kernels
    eval_seconds = max(eval_compute, work.eval_forwards * launch / 3)
    grads = 6 * N * work.grad_tokens / achieved
    sketches = SKETCH_BYTES_PER_VALUE * work.sketched_values / rate.bandwidth
    recording = grads + sketches + work.store_bytes / DISK_BYTES_PER_S
    resume = work.resume_bytes * work.resume_writes / DISK_BYTES_PER_S
    compute = step * work.steps + eval_seconds + recording
    parts = {
        "step": step,
        "training": step * work.steps,
        "eval": eval_seconds,
        "recording": recording,
        "resume writes": resume,
    }
    # Resume points are written on a background thread while training goes on: only the part of
    # their writing longer than the run's compute adds to its wall time.
    parts["total"] = compute + max(0.0, resume - compute)
    return parts


def format_seconds(seconds: float) -> str:
    """3.2 -> "3.2 s", 600 -> "10 min", 9000 -> "2.5 h"."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
