"""Pre-train the ladder: tokenizer and corpus once, then each size in turn, resumable.

for each size (smallest first; a finished one is skipped):
    restore the resume state if there is one (weights, AdamW moments, step), else initialise
    for each step: save a revision if due, take one AdamW step on the step's batch, show tok/s and loss
    save the final revision and the size folder; drop the resume state

The batch of step s is a pure function of (seed, s), and dropout is off, so a resumed size
continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import math
import platform
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arprobe import __version__
from arprobe.errors import UserError
from arprobe.models.text import build_model, no_transformers_bars
from arprobe.pretrain.corpus import load_corpus
from arprobe.pretrain.ladder import (
    FORMAT,
    PROVENANCE_FILE,
    SIZES,
    Settings,
    checkpoint_steps,
    read_json,
    size_shape,
    write_json,
)
from arprobe.sweep.estimate import format_seconds
from arprobe.tasks.text_data import load_texts
from arprobe.tasks.tokenizer import default_cache_dir, train_bpe_tokenizer
from arprobe.trainer.config import DataConfig, ModelConfig

RESUME_DIR = "_resume"
RESUME_SECONDS = 120.0  # a resume state at least this often (and at every revision)


@dataclass
class Corpus:
    tokens: np.ndarray  # uint16/int32 [token]: documents joined by end-of-text
    info: dict  # corpus.json: what was read, what dedup dropped, sha256

    def sequences(self, seq_len: int) -> int:
        return len(self.tokens) // seq_len


# --- tokenizer and corpus -----------------------------------------------------------------


def load_tokenizer_and_finetune_texts(settings: Settings):
    """The BPE the fine-tuning run trains on its documents (the same cached one), and those documents."""
    texts, description = load_texts(DataConfig(source=settings.finetune_source))
    tokenizer = train_bpe_tokenizer(texts, settings.vocab_size, cache_dir=default_cache_dir())
    return tokenizer, texts, description


def prepare_corpus(
    ladder_dir: Path, settings: Settings, tokenizer, finetune_texts, finetune_description
) -> Corpus:
    """The ladder's tokenized corpus: read from ``<ladder>/corpus/`` or built there once."""
    folder = ladder_dir / "corpus"
    info = read_json(folder / "corpus.json")
    if info is not None and (folder / "tokens.npy").is_file():
        return Corpus(np.load(folder / "tokens.npy", allow_pickle=False), info)
    corpus = load_corpus(settings.corpus, finetune_texts, settings.corpus_chars)
    if not corpus.texts:
        raise UserError(
            f"The corpus '{settings.corpus}' holds no text once deduplicated; give another source."
        )
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for start in range(0, len(corpus.texts), 1024):
        for row in tokenizer(corpus.texts[start : start + 1024], add_special_tokens=False, verbose=False)[
            "input_ids"
        ]:
            ids.extend(row)
            ids.append(eos)
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
    tokens = np.asarray(ids, dtype=dtype)
    info = corpus.info()
    info.update(tokens=int(len(tokens)), deduplicated_against=finetune_description)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".tokens.npy.tmp"
    with open(tmp, "wb") as handle:
        np.save(handle, tokens, allow_pickle=False)
    tmp.replace(folder / "tokens.npy")
    write_json(folder / "corpus.json", info)
    return Corpus(tokens, info)


# --- data order and schedule --------------------------------------------------------------


class Batches:
    """Sequences of ``seq_len`` tokens; the last ``val`` are held out. Step s trains sequences
    s·B .. s·B+B-1 of the seeded order (a fresh permutation per pass over the training ones)."""

    def __init__(self, tokens: np.ndarray, settings: Settings):
        self.seq_len, self.batch_size, self.seed = settings.seq_len, settings.batch_size, settings.seed
        n = len(tokens) // self.seq_len
        self.val = settings.val_sequences
        if n < self.val + self.batch_size:
            raise UserError(
                f"The corpus has {len(tokens)} tokens, fewer than {self.val + self.batch_size} sequences of "
                f"{self.seq_len}; use a larger corpus or a shorter --seq-len."
            )
        self.sequences = tokens[: n * self.seq_len].reshape(n, self.seq_len)  # [sequence, pos]
        self.n_train = n - self.val
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n_train)}
        return self._orders[epoch]

    def train(self, step: int) -> torch.Tensor:
        """int64 [batch, seq_len]"""
        index = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        rows = [self._order(int(i // self.n_train))[i % self.n_train] for i in index]
        return torch.from_numpy(self.sequences[rows].astype(np.int64))

    def held_out(self) -> torch.Tensor:
        return torch.from_numpy(self.sequences[self.n_train :].astype(np.int64))

    def epochs(self, steps: int) -> float:
        return steps * self.batch_size / self.n_train


def lr_at(step: int, settings: Settings) -> float:
    """Linear warmup over the first ``warmup`` fraction of steps, then cosine to lr · min_lr_ratio."""
    total = settings.steps
    warm = max(1, round(settings.warmup * total))
    if step < warm:
        return settings.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    floor = settings.lr * settings.min_lr_ratio
    return floor + 0.5 * (settings.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


# --- model --------------------------------------------------------------------------------


def build_size(size: str, vocab_size: int, settings: Settings, device: str = "cpu"):
    """A randomly initialised ladder size (Pythia init, seeded): arprobe's own model builder."""
    cfg = ModelConfig(name="tiny", init="pythia", device=device, **size_shape(size))
    return build_model(cfg, vocab_size=vocab_size, seed=settings.seed, max_positions=settings.seq_len)


def make_optimizer(model, settings: Settings) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.95), eps=1e-8)


def train_step(model, optimizer, batch: torch.Tensor, step: int, settings: Settings) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, settings)
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    if settings.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@torch.no_grad()
def held_out_loss(model, batches: Batches) -> float:
    data = batches.held_out().to(next(model.parameters()).device)
    losses = [
        float(model(input_ids=data[i : i + 8], labels=data[i : i + 8]).loss) for i in range(0, len(data), 8)
    ]
    return float(np.mean(losses))


# --- resume state (safetensors: nothing read back needs unpickling) -----------------------


def save_resume(folder: Path, model, optimizer, step: int) -> None:
    # lazy: safetensors takes seconds to import; only this path needs it
    from safetensors.torch import save_file

    tensors = {f"model/{n}": p.detach().cpu().contiguous() for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        state = optimizer.state.get(p)
        if state:
            tensors[f"optim/{name}/exp_avg"] = state["exp_avg"].cpu().contiguous()
            tensors[f"optim/{name}/exp_avg_sq"] = state["exp_avg_sq"].cpu().contiguous()
            tensors[f"optim/{name}/step"] = state["step"].detach().cpu().reshape(1).float()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".state.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"step": str(step), "format": FORMAT})
    tmp.replace(folder / "state.safetensors")


@torch.no_grad()
def load_resume(folder: Path, model, optimizer) -> int:
    """Restore weights and AdamW state; the step to continue from (0 when there is no state)."""
    # lazy: safetensors takes seconds to import; only this path needs it
    from safetensors import safe_open

    path = folder / "state.safetensors"
    if not path.is_file():
        return 0
    with safe_open(str(path), framework="pt") as handle:
        step = int(handle.metadata()["step"])
        keys = set(handle.keys())
        for name, p in model.named_parameters():
            p.copy_(handle.get_tensor(f"model/{name}").to(p.device))
            if f"optim/{name}/step" in keys:
                optimizer.state[p] = {
                    "step": handle.get_tensor(f"optim/{name}/step").reshape(()),
                    "exp_avg": handle.get_tensor(f"optim/{name}/exp_avg").to(p.device),
                    "exp_avg_sq": handle.get_tensor(f"optim/{name}/exp_avg_sq").to(p.device),
                }
    return step


# --- saving revisions ---------------------------------------------------------------------


def save_folder(folder: Path, model, tokenizer, provenance: dict) -> None:
    """A save_pretrained folder with the tokenizer and the provenance, written whole then renamed."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with no_transformers_bars():
        model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    write_json(tmp / PROVENANCE_FILE, provenance)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)


def save_final(size_dir: Path, model, tokenizer, provenance: dict) -> None:
    """The size folder itself holds the final weights (beside its step<N>/ revisions); the
    provenance file is written last, so its presence marks the size as complete."""
    with no_transformers_bars():
        model.save_pretrained(str(size_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(size_dir))
    write_json(size_dir / PROVENANCE_FILE, provenance)


def provenance(base: dict, step: int, settings: Settings, val_loss: float, train_loss: float | None) -> dict:
    return dict(
        base,
        revision=f"step{step}",
        step=step,
        tokens_seen=step * settings.tokens_per_step,
        val_loss=round(val_loss, 6),
        train_loss=None if train_loss is None else round(train_loss, 6),
    )


# --- one size -----------------------------------------------------------------------------


class _Stop:
    """SIGINT/SIGTERM set a flag; the loop saves a resume state after the step and stops."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def train_size(
    size: str,
    ladder_dir: Path,
    settings: Settings,
    tokenizer,
    corpus: Corpus,
    base_provenance: dict,
    *,
    device: str = "cpu",
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train one size to ``settings.steps``, saving its revisions; returns its final provenance.

    ``stop_after``: stop (with a resume state) once this many steps are done — for tests of resume.
    """
    # lazy: tqdm takes seconds to import; only this path needs it
    from tqdm.auto import tqdm

    size_dir = ladder_dir / size
    done = read_json(size_dir / PROVENANCE_FILE)
    if done is not None and done.get("step") == settings.steps:
        return done
    loaded = build_size(size, len(tokenizer), settings, device)
    model = loaded.model
    optimizer = make_optimizer(model, settings)
    resume_dir = size_dir / RESUME_DIR
    start = load_resume(resume_dir, model, optimizer)
    batches = Batches(corpus.tokens, settings)
    due = set(checkpoint_steps(settings.steps, settings.checkpoint_every))
    base = dict(
        base_provenance,
        size=size,
        shape=size_shape(size),
        n_params=loaded.provenance["n_params"],
        init_scheme=loaded.provenance["init_scheme"],
        steps_total=settings.steps,
        tokens_total=settings.steps * settings.tokens_per_step,
    )
    dev = next(model.parameters()).device
    bar = tqdm(total=settings.steps, initial=start, desc=size, unit="step", disable=not progress, leave=True)
    started, last_resume, losses = time.perf_counter(), time.perf_counter(), []
    try:
        with _Stop() as stop:
            for step in range(start, settings.steps + 1):
                if step in due:
                    train_loss = float(np.mean(losses[-16:])) if losses else None
                    meta = provenance(base, step, settings, held_out_loss(model, batches), train_loss)
                    meta["epochs"] = round(batches.epochs(step), 4)
                    save_folder(size_dir / f"step{step}", model, tokenizer, meta)
                    if step == settings.steps:
                        save_final(size_dir, model, tokenizer, meta)
                        shutil.rmtree(resume_dir, ignore_errors=True)
                        return meta
                    save_resume(resume_dir, model, optimizer, step)
                    last_resume = time.perf_counter()
                if step == settings.steps:
                    break
                losses.append(train_step(model, optimizer, batches.train(step).to(dev), step, settings))
                bar.update(1)
                rate = (step + 1 - start) * settings.tokens_per_step / (time.perf_counter() - started)
                bar.set_postfix_str(f"{rate:,.0f} tok/s, loss {losses[-1]:.3f}", refresh=False)
                finished = step + 1
                if stop.signal is not None or (stop_after is not None and finished >= stop_after):
                    save_resume(resume_dir, model, optimizer, finished)
                    if stop.signal is not None:
                        bar.close()
                        print(f"stopped {size} after step {finished}; run the same command again to resume.")
                        raise KeyboardInterrupt
                    return dict(base, step=finished, stopped=True)
                if time.perf_counter() - last_resume > RESUME_SECONDS:
                    save_resume(resume_dir, model, optimizer, finished)
                    last_resume = time.perf_counter()
    finally:
        bar.close()
    raise AssertionError("unreachable: the last step returns")


# --- estimates ----------------------------------------------------------------------------


def measure_tokens_per_second(
    size: str, settings: Settings, vocab_size: int, steps: int = 3, device: str = "cpu"
) -> float:
    """Training throughput of one size on random tokens: ``steps`` timed AdamW steps after one warm-up."""
    loaded = build_size(size, vocab_size, settings, device)
    model, optimizer = loaded.model, make_optimizer(loaded.model, settings)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(2, vocab_size, (settings.batch_size, settings.seq_len), generator=gen)
    batch = batch.to(next(model.parameters()).device)
    train_step(model, optimizer, batch, 0, settings)
    started = time.perf_counter()
    for step in range(steps):
        train_step(model, optimizer, batch, step, settings)
    if batch.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * settings.tokens_per_step / (time.perf_counter() - started)


def disk_bytes(n_params: int, settings: Settings) -> int:
    """One size on disk: its revisions and final weights (float32), plus the largest resume state."""
    revisions = len(checkpoint_steps(settings.steps, settings.checkpoint_every)) + 1
    return 4 * n_params * revisions + 4 * 3 * n_params + revisions * 400_000  # tokenizer files per folder


def free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def environment() -> dict:
    # lazy: transformers takes seconds to import; only this path needs it
    import transformers

    return dict(
        arprobe_version=__version__,
        torch=torch.__version__,
        transformers=transformers.__version__,
        python=platform.python_version(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


# --- the ladder ---------------------------------------------------------------------------


def open_ladder(ladder_dir: Path, name: str, settings: Settings, overwrite: bool) -> None:
    """Create ``ladder.json``, or check that an existing ladder was started with the same settings."""
    settings.check()
    stored = read_json(ladder_dir / "ladder.json")
    if stored is not None and not overwrite:
        old = dict(stored.get("settings", {}))
        new = settings.to_json()
        # More sizes may be added to a ladder; everything else decides the weights.
        differ = sorted(k for k in new if k != "sizes" and old.get(k) != new[k])
        if differ:
            raise UserError(
                f"Ladder '{ladder_dir}' was trained with other settings ({', '.join(differ)}); "
                "resume it with the same options, or give another --name or --overwrite."
            )
        settings_json = dict(
            new, sizes=sorted(set(old.get("sizes", [])) | set(settings.sizes), key=_size_order)
        )
    else:
        if ladder_dir.exists() and overwrite:
            shutil.rmtree(ladder_dir)
        settings_json = settings.to_json()
    ladder_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        ladder_dir / "ladder.json", dict(format=FORMAT, name=name, settings=settings_json, **environment())
    )


def _size_order(size: str) -> int:
    return list(SIZES).index(size) if size in SIZES else len(SIZES)


def pretrain_ladder(
    ladder_dir: Path,
    name: str,
    settings: Settings,
    *,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, dict]:
    """Train every size of ``settings.sizes`` into ``ladder_dir``; returns each size's final provenance."""
    open_ladder(ladder_dir, name, settings, overwrite)
    tokenizer, finetune_texts, finetune_description = load_tokenizer_and_finetune_texts(settings)
    if progress:
        print(f"corpus: {ladder_dir / 'corpus'}", flush=True)
    corpus = prepare_corpus(ladder_dir, settings, tokenizer, finetune_texts, finetune_description)
    base = dict(
        format=FORMAT,
        ladder=name,
        ladder_dir=str(ladder_dir),
        settings=settings.to_json(),
        corpus={k: v for k, v in corpus.info.items()},
        tokenizer=dict(
            kind=f"bpe-{settings.vocab_size}",
            trained_on=finetune_description,
            vocab_size=len(tokenizer),
            note="the BPE arprobe run trains on the fine-tuning source (cached), so ids line up",
        ),
        **environment(),
    )
    results = {}
    for size in settings.sizes:
        results[size] = train_size(
            size,
            ladder_dir,
            settings,
            tokenizer,
            corpus,
            base,
            device=device,
            progress=progress,
            stop_after=stop_after,
        )
    return results


def dry_run(ladder_dir: Path, settings: Settings, *, device: str = "cpu", threads: int = 1) -> str:
    """The plan: steps, revisions, and per size its parameters, measured tokens/s, time and disk."""
    settings.check()
    vocab = settings.vocab_size
    revisions = checkpoint_steps(settings.steps, settings.checkpoint_every)
    corpus_tokens = int(settings.corpus_chars / 3.1) if settings.corpus_chars else 0
    lines = [
        f"ladder {ladder_dir}",
        f"{settings.steps} steps of {settings.batch_size} x {settings.seq_len} tokens = "
        f"{settings.steps * settings.tokens_per_step:,} tokens per size, "
        f"{threads} thread(s), device {device}",
        f"revisions: {', '.join(f'step{s}' for s in revisions)}",
        f"corpus: {settings.corpus} (about {corpus_tokens:,} tokens after dedup; built once, "
        f"{2 * corpus_tokens / 1e6:.0f} MB)"
        if corpus_tokens
        else f"corpus: {settings.corpus}",
        f"{'size':>6} {'params':>9} {'tok/s':>8} {'time':>9} {'disk':>9}",
    ]
    total_s, total_b = 0.0, 2 * corpus_tokens
    for size in settings.sizes:
        n_params = build_size(size, vocab, settings, device).provenance["n_params"]
        rate = measure_tokens_per_second(size, settings, vocab, device=device)
        seconds = settings.steps * settings.tokens_per_step / rate
        size_bytes = disk_bytes(n_params, settings)
        total_s += seconds
        total_b += size_bytes
        lines.append(
            f"{size:>6} {n_params / 1e6:>8.2f}M {rate:>8,.0f} {format_seconds(seconds):>9} "
            f"{size_bytes / 1e6:>7,.0f} MB"
        )
    free = free_bytes(ladder_dir)
    lines.append(
        f"total: about {format_seconds(total_s)} of training (throughput measured now, on random tokens, "
        f"{threads} thread(s)), {total_b / 1e9:.2f} GB on disk ({free / 1e9:.0f} GB free)"
    )
    return "\n".join(lines)
