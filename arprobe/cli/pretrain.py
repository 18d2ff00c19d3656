"""`arprobe pretrain`: pre-train a small GPT-NeoX ladder offline, with Pythia-style revisions."""

from __future__ import annotations

import argparse
from pathlib import Path

from arprobe.pretrain.ladder import SIZES, Settings


def command_parser(subparsers) -> argparse.ArgumentParser:
    # long because it is a table of arguments, one add_argument each
    d = Settings()
    p = subparsers.add_parser(
        "pretrain",
        help="pre-train a small GPT-NeoX ladder offline (Pythia-style revisions) to fine-tune from",
        description="Pre-train GPT-NeoX models of several sizes (Pythia's shapes and init) on Python "
        "documentation text disjoint from the fine-tuning documents, with the fine-tuning run's BPE "
        "tokenizer, saving each size like the hub saves Pythia: a save_pretrained folder with the final "
        "weights and step<N>/ revisions. Re-running the same command resumes. Fine-tune from one with "
        "`arprobe run --init pretrained --model.name <ladder>/<size> [--revision step<N>]`.",
    )
    p.add_argument(
        "--name", default="default", help="ladder name: its folder is <out>/<name> (default: default)"
    )
    p.add_argument("--out", help="folder holding ladders (default: <arprobe cache>/ladders)")
    p.add_argument(
        "--sizes", default=",".join(d.sizes), help=f"comma-separated sizes (default: all: {', '.join(SIZES)})"
    )
    p.add_argument(
        "--tokens", type=int, default=d.tokens, help=f"token budget per size (default: {d.tokens})"
    )
    p.add_argument(
        "--seq-len", type=int, default=d.seq_len, help=f"tokens per sequence (default: {d.seq_len})"
    )
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"sequences per step (default: {d.batch_size})"
    )
    p.add_argument(
        "--lr", type=float, default=d.lr, help=f"peak learning rate, cosine to 10%% (default: {d.lr})"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="initialisation and data order (default: 0)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help=f"revisions every N steps after the log-spaced step0, 1, 2, 4, ... "
        f"(default: {d.checkpoint_every})",
    )
    p.add_argument(
        "--corpus",
        default=d.corpus,
        help="python-docs (stdlib and installed packages' docstrings and READMEs) or a .txt/.jsonl/folder "
        "data source (default: python-docs)",
    )
    p.add_argument(
        "--corpus-chars",
        type=int,
        default=d.corpus_chars,
        help=f"stop reading the corpus after this many kept characters, 0: all (default: {d.corpus_chars})",
    )
    p.add_argument(
        "--finetune-source",
        default=d.finetune_source,
        help="the fine-tuning data source: removed from the corpus, and the tokenizer is trained on it as "
        "`arprobe run` does (default: pydoc)",
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        default=d.vocab_size,
        help=f"BPE vocabulary, as data.vocab_size (default: {d.vocab_size})",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: every core this process may use)"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda or cuda:N (default: auto: cuda if available, as run)",
    )
    p.add_argument("--overwrite", action="store_true", help="delete a ladder of the same name and start over")
    p.add_argument(
        "--dry-run", action="store_true", help="measure each size's speed; print time and disk estimates"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=pretrain_command)
    return p


def pretrain_command(args, extra: list[str]) -> int:
    # lazy: keeps `arprobe --help` fast
    from arprobe.models.text import resolve_device
    from arprobe.pretrain.ladder import Settings, default_ladders_dir
    from arprobe.pretrain.train import dry_run, pretrain_ladder
    from arprobe.trainer.loop import set_threads

    settings = Settings(
        sizes=[s.strip() for s in args.sizes.split(",") if s.strip()],
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        corpus=args.corpus,
        corpus_chars=args.corpus_chars,
        finetune_source=args.finetune_source,
        vocab_size=args.vocab_size,
    )
    settings.check()
    device = str(resolve_device(args.device))
    ladder_dir = (Path(args.out).expanduser() if args.out else default_ladders_dir()) / args.name
    threads = set_threads(args.threads)
    if args.dry_run:
        print(dry_run(ladder_dir, settings, device=device, threads=threads))
        return 0
    results = pretrain_ladder(
        ladder_dir,
        args.name,
        settings,
        device=device,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    for size, meta in results.items():
        print(
            f"{size}: {meta['n_params'] / 1e6:.2f}M parameters, {meta['tokens_seen']:,} tokens, "
            f"held-out loss {meta['val_loss']:.3f} -> {ladder_dir / size}"
        )
    first = ladder_dir / settings.sizes[0]
    print(f"fine-tune: arprobe run --init pretrained --model.name {first} [--revision step{settings.steps}]")
    return 0
