"""Documents for the cycle: read candidate texts from a source, then tokenize and sample T of them.

Sources (``data.source``):

- ``"pydoc"`` (default): the Python documentation topics that ship with CPython
  (``pydoc_data.topics``), one document per topic, in sorted topic order. Needs nothing
  from outside.
- a ``.txt`` file: documents are paragraphs, separated by one or more blank lines.
- a ``.jsonl`` file: one JSON object per line; the document is ``obj[data.field]``.
- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (then
  ``data.split`` picks the split); the document is column ``data.field``.
- any other folder: one document per ``*.txt`` file in it (sorted by name, not recursive).
- anything else: a Hugging Face hub dataset id, loaded with ``datasets.load_dataset``
  (needs network access or the local hub cache).

Empty and whitespace-only documents are dropped everywhere, except with ``keep_blank`` for the
sources whose rows the released code indexes (datasets and ``.jsonl``): ``compat = "authors"``
samples row numbers, so every row must keep its place.
"""

from __future__ import annotations

import json
import platform
import random
import re
from dataclasses import dataclass
from pathlib import Path
from pydoc_data.topics import topics
from typing import TYPE_CHECKING

import numpy as np

from arprobe.errors import UserError
from arprobe.models.hub import looks_like_path

if TYPE_CHECKING:  # annotations only: the config lives with the trainer, which imports this module
    from arprobe.trainer.config import DataConfig

# A document needs at least two tokens to have one next-token target.
MIN_USABLE_TOKENS = 2
_TOKENIZE_BATCH = 1024  # documents per tokenizer call: bounds memory on large datasets
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


# --- candidate texts ----------------------------------------------------------------------


def load_texts(cfg: DataConfig, *, keep_blank: bool = False) -> tuple[list[str], str]:
    """All candidate document texts from ``cfg.source`` (in source order), and a short provenance string.

    ``keep_blank``: datasets and ``.jsonl`` files keep their blank (and missing) texts as "", so
    that index i is row i, as ``load_dataset`` gives it to the released code.
    """
    source = cfg.source
    if source == "pydoc":
        return _load_pydoc()
    path = Path(source).expanduser()
    if path.exists():
        return _load_local(path, cfg, keep_blank)
    if looks_like_path(source):
        raise UserError(f"Data source '{source}' does not exist.")
    return _load_hub(cfg, keep_blank)


def _keep_nonblank(texts: list[str]) -> list[str]:
    return [t for t in texts if t.strip()]


def _keep_rows(texts: list[str | None], keep_blank: bool) -> list[str]:
    """The non-blank texts, or with ``keep_blank`` every row (a missing text as "")."""
    if keep_blank:
        return [t or "" for t in texts]
    return _keep_nonblank([t for t in texts if t is not None])


def _load_pydoc() -> tuple[list[str], str]:
    texts = _keep_nonblank([topics[key].strip() for key in sorted(topics)])
    return texts, f"pydoc_data.topics (Python {platform.python_version()}, {len(texts)} topics)"


def _load_local(path: Path, cfg: DataConfig, keep_blank: bool) -> tuple[list[str], str]:
    if path.is_dir():
        if _is_saved_dataset(path):
            return _load_saved_dataset(path, cfg, keep_blank)
        return _load_txt_folder(path)
    if path.suffix == ".txt":
        return _load_txt_paragraphs(path)
    if path.suffix == ".jsonl":
        return _load_jsonl(path, cfg.field, keep_blank)
    raise UserError(
        f"Data file '{path}' has an unsupported type; use a .txt file (documents separated by blank lines), "
        "a .jsonl file (one JSON object per line) or a folder."
    )


def _load_txt_paragraphs(path: Path) -> tuple[list[str], str]:
    text = _read_text(path).replace("\r\n", "\n")
    texts = _keep_nonblank([p.strip() for p in _BLANK_LINES.split(text)])
    return texts, f"text file {path} ({len(texts)} paragraphs)"


def _load_txt_folder(path: Path) -> tuple[list[str], str]:
    files = sorted(p for p in path.glob("*.txt") if p.is_file())
    if not files:
        raise UserError(
            f"Folder '{path}' holds no .txt files and is not a datasets save_to_disk folder; "
            "put one document per .txt file in it."
        )
    texts = _keep_nonblank([_read_text(p).strip() for p in files])
    return texts, f"folder {path} ({len(files)} .txt files)"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"File '{path}' is not UTF-8 text; convert it to UTF-8.") from None


def _load_jsonl(path: Path, field: str, keep_blank: bool) -> tuple[list[str], str]:
    texts = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(
                    f"Line {line_no} of '{path}' is not valid JSON; write one JSON object per line."
                ) from None
            if not isinstance(obj, dict):
                raise UserError(
                    f"Line {line_no} of '{path}' is not a JSON object; write one object per line."
                )
            if field not in obj:
                keys = ", ".join(sorted(obj)) or "none"
                raise UserError(
                    f"Line {line_no} of '{path}' has no field '{field}' (keys: {keys}); set "
                    "data.field to the text field."
                )
            texts.append(_as_text(obj[field], f"field '{field}' on line {line_no} of '{path}'"))
    texts = _keep_rows(texts, keep_blank)
    return texts, f"jsonl file {path}, field '{field}' ({len(texts)} documents)"


def _as_text(value, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UserError(f"The {where} is {type(value).__name__}, not text; set data.field to a text field.")


def _is_saved_dataset(path: Path) -> bool:
    # The marker files Dataset.save_to_disk and DatasetDict.save_to_disk write.
    return (
        (path / "dataset_dict.json").is_file()
        or (path / "state.json").is_file()
        or (path / "dataset_info.json").is_file()
    )


def _load_saved_dataset(path: Path, cfg: DataConfig, keep_blank: bool) -> tuple[list[str], str]:
    # lazy: datasets takes seconds to import; only this path needs it
    import datasets

    loaded = datasets.load_from_disk(str(path))
    where = f"dataset '{path}'"
    if isinstance(loaded, datasets.DatasetDict):
        if cfg.split not in loaded:
            raise UserError(
                f"Split '{cfg.split}' is not in {where} (splits: {', '.join(loaded)}); set data.split "
                "to one of them."
            )
        loaded = loaded[cfg.split]
        where = f"split '{cfg.split}' of {where}"
    texts = _column_texts(loaded, cfg.field, where, keep_blank)
    return (
        texts,
        f"save_to_disk folder {path}, split '{cfg.split}', field '{cfg.field}' ({len(texts)} documents)",
    )


def _load_hub(cfg: DataConfig, keep_blank: bool) -> tuple[list[str], str]:
    # lazy: datasets takes seconds to import; only this path needs it
    import datasets

    source = cfg.source
    try:
        loaded = datasets.load_dataset(source, cfg.hf_config or None, split=cfg.split)
    except OSError:  # offline (ConnectionError), unknown id (DatasetNotFoundError), missing cache files
        raise UserError(
            f"Dataset '{source}' is neither a local file or folder nor in the local Hugging Face cache; "
            "a hub dataset id needs network access (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) "
            "or a local copy written with Dataset.save_to_disk."
        ) from None
    except ValueError as exc:  # unknown config or split: the message lists the valid ones
        detail = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"Could not load dataset '{source}' (config '{cfg.hf_config}', split '{cfg.split}'): {detail}; "
            "check data.hf_config and data.split."
        ) from None
    where = f"dataset '{source}'"
    texts = _column_texts(loaded, cfg.field, where, keep_blank)
    config = f", config '{cfg.hf_config}'" if cfg.hf_config else ""
    return (
        texts,
        f"hub dataset {source}{config}, split '{cfg.split}', field '{cfg.field}' ({len(texts)} documents)",
    )


def _column_texts(dataset, field: str, where: str, keep_blank: bool) -> list[str]:
    if field not in dataset.column_names:
        raise UserError(
            f"Field '{field}' is not a column of {where} (columns: {', '.join(dataset.column_names)}); "
            "set data.field to the text column."
        )
    # Through Arrow: much faster than iterating rows in Python on large datasets.
    values = dataset.data.column(field).to_pylist()
    texts = [_as_text(v, f"column '{field}' of {where}") for v in values]
    return _keep_rows(texts, keep_blank)


# --- tokenized, sampled documents ---------------------------------------------------------


@dataclass
class Documents:
    """The T documents of the cycle, in cyclic order x_1..x_T. Width W = C + 2 max_shift."""

    tokens: np.ndarray  # int32 [doc, W]: token ids, padded with pad_id after `lengths`
    lengths: np.ndarray  # int32 [doc]: real tokens per row (<= W)
    window_start: np.ndarray  # int32 [doc]: first token of the clean C-token window (the document proper)
    texts: list[str]  # [doc]: the text that was kept (decoded from the kept tokens), for people
    n_candidates: int  # candidates after dropping too-short ones
    n_dropped: int  # candidates dropped for having fewer than min_tokens tokens


def select_documents(
    texts: list[str],
    tokenizer,
    *,
    n_docs: int,
    context_length: int,
    max_shift: int,
    min_tokens: int,
    seed: int,
    pad_id: int,
    compat: str = "arprobe",
) -> Documents:
    """Tokenize every candidate, drop short ones, sample ``n_docs`` without replacement, keep the
    first C + 2S tokens (S = ``max_shift``).

    ``tokenizer`` is a Hugging Face tokenizer; no special tokens are added. A document needs
    at least ``max(min_tokens, 2)`` tokens. The sampled order (``np.random.default_rng(seed)``)
    is the cyclic order. With a window shift the document proper (its clean window) starts at
    token min(S, length − C), so a training window can move by up to S tokens either way.

    ``compat="authors"``: the released code's choice instead (``sample_as_released``): no
    ``min_tokens`` filter, special tokens on, truncated to C + 2S by the tokenizer.
    """
    if compat == "authors":
        return _select_as_released(texts, tokenizer, n_docs, context_length, max_shift, seed, pad_id)
    width = context_length + 2 * max_shift
    needed = max(min_tokens, MIN_USABLE_TOKENS)
    # Only the first `width` tokens are kept, and `needed` decide eligibility.
    ids, n_tokens = _tokenize_prefixes(texts, tokenizer, keep=max(width, needed))
    eligible = np.flatnonzero(n_tokens >= needed)  # [candidate] indices into `texts`
    if len(eligible) < n_docs:
        raise UserError(
            f"Only {len(eligible)} of the {len(texts)} documents in the data source have at least "
            f"{needed} tokens; "
            f"lower data.n_docs (T, now {n_docs}) or data.min_tokens, or use a larger data source."
        )
    rng = np.random.default_rng(seed)
    chosen = eligible[rng.choice(len(eligible), size=n_docs, replace=False)]  # sampled order = cyclic order
    return _pack(
        [ids[index][:width] for index in chosen],
        tokenizer,
        context_length,
        max_shift,
        pad_id,
        n_candidates=int(len(eligible)),
        n_dropped=int(len(texts) - len(eligible)),
    )


def sample_as_released(n_candidates: int, n_docs: int, seed: int) -> list[int]:
    """Indices [doc] of the documents the released code trains on, in its (cyclic) order.

    It calls ``random.sample(range(N), T)`` right after ``set_seed(seed)`` seeded Python's
    ``random`` (and numpy and torch, which the draw does not use). A private ``random.Random(seed)``
    draws the same numbers without touching the global generator.
    """
    return random.Random(seed).sample(range(n_candidates), n_docs)


def _select_as_released(texts, tokenizer, n_docs, context_length, max_shift, seed, pad_id) -> Documents:
    if n_docs > len(texts):
        raise UserError(
            f"The data source holds only {len(texts)} documents; lower data.n_docs (T, now {n_docs}) "
            "or use a larger data source."
        )
    width = context_length + 2 * max_shift
    chosen = sample_as_released(len(texts), n_docs, seed)
    # As the released code: special tokens on, truncated by the tokenizer (which keeps any it adds).
    encoded = tokenizer(
        [texts[i] for i in chosen], add_special_tokens=True, truncation=True, max_length=width, verbose=False
    )["input_ids"]
    for index, ids in zip(chosen, encoded):
        if len(ids) < MIN_USABLE_TOKENS:
            raise UserError(
                f"Document {index} of the data source, drawn by the released code's sampling "
                f"(compat = authors), has {len(ids)} token(s), too few to train on; use another seed."
            )
    return _pack(encoded, tokenizer, context_length, max_shift, pad_id, n_candidates=len(texts), n_dropped=0)


def _pack(
    rows: list[list[int]], tokenizer, context_length, max_shift, pad_id, *, n_candidates: int, n_dropped: int
) -> Documents:
    """Documents from the kept token ids of each chosen document ([doc][<= C + 2S])."""
    width = context_length + 2 * max_shift
    tokens = np.full((len(rows), width), pad_id, dtype=np.int32)
    lengths = np.zeros(len(rows), dtype=np.int32)
    kept_texts = []
    for row, kept in enumerate(rows):
        tokens[row, : len(kept)] = kept
        lengths[row] = len(kept)
        kept_texts.append(tokenizer.decode(kept))
    window_start = np.clip(lengths - context_length, 0, max_shift).astype(np.int32)
    return Documents(
        tokens=tokens,
        lengths=lengths,
        window_start=window_start,
        texts=kept_texts,
        n_candidates=n_candidates,
        n_dropped=n_dropped,
    )


def _tokenize_prefixes(texts: list[str], tokenizer, keep: int) -> tuple[list[list[int]], np.ndarray]:
    """First ``keep`` token ids of every text ([candidate][<= keep]) and the full token counts
    ([candidate])."""
    prefixes: list[list[int]] = []
    counts = np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), _TOKENIZE_BATCH):
        batch = texts[start : start + _TOKENIZE_BATCH]
        # verbose=False: documents longer than the model's max length are expected; we cut them.
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for offset, row in enumerate(encoded):
            counts[start + offset] = len(row)
            prefixes.append(list(row[:keep]))
    return prefixes, counts
