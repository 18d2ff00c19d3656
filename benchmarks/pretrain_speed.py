"""Training throughput of every size of the default `arprobe pretrain` ladder, and the whole ladder's
projected time (issue 16's target: at most 30 minutes on 2 CPU cores).

    python -m benchmarks.pretrain_speed [--threads 1] [--steps 8] [--repeats 3] [--sizes ...] [--out FILE]

Each size is built as the ladder builds it (Pythia init, the default 8 x 128-token batches) and
trained for ``--steps`` AdamW steps on real corpus-like token ids after one warm-up step; the
median of ``--repeats`` gives its tokens/s. The projection is the default budget (tokens per size)
divided by each size's rate, summed, plus the measured cost of saving the revisions. Sizes are
measured one after another in this process, so a shared machine's load moves every number: the
load average before and after is recorded, and a quiet machine is the place for the ≤ 30 min check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from arprobe.pretrain.ladder import SIZES, Settings, checkpoint_steps
    from arprobe.pretrain.train import build_size, make_optimizer, save_folder, train_step

    parser = argparse.ArgumentParser(prog="python -m benchmarks.pretrain_speed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings()
    vocab = settings.vocab_size
    revisions = len(checkpoint_steps(settings.steps, settings.checkpoint_every)) + 1
    load_before = os.getloadavg()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for size in args.sizes.split(","):
        loaded = build_size(size, vocab, settings)
        model, optimizer = loaded.model, make_optimizer(loaded.model, settings)
        batches = [
            torch.randint(2, vocab, (settings.batch_size, settings.seq_len), generator=gen)
            for _ in range(args.steps + 1)
        ]
        train_step(model, optimizer, batches[-1], 0, settings)  # warm-up
        rates = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            for step, batch in enumerate(batches[: args.steps]):
                train_step(model, optimizer, batch, step, settings)
            rates.append(args.steps * settings.tokens_per_step / (time.perf_counter() - started))
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            save_folder(Path(tmp) / "step0", model, _NoTokenizer(), {})
            save_seconds = time.perf_counter() - started
        rate = statistics.median(rates)
        seconds = settings.steps * settings.tokens_per_step / rate + revisions * save_seconds
        rows.append(
            dict(
                size=size,
                n_params=loaded.provenance["n_params"],
                tokens_per_second=round(rate),
                rates=[round(r) for r in rates],
                save_seconds=round(save_seconds, 3),
                projected_seconds=round(seconds, 1),
            )
        )
        print(
            f"{size:>5} {loaded.provenance['n_params'] / 1e6:6.2f}M  {rate:8,.0f} tok/s  "
            f"(repeats {', '.join(f'{r:,.0f}' for r in rates)})  projected {seconds / 60:5.1f} min",
            flush=True,
        )
    total = sum(r["projected_seconds"] for r in rows)
    result = dict(
        threads=args.threads,
        tokens_per_size=settings.steps * settings.tokens_per_step,
        steps=settings.steps,
        revisions=revisions,
        sizes=rows,
        projected_total_seconds=round(total, 1),
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(
        f"whole ladder: {settings.steps * settings.tokens_per_step:,} tokens per size, projected "
        f"{total / 60:.1f} min with {args.threads} thread(s); load average {load_before[0]:.1f} -> "
        f"{os.getloadavg()[0]:.1f}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


class _NoTokenizer:
    def save_pretrained(self, folder: str) -> None:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
