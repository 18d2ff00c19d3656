"""Per-episode cost of the all-weights sketch (``weights/all``), hashed every call vs kept map.

``python -m benchmarks.sketch_cost [--sizes tiny pythia-14m pythia-70m] [--device cpu] [--out FILE]``

For each Pythia-architecture size (``arprobe.models.text.PYTHIA_PRESETS``, the 50304-token
vocabulary; "tiny" is the CPU default model's shape with that vocabulary) it fills that model's
parameter shapes with random float32 values and times ``CountSketch.apply`` over them at
k = ``record.all_weights_dim`` (65536):

- ``hashed_s``: the map hashed from scratch on every call (int64 polynomial arithmetic), what
  every episode paid before the map was kept for models over 8M parameters (the budget set to 0);
- ``first_s``: the first call with the map kept (hashing it once and storing int32 codes);
- ``kept_s``: every later call (the per-episode cost now);

as medians of ``--repeats`` calls, per coordinate too, and the kept map's bytes. It writes JSON
(default ``benchmarks/results/sketch-<device>.json``) with the machine's load average before and
after: on a shared machine the times include other people's work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from arprobe.models.text import PYTHIA_PRESETS
from arprobe.storage import sketch as sketch_module
from arprobe.storage.sketch import CountSketch
from benchmarks.timing import load_average, machine_info, median_seconds

K = 65536  # record.all_weights_dim


def parameter_shapes(size: str) -> list[torch.Size]:
    """The parameter shapes of a Pythia-architecture model of ``size``, built on the meta device."""
    with torch.device("meta"):
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_PRESETS[size]))
    return [p.shape for p in model.parameters()]


def measure(size: str, device: torch.device, repeats: int) -> dict:
    g = torch.Generator(device=device).manual_seed(0)
    params = [torch.randn(s, generator=g, device=device) for s in parameter_shapes(size)]
    D = sum(p.numel() for p in params)
    budget = sketch_module.cache_budget

    sketch_module.cache_budget = lambda device: 0  # nothing kept: hashed on every call
    try:
        hashed = CountSketch(full_dim=D, dim=K, seed=0)
        hashed_s, _ = median_seconds(lambda: hashed.apply(params), device, repeats=repeats, warmup=0)
    finally:
        sketch_module.cache_budget = budget
    kept = CountSketch(full_dim=D, dim=K, seed=0)
    first_s, _ = median_seconds(lambda: kept.apply(params), device, repeats=1, warmup=0)
    kept_s, _ = median_seconds(lambda: kept.apply(params), device, repeats=repeats, warmup=0)
    assert torch.equal(kept.apply(params), hashed.apply(params)), "kept and hashed maps differ"
    return {
        "size": size,
        "parameters": D,
        "hashed_s": round(hashed_s, 4),
        "first_s": round(first_s, 4),
        "kept_s": round(kept_s, 4),
        "hashed_ns_per_value": round(1e9 * hashed_s / D, 2),
        "kept_ns_per_value": round(1e9 * kept_s / D, 2),
        "speedup": round(hashed_s / kept_s, 1),
        "kept_map_bytes": kept.cache_bytes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "pythia-14m", "pythia-70m"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    before = load_average()
    rows = []
    for size in args.sizes:
        rows.append(measure(size, device, args.repeats))
        r = rows[-1]
        per_value = f"{r['hashed_ns_per_value']} -> {r['kept_ns_per_value']} ns/value"
        print(
            f"{size:>12}  D={r['parameters']:>13,}  hashed {r['hashed_s']:8.3f} s  "
            f"first {r['first_s']:8.3f} s  kept {r['kept_s']:8.3f} s  ({per_value}, "
            f"{r['speedup']}x; map {r['kept_map_bytes'] / 1e6:,.0f} MB)",
            flush=True,
        )
    result = {
        "machine": machine_info(device),
        "load_average_before": before,
        "load_average_after": load_average(),
        "k": K,
        "rows": rows,
    }
    out = args.out or Path(__file__).parent / "results" / f"sketch-{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
