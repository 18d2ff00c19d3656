"""The pre-training corpus: documentation text that ships with this Python, disjoint from the
fine-tuning documents.

Sources (``--corpus``):

- ``"python-docs"`` (default): the docstrings (module, class, function; read with ``ast``, nothing is
  imported) of the standard library's ``.py`` files and of every installed package, plus the long
  descriptions in installed packages' ``*.dist-info/METADATA`` (their READMEs). Left out: test
  suites, ``pydoc_data`` (the fine-tuning documents themselves) and arprobe's own code.
- any source ``data.source`` accepts (a ``.txt`` / ``.jsonl`` file, a folder, a ``save_to_disk``
  folder): the texts ``arprobe run`` would read from it.

Every text is cut into paragraphs (blank-line separated). A paragraph is dropped when it repeats an
earlier one (exact duplicates, whitespace-normalised) or shares any run of ``NGRAM`` words
(lower-cased; a shorter paragraph: all its words, in a row) with the fine-tuning documents, so no
fine-tuning document is seen in pre-training.
"""

from __future__ import annotations

import ast
import hashlib
import re
import sys
import sysconfig
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from arprobe.tasks.text_data import load_texts
from arprobe.trainer.config import DataConfig

NGRAM = 8  # words in a shared run that marks a paragraph as overlapping the fine-tuning set
MIN_WORDS = 3  # shorter paragraphs ("Returns", "Args:") carry no prose
_WORD = re.compile(r"\w+")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")
_SKIP_DIRS = {
    "test",
    "tests",
    "testing",
    "idle_test",
    "pydoc_data",
    "__pycache__",
    "arprobe",
    "site-packages",
}


@dataclass
class Corpus:
    """The kept texts ([doc], paragraphs joined by blank lines) and how they were chosen."""

    texts: list[str]
    description: str  # one line: where the texts came from
    sources: dict[str, int] = field(default_factory=dict)  # source -> texts read
    paragraphs_read: int = 0
    dropped_duplicate: int = 0  # paragraphs repeating an earlier one
    dropped_overlap: int = 0  # paragraphs sharing an NGRAM-word run with the fine-tuning documents
    dropped_short: int = 0  # paragraphs under MIN_WORDS words

    def info(self) -> dict:
        digest = hashlib.sha256()
        for text in self.texts:
            data = text.encode("utf-8")
            digest.update(f"{len(data)}:".encode())
            digest.update(data)
        return dict(
            description=self.description,
            sources=self.sources,
            documents=len(self.texts),
            characters=sum(len(t) for t in self.texts),
            paragraphs_read=self.paragraphs_read,
            dropped_duplicate=self.dropped_duplicate,
            dropped_overlap=self.dropped_overlap,
            dropped_short=self.dropped_short,
            dedup=f"paragraphs sharing a {NGRAM}-word run (shorter ones: all their words) with the "
            "fine-tuning documents dropped",
            sha256=digest.hexdigest(),
        )


# --- reading ------------------------------------------------------------------------------


def python_doc_texts() -> tuple[Iterator[tuple[str, str]], str]:
    """(source, text) pairs, lazily: the standard library's docstrings, installed packages' READMEs,
    then installed packages' docstrings (sorted by path, so the order is fixed for one environment)."""
    paths = sysconfig.get_paths()
    stdlib = Path(paths["stdlib"])
    site = sorted({Path(paths["purelib"]), Path(paths["platlib"])})

    def pairs():
        for text in _docstrings_under(stdlib):
            yield "stdlib docstrings", text
        for root in site:
            for text in _metadata_descriptions(root):
                yield "package READMEs", text
        for root in site:
            for text in _docstrings_under(root):
                yield "package docstrings", text

    version = ".".join(map(str, sys.version_info[:3]))
    return pairs(), f"Python {version} documentation: stdlib and installed packages' docstrings and READMEs"


def _docstrings_under(root: Path) -> Iterator[str]:
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS.intersection(path.relative_to(root).parts[:-1]) or path.name.startswith("test_"):
            continue
        yield from _docstrings(path)


def _docstrings(path: Path) -> list[str]:
    try:
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old files
            tree = ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
        return []  # unreadable or not Python 3: nothing to learn from it
    nodes = [tree] + [
        n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    return [doc for n in nodes if (doc := ast.get_docstring(n, clean=True))]


def _metadata_descriptions(root: Path) -> list[str]:
    texts = []
    for path in sorted(root.glob("*.dist-info/METADATA")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        _headers, _, body = text.replace("\r\n", "\n").partition("\n\n")
        if body.strip():
            texts.append(body.strip())
    return texts


# --- dedup --------------------------------------------------------------------------------


def word_ngrams(text: str, n: int = NGRAM) -> set[int]:
    """Hashes of every run of ``n`` lower-cased words in ``text`` (a text shorter than n words: none)."""
    words = _WORD.findall(text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(len(words) - n + 1)}


def build_corpus(
    pairs: Iterable[tuple[str, str]], description: str, finetune_texts: list[str], max_chars: int = 0
) -> Corpus:
    """Paragraph-level dedup of the (source, text) ``pairs`` against themselves and against
    ``finetune_texts``; reading stops once ``max_chars`` characters are kept (0: read everything)."""
    banned: set[int] = set()
    for text in finetune_texts:
        # Runs of NGRAM words, and shorter ones so that a paragraph under NGRAM words (a heading)
        # is caught when it appears anywhere in the fine-tuning documents.
        for n in range(MIN_WORDS, NGRAM + 1):
            banned |= word_ngrams(text, n)
    corpus = Corpus(texts=[], description=description)
    seen: set[str] = set()
    kept_chars = 0
    for source, text in pairs:
        if max_chars and kept_chars >= max_chars:
            break
        corpus.sources[source] = corpus.sources.get(source, 0) + 1
        kept = []
        for paragraph in _BLANK_LINES.split(text.replace("\r\n", "\n")):
            paragraph = paragraph.strip()
            if not paragraph:
                continue
            corpus.paragraphs_read += 1
            key = " ".join(paragraph.split())
            n_words = len(_WORD.findall(paragraph))
            if n_words < MIN_WORDS:
                corpus.dropped_short += 1
            elif key in seen:
                corpus.dropped_duplicate += 1
            elif not word_ngrams(paragraph, min(NGRAM, n_words)).isdisjoint(banned):
                corpus.dropped_overlap += 1
            else:
                seen.add(key)
                kept.append(paragraph)
        if kept:
            corpus.texts.append("\n\n".join(kept))
            kept_chars += len(corpus.texts[-1])
    return corpus


def load_corpus(source: str, finetune_texts: list[str], max_chars: int = 0) -> Corpus:
    """The deduplicated pre-training corpus from ``source`` ("python-docs" or a data source)."""
    if source == "python-docs":
        pairs, description = python_doc_texts()
    else:
        texts, description = load_texts(DataConfig(source=source))
        pairs = ((source, text) for text in texts)
    return build_corpus(pairs, description, finetune_texts, max_chars)
