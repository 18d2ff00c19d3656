"""The naive baseline: the cyclic experiment written the way the paper's released code runs it.

Same documents, model, initialisation, schedule and learning rate as arprobe. The habits of the
released code that issue 5 names:
- a DataLoader built afresh for every pass over a document (training and evaluation);
- evaluation one document per forward pass, each loss read back with ``.item()``;
- the full ``state_dict`` saved to disk with ``torch.save`` after every episode.
And the plain choices such a script makes (ours, stated so they can be judged): the loss from
Hugging Face's ``labels=`` path, evaluation under ``torch.no_grad``, and ``torch.optim.Adam`` with
its default implementation (a per-parameter loop on CPU), made afresh for every document as
``optim.reset_per_doc`` does in arprobe. Nothing else is recorded. The eval matrix comes back so
the benchmark can check that both loops compute the same losses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

IGNORE = -100


class OneDocument(Dataset):
    def __init__(self, tokens: torch.Tensor, length: int):
        self.input_ids = tokens
        self.labels = tokens.clone()
        self.labels[length:] = IGNORE

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids, "labels": self.labels}


def naive_run(cfg, save_dir: Path) -> dict:
    """Train and evaluate as the released code does; returns {"eval": [K+1, T], "bytes_per_episode": int}."""
    from arprobe.models.text import build_model, resolve_device
    from arprobe.tasks.text_data import load_texts, select_documents
    from arprobe.tasks.tokenizer import default_cache_dir, ensure_pad_token, train_bpe_tokenizer
    from arprobe.trainer.schedules import make_schedule

    d = cfg.data
    device = resolve_device(cfg.model.device)
    texts, _ = load_texts(d)
    tokenizer = train_bpe_tokenizer(texts, d.vocab_size, cache_dir=default_cache_dir())
    pad_id = ensure_pad_token(tokenizer)
    docs = select_documents(
        texts,
        tokenizer,
        n_docs=d.n_docs,
        context_length=d.context_length,
        max_shift=0,
        min_tokens=d.min_tokens,
        seed=cfg.seed,
        pad_id=pad_id,
    )
    model = build_model(
        cfg.model, vocab_size=len(tokenizer), seed=cfg.seed, max_positions=d.context_length
    ).model
    tokens = torch.as_tensor(docs.tokens, dtype=torch.long)
    datasets = [OneDocument(tokens[t], int(docs.lengths[t])) for t in range(d.n_docs)]
    order, _ = make_schedule("cyclic", d.n_docs, cfg.schedule.epochs, cfg.seed)

    def evaluate() -> list[float]:
        model.eval()
        row = []
        with torch.no_grad():
            for dataset in datasets:
                for batch in DataLoader(dataset, batch_size=1):
                    out = model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device))
                    row.append(out.loss.item())
        model.train()
        return row

    save_dir.mkdir(parents=True, exist_ok=True)
    eval_rows = [evaluate()]
    written = 0
    for k, doc in enumerate(order, start=1):
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
        for _ in range(cfg.schedule.steps_per_doc):
            for batch in DataLoader(datasets[int(doc)], batch_size=1, shuffle=True):
                out = model(input_ids=batch["input_ids"].to(device), labels=batch["labels"].to(device))
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
        eval_rows.append(evaluate())
        path = save_dir / f"model_episode{k}.pt"
        torch.save(model.state_dict(), path)
        written += path.stat().st_size
    return {
        "eval": np.asarray(eval_rows, dtype=np.float32),
        "bytes_per_episode": written // max(len(order), 1),
    }
