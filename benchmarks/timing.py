"""Timing helpers: wall time as a median of repeats, device sync, and what the machine was doing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

# A run of seconds for --quick smoke runs of the run-level benchmarks: the tests' tiny run
# (tests/conftest.py TINY) with two epochs.
QUICK_RUN = {
    "n_docs": 5,
    "context_length": 32,
    "steps_per_doc": 3,
    "epochs": 2,
    "vocab_size": 512,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object], device: torch.device, *, repeats: int, warmup: int = 1
) -> tuple[float, list[float]]:
    """(median, all) wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: above the core count, timings include other people's work."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": _cpu_name() or platform.processor(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
