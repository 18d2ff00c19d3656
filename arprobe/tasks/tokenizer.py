"""Tokenizers: a byte-level BPE trained on the documents (cached), or a pretrained one by hub id or path.

The trained BPE follows the Pythia conventions: ``<|endoftext|>`` (id 0) is eos and bos,
``<|padding|>`` (id 1) is pad.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from arprobe.errors import UserError
from arprobe.models.hub import cache_root, looks_like_path

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
# Bump when the trained tokenizer would change for the same texts (trainer settings, special tokens).
CACHE_FORMAT_VERSION = 1

if TYPE_CHECKING:  # transformers is imported lazily: it costs seconds
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast


def default_cache_dir() -> Path:
    """``$ARPROBE_CACHE/tokenizers`` if ARPROBE_CACHE is set, else ``~/.cache/arprobe/tokenizers``."""
    return cache_root() / "tokenizers"


def train_bpe_tokenizer(
    texts: list[str], vocab_size: int, cache_dir: Path | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (``PreTrainedTokenizerFast``) with at most ``vocab_size`` tokens,
    trained on ``texts``.

    Deterministic for the same texts and size. With ``cache_dir``, the result is stored in
    ``cache_dir/<sha256 of (format, vocab_size, texts)>/`` and reused. Without it, it is
    written to a fresh temporary folder. Either way the tokenizer is loaded back from that
    folder, so ``name_or_path`` names a real folder (TransformerLens reloads from it).
    """
    if cache_dir is None:
        folder = Path(tempfile.mkdtemp(prefix="arprobe-bpe-"))
        _save_trained(texts, vocab_size, folder)
        return _load_folder(folder)
    folder = Path(cache_dir).expanduser() / _cache_key(texts, vocab_size)
    if not (folder / "tokenizer.json").is_file():
        _save_atomically(texts, vocab_size, folder)
    return _load_folder(folder)


def _cache_key(texts: list[str], vocab_size: int) -> str:
    digest = hashlib.sha256(f"arprobe-bpe-v{CACHE_FORMAT_VERSION}\0{vocab_size}\0{len(texts)}\0".encode())
    for text in texts:
        # Length-prefixed so that ["ab", "c"] and ["a", "bc"] hash differently.
        data = text.encode("utf-8")
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return f"bpe-{vocab_size}-{digest.hexdigest()[:32]}"


def _save_atomically(texts: list[str], vocab_size: int, folder: Path) -> None:
    """Train into a temporary sibling folder, then rename it into place: a crash never leaves half a
    tokenizer."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _save_trained(texts, vocab_size, staging)
        if folder.exists():  # an empty or broken leftover without tokenizer.json
            shutil.rmtree(folder)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (folder / "tokenizer.json").is_file():  # not a concurrent writer that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _save_trained(texts: list[str], vocab_size: int, folder: Path) -> None:
    _wrap(_train(texts, vocab_size)).save_pretrained(str(folder))


def _train(texts: list[str], vocab_size: int):
    # lazy: tokenizers takes seconds to import; only this path needs it
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    # No prefix space: decode(encode(text)) == text exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],  # ids 0 and 1, as in Pythia
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer, length=len(texts))
    return tokenizer


def _wrap(tokenizer) -> PreTrainedTokenizerFast:
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


def _load_folder(folder: Path) -> PreTrainedTokenizerFast:
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def load_tokenizer(
    name_or_path: str, revision: str = "", trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """A pretrained tokenizer (``PreTrainedTokenizerBase``) from a local folder or a hub id, via
    ``AutoTokenizer``."""
    # lazy: transformers takes seconds to import; only this path needs it
    from transformers import AutoTokenizer

    local = Path(name_or_path).expanduser()
    if not local.exists() and looks_like_path(name_or_path):
        raise UserError(f"Tokenizer path '{name_or_path}' does not exist.")
    target = str(local) if local.exists() else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            target, revision=revision or None, trust_remote_code=trust_remote_code
        )
    except (
        OSError,
        ValueError,
    ) as exc:  # offline, unknown id or revision, no tokenizer files, remote code refused
        if "trust_remote_code" in str(exc):
            raise UserError(
                f"Tokenizer '{name_or_path}' ships its own code; set model.trust_remote_code = true "
                "if you trust it."
            ) from None
        if local.exists():
            raise UserError(
                f"Folder '{name_or_path}' holds no tokenizer that transformers can load; "
                "point to a folder written by save_pretrained."
            ) from None
        if isinstance(exc, ValueError):
            raise UserError(f"Could not load tokenizer '{name_or_path}': {_first_line(exc)}.") from None
        at = f" at revision '{revision}'" if revision else ""
        raise UserError(
            f"Tokenizer '{name_or_path}'{at} is neither a local folder nor in the local Hugging Face cache; "
            "a hub id needs network access (unset HF_HUB_OFFLINE) or a local copy written with "
            "save_pretrained."
        ) from None
    if not tokenizer.encode(_PROBE, add_special_tokens=False):
        # transformers 5 builds an empty tokenizer from a model folder's config when the folder has
        # no tokenizer files (a model saved alone): every document would then be zero tokens long
        raise UserError(
            f"Tokenizer '{name_or_path}' turns text into no tokens (no tokenizer files there: a model "
            "saved without its tokenizer?); save the tokenizer beside the model, or set data.tokenizer "
            "to another tokenizer or to bpe."
        )
    return tokenizer


_PROBE = "The loss on a document rises after it is trained."


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".: ") if text else type(exc).__name__


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad id of ``tokenizer``, setting one if it has none.

    Without a pad token we reuse an existing token (eos, else unk, else bos), as GPT-2 style
    setups do: pad positions are ignored in the loss (``Documents.lengths``), so its identity
    does not matter, and the vocabulary, hence the model's embedding size, stays unchanged.
    Only a tokenizer with none of those gets a new ``<|padding|>`` token (len(tokenizer) grows by 1).
    """
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    for existing in (tokenizer.eos_token, tokenizer.unk_token, tokenizer.bos_token):
        if existing is not None:
            tokenizer.pad_token = existing
            return int(tokenizer.pad_token_id)
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return int(tokenizer.pad_token_id)


def pad_token_as_released(tokenizer: PreTrainedTokenizerBase, name: str) -> int:
    """The pad id the released code uses: eos for tokenizers named ``gpt2…`` or ``EleutherAI/…``
    (it sets ``pad_token = eos_token`` for those), otherwise as ``ensure_pad_token``.

    Pythia's and GPT-2's tokenizers have no pad token of their own, so a local copy of either
    gets eos from ``ensure_pad_token`` as well. Labels equal to the pad id are ignored in the loss
    (``TextLM``'s ``ignore_id``), so an end-of-text token inside a document is not trained on.
    """
    if name.startswith(("gpt2", "EleutherAI")) and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        return int(tokenizer.pad_token_id)
    return ensure_pad_token(tokenizer)
