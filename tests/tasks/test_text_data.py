"""Data sources, document selection and tokenizers (arprobe.tasks.text_data, arprobe.tasks.tokenizer)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from arprobe.errors import UserError  # noqa: E402
from arprobe.tasks import tokenizer as tokenizer_module  # noqa: E402
from arprobe.tasks.text_data import load_texts, looks_like_path, select_documents  # noqa: E402
from arprobe.tasks.tokenizer import (  # noqa: E402
    default_cache_dir,
    ensure_pad_token,
    load_tokenizer,
    train_bpe_tokenizer,
)
from arprobe.trainer.config import DataConfig  # noqa: E402

PROSE = "The loss on a document rises after it is trained, then falls again before it comes back."


@pytest.fixture
def offline(monkeypatch):
    """Force offline mode even if another test module imported the hub libraries first."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


def word_tokenizer(**special):
    """A real HF tokenizer with known counts: "w0 w5 w7" is 3 tokens, ids 0, 5, 7 (+ the specials)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(100)}
    for offset, token in enumerate(special.values()):
        vocab[token] = 100 + offset
    backend = Tokenizer(models.WordLevel(vocab, unk_token=special.get("unk_token")))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


def words(start: int, count: int) -> str:
    return " ".join(f"w{(start + i) % 100}" for i in range(count))


# --- load_texts ---------------------------------------------------------------------------


def test_pydoc_source_gives_stripped_topics():
    texts, provenance = load_texts(DataConfig(source="pydoc"))
    assert len(texts) > 50
    assert all(t == t.strip() and t for t in texts)
    assert "pydoc_data.topics" in provenance
    assert load_texts(DataConfig())[0] == texts  # deterministic, and the default


def test_txt_file_is_split_into_paragraphs(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("First doc,\nline two.\n\n\n  Second doc.  \n \t \nThird doc.\n\n\n")
    texts, provenance = load_texts(DataConfig(source=str(path)))
    assert texts == ["First doc,\nline two.", "Second doc.", "Third doc."]
    assert "3 paragraphs" in provenance


def test_folder_holds_one_document_per_txt_file(tmp_path):
    (tmp_path / "b.txt").write_text("Bravo text.\n\nstill bravo.\n")
    (tmp_path / "a.txt").write_text("Alpha text.\n")
    (tmp_path / "c.txt").write_text("  \n")  # blank: dropped
    (tmp_path / "notes.md").write_text("ignored")
    texts, provenance = load_texts(DataConfig(source=str(tmp_path)))
    assert texts == ["Alpha text.", "Bravo text.\n\nstill bravo."]
    assert "3 .txt files" in provenance


def test_folder_without_txt_files_is_an_error(tmp_path):
    with pytest.raises(UserError, match="holds no .txt files"):
        load_texts(DataConfig(source=str(tmp_path)))


def test_jsonl_reads_the_named_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"body": "one", "id": 1}, {"body": "  "}, {"body": None}, {"body": "two"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    texts, provenance = load_texts(DataConfig(source=str(path), field="body"))
    assert texts == ["one", "two"]
    assert "field 'body'" in provenance


def test_jsonl_missing_field_names_field_and_keys(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"body": "one", "id": 1}) + "\n")
    with pytest.raises(UserError) as err:
        load_texts(DataConfig(source=str(path), field="text"))
    assert str(err.value) == (
        f"Line 1 of '{path}' has no field 'text' (keys: body, id); set data.field to the text field."
    )


def test_save_to_disk_dataset_and_dataset_dict(tmp_path):
    import datasets

    train = datasets.Dataset.from_dict(
        {"article": ["a one", "", "a two", None, "a three"], "n": [1, 2, 3, 4, 5]}
    )
    test = datasets.Dataset.from_dict({"article": ["t one"], "n": [6]})
    train.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dict"))

    texts, provenance = load_texts(DataConfig(source=str(tmp_path / "single"), field="article"))
    assert texts == ["a one", "a two", "a three"]
    assert "save_to_disk" in provenance
    texts, _ = load_texts(DataConfig(source=str(tmp_path / "dict"), field="article", split="test"))
    assert texts == ["t one"]

    with pytest.raises(UserError, match=r"Split 'validation' is not in .* \(splits: train, test\)"):
        load_texts(DataConfig(source=str(tmp_path / "dict"), field="article", split="validation"))
    with pytest.raises(UserError, match=r"Field 'text' is not a column of .* \(columns: article, n\)"):
        load_texts(DataConfig(source=str(tmp_path / "single"), field="text"))


def test_nonexistent_path_is_a_user_error(tmp_path):
    for source in [
        "./no-such-file.txt",
        str(tmp_path / "missing" / "docs"),
        "docs.jsonl",
        "~/no/such/folder",
    ]:
        with pytest.raises(UserError) as err:
            load_texts(DataConfig(source=source))
        assert str(err.value) == f"Data source '{source}' does not exist."


def test_hub_id_offline_says_what_to_do(offline):
    with pytest.raises(UserError) as err:
        load_texts(DataConfig(source="no-such-org/no-such-dataset", field="article"))
    message = str(err.value)
    assert message.startswith("Dataset 'no-such-org/no-such-dataset' is neither a local file or folder")
    assert "HF_HUB_OFFLINE" in message and "save_to_disk" in message


def test_hub_ids_are_not_paths():
    assert not looks_like_path("abisee/cnn_dailymail")
    assert not looks_like_path("wikitext")
    assert looks_like_path("data/raw/docs") and looks_like_path("/abs") and looks_like_path("x.txt")


# --- select_documents ---------------------------------------------------------------------


def select(texts, tokenizer, **overrides):
    options = dict(n_docs=3, context_length=8, max_shift=2, min_tokens=6, seed=0, pad_id=-1)
    options.update(overrides)
    return select_documents(texts, tokenizer, **options)


def test_select_documents_shapes_padding_and_counts():
    tok = word_tokenizer()
    counts = [3, 10, 20, 5, 7, 1, 12, 6]  # eligible (>= 6 tokens): indices 1, 2, 4, 6, 7
    texts = [words(10 * i, n) for i, n in enumerate(counts)]
    docs = select(texts, tok, n_docs=5)

    # C + 2S = 8 + 2·2 tokens kept: the window may shift by up to S = 2 either way
    assert docs.tokens.shape == (5, 12) and docs.tokens.dtype == np.int32
    assert docs.lengths.dtype == np.int32 and docs.window_start.dtype == np.int32
    chosen = docs.tokens[:, 0] // 10  # document i starts with word 10 i
    assert sorted(chosen.tolist()) == [1, 2, 4, 6, 7]  # all eligible, each once
    assert (docs.n_candidates, docs.n_dropped) == (5, 3)
    expected_index = np.array([1, 2, 4, 6, 7])[np.random.default_rng(0).choice(5, size=5, replace=False)]
    np.testing.assert_array_equal(chosen, expected_index)  # sampled order is the cyclic order
    for row, index in enumerate(chosen):
        n = min(counts[index], 12)
        assert docs.lengths[row] == n
        # the clean window starts S tokens in when the document is long enough to shift both ways
        assert docs.window_start[row] == min(max(n - 8, 0), 2)
        np.testing.assert_array_equal(docs.tokens[row, :n], [(10 * index + i) % 100 for i in range(n)])
        assert (docs.tokens[row, n:] == -1).all()  # padded with pad_id
        assert docs.texts[row] == words(10 * index, n)  # decoded from the kept tokens
    assert (docs.lengths < 12).any()  # the padding branch was exercised
    np.testing.assert_array_equal(select(texts, tok, n_docs=5, max_shift=0).window_start, 0)


def test_select_documents_is_seeded():
    tok = word_tokenizer()
    texts = [words(i, 8 + i % 5) for i in range(30)]
    first = select(texts, tok, n_docs=6, seed=7)
    again = select(texts, tok, n_docs=6, seed=7)
    other = select(texts, tok, n_docs=6, seed=8)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert first.texts == again.texts
    assert first.texts != other.texts


def test_too_few_documents_error():
    tok = word_tokenizer()
    texts = [words(0, n) for n in (3, 10, 20, 5)]
    with pytest.raises(UserError) as err:
        select(texts, tok, n_docs=3, min_tokens=6)
    assert str(err.value) == (
        "Only 2 of the 4 documents in the data source have at least 6 tokens; "
        "lower data.n_docs (T, now 3) or data.min_tokens, or use a larger data source."
    )


def test_min_tokens_drops_short_documents():
    tok = word_tokenizer()
    texts = [words(0, n) for n in (2, 4, 6, 8, 10, 12)]
    loose = select(texts, tok, n_docs=2, min_tokens=2)
    strict = select(texts, tok, n_docs=2, min_tokens=9)
    assert (loose.n_candidates, loose.n_dropped) == (6, 0)
    assert (strict.n_candidates, strict.n_dropped) == (2, 4)
    assert sorted(strict.lengths.tolist()) == [10, 12]  # the two with at least 9 tokens (C + 2S = 12 kept)


# --- tokenizers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pydoc_texts():
    return load_texts(DataConfig())[0]


@pytest.fixture(scope="module")
def bpe_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizers")


@pytest.fixture(scope="module")
def bpe(pydoc_texts, bpe_cache):
    return train_bpe_tokenizer(pydoc_texts, 512, cache_dir=bpe_cache)


def test_bpe_vocab_specials_and_round_trip(bpe):
    assert 300 < len(bpe) <= 512
    assert (bpe.eos_token, bpe.bos_token, bpe.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|padding|>")
    assert (bpe.eos_token_id, bpe.pad_token_id) == (0, 1)
    assert ensure_pad_token(bpe) == 1
    for text in [PROSE, "  two  spaces,\ttabs\nand newlines.\n", "def f(x):\n    return x ** 2  # squared"]:
        ids = bpe(text, add_special_tokens=False)["input_ids"]
        assert 0 not in ids and 1 not in ids  # no specials added to plain text
        assert bpe.decode(ids) == text
    assert len(bpe(PROSE, add_special_tokens=False)["input_ids"]) < 0.6 * len(PROSE)  # merges were learned
    assert os.path.isfile(os.path.join(bpe.init_kwargs["name_or_path"], "tokenizer.json"))


def test_bpe_cache_hit_does_not_retrain(bpe, pydoc_texts, bpe_cache, monkeypatch):
    folder = bpe.init_kwargs["name_or_path"]
    cached = os.path.join(folder, "tokenizer.json")
    mtime = os.stat(cached).st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("retrained despite a cache hit")

    monkeypatch.setattr(tokenizer_module, "_train", fail)
    again = train_bpe_tokenizer(pydoc_texts, 512, cache_dir=bpe_cache)
    assert again.get_vocab() == bpe.get_vocab()
    assert os.stat(cached).st_mtime_ns == mtime
    assert os.listdir(bpe_cache) == [os.path.basename(folder)]  # no staging folders left behind


def test_bpe_is_deterministic_and_keyed_by_size(pydoc_texts, bpe, bpe_cache, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the uncached tokenizer's folder goes here
    uncached = train_bpe_tokenizer(pydoc_texts, 512)
    assert uncached.get_vocab() == bpe.get_vocab()
    assert uncached.init_kwargs["name_or_path"].startswith(str(tmp_path))
    smaller = train_bpe_tokenizer(pydoc_texts, 400, cache_dir=bpe_cache)
    assert len(smaller) == 400
    assert smaller.init_kwargs["name_or_path"] != bpe.init_kwargs["name_or_path"]


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ARPROBE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "tokenizers"
    monkeypatch.delenv("ARPROBE_CACHE")
    assert str(default_cache_dir()).endswith(os.path.join(".cache", "arprobe", "tokenizers"))


def test_load_tokenizer_from_save_pretrained_folder(bpe, tmp_path):
    bpe.save_pretrained(str(tmp_path / "tok"))
    loaded = load_tokenizer(str(tmp_path / "tok"))
    assert loaded.get_vocab() == bpe.get_vocab()
    assert (
        loaded(PROSE, add_special_tokens=False)["input_ids"]
        == bpe(PROSE, add_special_tokens=False)["input_ids"]
    )
    assert ensure_pad_token(loaded) == 1


def test_load_tokenizer_errors(tmp_path, offline):
    with pytest.raises(UserError) as err:
        load_tokenizer("./no-such-tokenizer")
    assert str(err.value) == "Tokenizer path './no-such-tokenizer' does not exist."
    with pytest.raises(UserError, match="holds no tokenizer"):
        load_tokenizer(str(tmp_path))
    # a model saved without its tokenizer: transformers builds an empty one from the config
    GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=8, n_layer=1, n_head=2)).save_pretrained(tmp_path / "m")
    with pytest.raises(UserError) as err:
        load_tokenizer(str(tmp_path / "m"))
    assert str(err.value) == (
        f"Tokenizer '{tmp_path / 'm'}' turns text into no tokens (no tokenizer files there: a model saved "
        "without its tokenizer?); save the tokenizer beside the model, or set data.tokenizer to another "
        "tokenizer or to bpe."
    )
    with pytest.raises(UserError) as err:
        load_tokenizer("no-such-org/no-such-model", revision="step1")
    assert str(err.value).startswith("Tokenizer 'no-such-org/no-such-model' at revision 'step1' is neither")
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_ensure_pad_token_reuses_eos_or_adds_one():
    gpt2_style = word_tokenizer(eos_token="<eos>")
    size = len(gpt2_style)
    assert ensure_pad_token(gpt2_style) == gpt2_style.eos_token_id == 100
    assert len(gpt2_style) == size  # vocabulary (and so the model's embedding) unchanged

    bare = word_tokenizer()
    assert ensure_pad_token(bare) == 100 and bare.pad_token == "<|padding|>"
    assert len(bare) == 101
