"""The default store: its size under today's recording against the earlier one, what every built-in
probe's headline numbers lose to it, and what HDF5 compression would buy.

    python -m benchmarks.store_size [--out benchmarks/results/store_size.json] [--workdir DIR]

Trains the default run twice with one seed: once with the current defaults (unembedding and
per-document gradients count-sketched to ``record.sketch_dim`` = 131,072 values, one checkpoint
at the end of the next-to-last epoch, the resume point beside the store and deleted at the end)
and once with the earlier recording (sketch_dim 524,288, so both stayed exact; a checkpoint per
epoch; the resume slots inside the store). Training is identical (recording never touches it),
so any difference in a probe's headline numbers comes from the recording alone. Then every
float dataset of the new store is rewritten with gzip (levels 1 and 4) and lzf, each with the
byte-shuffle filter, timing the write and reporting the size ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

EARLIER = {"sketch_dim": 524288, "checkpoints": "epoch"}


def store_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in run_dir.glob("*.h5"))


def headlines(run_dir: Path, report_dir: Path) -> dict[str, dict]:
    """{probe: headline} of every built-in probe that reads one run."""
    from arprobe.probes.registry import default_registry
    from arprobe.probes.runner import run_probe
    from arprobe.storage import RunStore

    registry = default_registry()
    out = {}
    with RunStore(run_dir) as store:
        for row in registry.describe():
            if row["source"] != "arprobe" or row["error"] or not row["needs_store"]:
                continue
            probe = registry.get(row["name"])
            if probe.multi_run:
                continue
            probe.progress = False
            outcome = run_probe(probe, [store], report_dir)
            out[row["name"]] = {"status": outcome.status, "reason": outcome.reason, **outcome.headline}
    return out


def numbers(value) -> np.ndarray | None:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.size else None


def differences(new: dict, old: dict) -> dict[str, dict]:
    """{probe: {key: max |new - old|}} over the numeric headline values both have."""
    out = {}
    for probe, values in new.items():
        diffs = {}
        for key, value in values.items():
            a, b = numbers(value), numbers(old.get(probe, {}).get(key))
            if a is not None and b is not None and a.shape == b.shape:
                both = np.isfinite(a) & np.isfinite(b)
                diffs[key] = float(np.max(np.abs(a - b)[both])) if both.any() else 0.0
        out[probe] = diffs
    return out


def compression(store_path: Path, workdir: Path) -> dict[str, dict]:
    """Size ratio and write speed of every float dataset of the store under each filter."""
    filters = {"gzip-1": ("gzip", 1), "gzip-4": ("gzip", 4), "lzf": ("lzf", None)}
    with h5py.File(store_path, "r") as h5:
        arrays = {}
        h5.visititems(
            lambda n, o: (
                arrays.__setitem__(n, o[()])
                if isinstance(o, h5py.Dataset) and o.dtype == np.float32 and o.size > 1024
                else None
            )
        )
    raw = sum(a.nbytes for a in arrays.values())
    out = {"float_bytes": raw}
    for label, (name, level) in filters.items():
        path = workdir / f"{label}.h5"
        started = time.perf_counter()
        with h5py.File(path, "w") as h5:
            for key, a in arrays.items():
                h5.create_dataset(
                    key, data=a, chunks=True, compression=name, compression_opts=level, shuffle=True
                )
        seconds = time.perf_counter() - started
        out[label] = {
            "ratio": path.stat().st_size / raw,
            "write_mb_per_s": raw / 1e6 / seconds,
        }
        path.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    from arprobe.trainer.config import load_config
    from arprobe.trainer.loop import run

    parser = argparse.ArgumentParser(prog="python -m benchmarks.store_size")
    parser.add_argument("--out", default="benchmarks/results/store_size.json")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        results = {}
        for label, extra in (("now", {}), ("earlier", EARLIER)):
            cfg = load_config(None, {"out": str(work), "name": label, **extra})
            started = time.perf_counter()
            outcome = run(cfg, progress=False)
            seconds = time.perf_counter() - started
            results[label] = {
                "seconds": seconds,
                "store_bytes": store_bytes(outcome.path.parent),
                "headlines": headlines(outcome.path.parent, work / f"{label}-report"),
            }
            print(f"{label}: {results[label]['store_bytes'] / 1e6:.1f} MB, {seconds:.1f} s", flush=True)
        results["max_abs_difference"] = differences(
            results["now"]["headlines"], results["earlier"]["headlines"]
        )
        results["compression"] = compression(work / "now" / "run.h5", work)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(json.dumps({k: results[k] for k in ("max_abs_difference", "compression")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
