"""The embedded default, cyclic vs shuffled, over seeds: the numbers in the README.

    python -m benchmarks.default_effect [--seeds 0 1 2] [--out runs/effect]

Prints per-run wall time, final-epoch recovery score and mean online loss (epochs 2..E),
then the mean over seeds per order (paper Table 1 direction: cyclic RS higher, online loss lower).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/effect")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    args = parser.parse_args()

    from arprobe.trainer.config import load_config
    from arprobe.trainer.loop import run

    extra = dict(kv.split("=", 1) for kv in args.set)
    rows = []
    for order in ("cyclic", "shuffle"):
        for seed in args.seeds:
            cfg = load_config(None, {"order": order, "seed": seed, "out": args.out, **extra})
            started = time.perf_counter()
            result = run(cfg, progress=False, overwrite=True)
            rows.append(
                {
                    "order": order,
                    "seed": seed,
                    "seconds": time.perf_counter() - started,
                    "final_rs": float(result.recovery_scores[-1]),
                    "online_loss": result.online_loss,
                }
            )
            r = rows[-1]
            print(
                f"{order:8s} seed {seed}: {r['seconds']:5.1f} s  RS(E-1) {r['final_rs']:.3f}  "
                f"online loss {r['online_loss']:.4f}",
                flush=True,
            )
    print("\norder     mean RS(E-1)        mean online loss   mean time")
    for order in ("cyclic", "shuffle"):
        sel = [r for r in rows if r["order"] == order]
        rs, ol, t = (np.array([r[k] for r in sel]) for k in ("final_rs", "online_loss", "seconds"))
        print(
            f"{order:8s}  {rs.mean():.3f} ± {rs.std():.3f}     {ol.mean():.4f} ± {ol.std():.4f}   "
            f"{t.mean():.1f} s"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
