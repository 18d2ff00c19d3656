"""The ladder: its sizes, settings, checkpoint steps and folder layout.

A ladder folder (``<arprobe cache>/ladders/<name>/`` by default) looks like the hub's Pythia suite:

```
<ladder>/ladder.json               the settings every size was trained with
<ladder>/corpus/tokens.npy         the tokenized corpus (uint16 [token]); corpus.json says what it is
<ladder>/<size>/                   final weights: a save_pretrained folder + tokenizer + arprobe_pretrain.json
<ladder>/<size>/step<N>/           the weights after N optimizer steps (step0 = the initialisation)
```

``--model.name <ladder>/<size> --init pretrained --revision step<N>`` loads ``<size>/step<N>/``
(``arprobe.models.hub.local_revision``), as ``--revision step24000`` picks a Pythia branch on the hub.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from arprobe.errors import UserError
from arprobe.models import hub

# Pythia's shape ratios at CPU scale: MLP 4·d, rotary on 25% of each head, parallel residual,
# untied unembedding, head width 32 (narrow, as Pythia-14M/31M) or 64 (as Pythia-70M and up).
# Depth 4 for all: the tiny preset's, so `--freeze_blocks B` means the same B of 4 blocks as on the
# random-init default. Names are total parameters with the 4096-token BPE.
SIZES: dict[str, dict] = {
    "700k": dict(d_model=64, n_layers=4, n_heads=2),  # 0.72M
    "2m": dict(d_model=128, n_layers=4, n_heads=4),  # 1.84M
    "5m": dict(d_model=256, n_layers=4, n_heads=4),  # 5.26M: the tiny preset's shape
    "17m": dict(d_model=512, n_layers=4, n_heads=8),  # 16.8M
}
FORMAT = "arprobe-pretrain"
PROVENANCE_FILE = "arprobe_pretrain.json"


def default_ladders_dir() -> Path:
    """``<arprobe cache>/ladders`` (``$ARPROBE_CACHE/ladders`` or ``~/.cache/arprobe/ladders``)."""
    return hub.ladders_dir()


@dataclass
class Settings:
    """Everything that decides the weights of a ladder (stored as ``ladder.json``)."""

    sizes: list[str] = field(default_factory=lambda: list(SIZES))  # sizes to train, smallest first
    tokens: int = 524_288  # token budget per size (steps = tokens // (batch_size · seq_len))
    seq_len: int = 128  # tokens per training sequence
    batch_size: int = 8  # sequences per optimizer step
    lr: float = 1e-3  # peak learning rate (Pythia-14M/70M's)
    min_lr_ratio: float = 0.1  # cosine decay down to lr · min_lr_ratio (Pythia's)
    warmup: float = 0.01  # fraction of steps with linear warmup (Pythia's 1%)
    weight_decay: float = 0.01  # AdamW, not on biases or LayerNorm weights (Pythia's)
    grad_clip: float = 1.0  # global gradient-norm clip (Pythia's)
    seed: int = 0  # initialisation and data order
    checkpoint_every: int = 128  # evenly spaced revisions after the log-spaced ones (0, 1, 2, 4, ...)
    corpus: str = "python-docs"  # "python-docs" or a data source path (.txt, .jsonl, folder)
    corpus_chars: int = 6_000_000  # stop reading the corpus after this many kept characters (0: all)
    finetune_source: str = (
        "pydoc"  # the fine-tuning documents: excluded from the corpus, tokenizer trained on them
    )
    vocab_size: int = 4096  # the fine-tuning run's BPE (data.vocab_size)
    val_sequences: int = 16  # held-out sequences whose loss each revision records

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def steps(self) -> int:
        return self.tokens // self.tokens_per_step

    def check(self) -> None:
        unknown = [s for s in self.sizes if s not in SIZES]
        if unknown:
            raise UserError(f"Unknown ladder size '{unknown[0]}'. Available: {', '.join(SIZES)}.")
        if not self.sizes:
            raise UserError(f"--sizes names no size; choose from {', '.join(SIZES)}.")
        for name in ("seq_len", "batch_size", "checkpoint_every", "vocab_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.steps < 1:
            raise UserError(
                f"--tokens ({self.tokens}) is less than one step of {self.tokens_per_step} tokens "
                "(batch size x sequence length); raise it."
            )
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}.")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def checkpoint_steps(total: int, every: int) -> list[int]:
    """Revisions as Pythia's: step 0, log-spaced 1, 2, 4, ... up to ``every``, then every ``every``
    steps, and the last step."""
    steps = {0, total}
    power = 1
    while power <= min(every, total):
        steps.add(power)
        power *= 2
    steps.update(range(every, total + 1, every))
    return sorted(steps)


def size_shape(size: str) -> dict:
    return dict(SIZES[size])


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
