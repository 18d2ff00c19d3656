"""compat = "authors": the released code's document sampling, tokenisation, embedding resize and
weight-decay groups; and arprobe's own weight-decay groups (no decay on biases or LayerNorm weights)."""

import random

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from arprobe.errors import UserError
from arprobe.storage import RunStore
from arprobe.tasks.text import IGNORE, TextLM, losses_from_logits
from arprobe.tasks.text_data import load_texts, sample_as_released, select_documents
from arprobe.tasks.tokenizer import pad_token_as_released, train_bpe_tokenizer
from arprobe.trainer.api import Replay
from arprobe.trainer.config import default_run_name, load_config
from arprobe.trainer.episode import make_optimizer
from arprobe.trainer.loop import prepare, run
from tests.conftest import tiny_config

ARTICLES = [f"Article {i}: " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(60)) for i in range(12)]


def word_tokenizer(post_bos: bool = False, **special):
    """A real HF tokenizer: "w0 w5 w7" is ids 0, 5, 7; specials get 100, 101, ...; with ``post_bos``
    the first special is prepended whenever special tokens are on."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(100)}
    for offset, token in enumerate(special.values()):
        vocab[token] = 100 + offset
    backend = Tokenizer(models.WordLevel(vocab, unk_token=special.get("unk_token")))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    if post_bos:
        bos = next(iter(special.values()))
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, 100)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


def words(start: int, count: int) -> str:
    return " ".join(f"w{(start + i) % 100}" for i in range(count))


def set_seed_as_transformers(seed: int) -> None:
    """The convention of ``transformers.set_seed`` / ``accelerate.utils.set_seed`` on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- (a) document selection ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 42, 1234])
def test_selection_is_random_sample_after_the_conventional_seeding(seed):
    tok = word_tokenizer()
    # document i starts with word i and has 3..12 tokens, all under min_tokens = 50
    texts = [words(i, 3 + i % 10) for i in range(40)]
    options = dict(n_docs=7, context_length=8, max_shift=0, seed=seed, pad_id=-1)
    docs = select_documents(texts, tok, min_tokens=50, compat="authors", **options)
    set_seed_as_transformers(seed)
    expected = random.sample(range(40), 7)  # the released code's draw, with Python's own random
    assert docs.tokens[:, 0].tolist() == expected  # same documents, same (cyclic) order
    assert sample_as_released(40, 7, seed) == expected
    assert (docs.n_candidates, docs.n_dropped) == (40, 0)  # no min_tokens filter
    for row, index in enumerate(expected):
        n = min(3 + index % 10, 8)
        assert docs.lengths[row] == n and docs.texts[row] == words(index, n)
        assert (docs.tokens[row, n:] == -1).all()
    # arprobe's own sampling (numpy, after dropping documents under min_tokens) differs
    own = select_documents(texts, tok, min_tokens=2, **options)
    assert own.tokens[:, 0].tolist() != expected


def test_selection_leaves_the_global_generators_alone():
    random.seed(123)
    sample_as_released(1000, 10, seed=7)
    assert random.random() == random.Random(123).random()


def test_selection_errors():
    tok = word_tokenizer()
    options = dict(n_docs=5, context_length=8, max_shift=0, min_tokens=2, pad_id=-1, compat="authors")
    with pytest.raises(UserError) as err:
        select_documents([words(0, 9)] * 4, tok, seed=0, **options)
    assert str(err.value) == (
        "The data source holds only 4 documents; lower data.n_docs (T, now 5) or use a larger data source."
    )
    texts = [words(i, 9) for i in range(10)]
    blank = sample_as_released(10, 5, seed=3)[2]
    texts[blank] = ""  # a blank row keeps its place (load_texts keep_blank) and is drawn
    with pytest.raises(UserError) as err:
        select_documents(texts, tok, seed=3, **options)
    assert str(err.value) == (
        f"Document {blank} of the data source, drawn by the released code's sampling (compat = authors), "
        "has 0 token(s), too few to train on; use another seed."
    )


def test_load_texts_keeps_blank_rows_in_place(tmp_path):
    rows = ["first", "", "   ", None, "fifth"]
    datasets.Dataset.from_dict({"article": rows}).save_to_disk(tmp_path / "ds")
    cfg = load_config(None, {"data.source": str(tmp_path / "ds"), "data.field": "article"}).data
    assert load_texts(cfg)[0] == ["first", "fifth"]
    assert load_texts(cfg, keep_blank=True)[0] == ["first", "", "   ", "", "fifth"]
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n{"text": ""}\n{"text": null}\n{"text": "d"}\n')
    cfg = load_config(None, {"data.source": str(tmp_path / "d.jsonl")}).data
    assert load_texts(cfg)[0] == ["a", "d"]
    assert load_texts(cfg, keep_blank=True)[0] == ["a", "", "", "d"]


# --- (d) tokenisation, pad and labels -------------------------------------------------------


def test_special_tokens_are_on_and_kept_by_truncation():
    tok = word_tokenizer(post_bos=True, bos_token="<bos>")  # <bos> = 100, prepended with specials on
    texts = [words(10 * i, 12) for i in range(6)]
    options = dict(n_docs=3, context_length=8, max_shift=0, min_tokens=2, seed=0, pad_id=-1)
    authors = select_documents(texts, tok, compat="authors", **options)
    own = select_documents(texts, tok, **options)
    assert (authors.tokens[:, 0] == 100).all() and (authors.lengths == 8).all()
    first = authors.tokens[:, 1] // 10
    np.testing.assert_array_equal(
        authors.tokens[:, 1:], [[(10 * i + j) % 100 for j in range(7)] for i in first]
    )
    assert (own.tokens != 100).all()


def test_pad_as_released():
    named = word_tokenizer(eos_token="<eos>", pad_token="<pad>")  # eos 100, pad 101
    assert pad_token_as_released(named, "EleutherAI/pythia-1b") == 100  # pad = eos, as the released code
    assert pad_token_as_released(word_tokenizer(eos_token="<eos>", pad_token="<pad>"), "gpt2-large") == 100
    assert pad_token_as_released(word_tokenizer(eos_token="<eos>", pad_token="<pad>"), "/models/own") == 101
    # a local copy of Pythia's or GPT-2's tokenizer has no pad token: eos as well
    assert pad_token_as_released(word_tokenizer(eos_token="<eos>"), "/models/pythia-1b") == 100


def test_labels_equal_to_the_pad_id_are_ignored():
    # pad id 9 also occurs inside the document (position 3), as an end-of-text token would
    tokens = torch.tensor([[4, 5, 6, 9, 7, 8, 9, 9]])
    lengths = torch.tensor([6])
    logits = torch.randn(1, 8, 12, generator=torch.Generator().manual_seed(0))
    own = TextLM(tokens, lengths, context_length=8)
    authors = TextLM(tokens, lengths, context_length=8, ignore_id=9)
    gen = torch.Generator()
    assert own.training_batch(0, gen)["labels"][0].tolist() == [4, 5, 6, 9, 7, 8, IGNORE, IGNORE]
    assert authors.training_batch(0, gen)["labels"][0].tolist() == [4, 5, 6, IGNORE, 7, 8, IGNORE, IGNORE]
    nll = -F.log_softmax(logits[0], -1)
    # targets of positions 0..4 are tokens 1..5; the released code skips the 9 at position 3's target
    expected_own = (nll[0, 5] + nll[1, 6] + nll[2, 9] + nll[3, 7] + nll[4, 8]) / 5
    expected_authors = (nll[0, 5] + nll[1, 6] + nll[3, 7] + nll[4, 8]) / 4
    torch.testing.assert_close(losses_from_logits(logits, tokens, lengths)[0], expected_own)
    torch.testing.assert_close(losses_from_logits(logits, tokens, lengths, ignore_id=9)[0], expected_authors)


# --- (b) embedding resize, end to end on a locally saved model and tokenizer ----------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A GPT-NeoX with 7 more embedding rows than its tokenizer (as Pythia: 50,304 vs 50,277), and a
    save_to_disk dataset of 13 rows, row 5 blank, each article holding the pad token once."""
    path = tmp_path_factory.mktemp("compat")
    tokenizer = train_bpe_tokenizer(ARTICLES, 400, cache_dir=path / "cache")
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer) + 7,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = GPTNeoXForCausalLM(config)
    model.save_pretrained(path / "model")
    tokenizer.save_pretrained(path / "model")
    # the BPE's pad token, as an end-of-text token would sit inside a real document
    articles = [a.replace(": ", ": <|padding|> ", 1) for a in ARTICLES]
    rows = articles[:5] + [""] + articles[5:]
    datasets.Dataset.from_dict({"article": rows}).save_to_disk(path / "cnn")
    return path, model, len(tokenizer), rows


def prepare_saved(saved, tmp_path, **overrides):
    path = saved[0]
    values = {
        "model.name": str(path / "model"),
        "init": "pretrained",
        "data.source": str(path / "cnn"),
        "data.field": "article",
        "n_docs": 4,
        "seed": 0,
        **overrides,
    }
    return prepare(tiny_config(tmp_path, **values))


def test_authors_mode_end_to_end_on_a_saved_model(saved, tmp_path):
    _, original, n_tokens, rows = saved
    assert sample_as_released(13, 4, seed=0) == [6, 12, 0, 4]  # seed 0 skips the blank row 5
    setup = prepare_saved(saved, tmp_path, compat="authors")
    # (a) the released code's rows of the dataset, blank row counted, in its order
    set_seed_as_transformers(0)
    chosen = random.sample(range(13), 4)
    assert [text.split(":")[0] for text in setup.texts] == [rows[i].split(":")[0] for i in chosen]
    # (b) embedding and unembedding trimmed to the tokenizer, the kept rows unchanged
    model = setup.model
    assert model.get_input_embeddings().weight.shape == (n_tokens, 32)
    assert model.get_output_embeddings().weight.shape == (n_tokens, 32)
    assert torch.equal(model.get_input_embeddings().weight, original.get_input_embeddings().weight[:n_tokens])
    assert setup.model_info["resized_embeddings"] == [n_tokens + 7, n_tokens]
    assert setup.model_info["hf_config"]["vocab_size"] == n_tokens
    # row 0 of the eval matrix: the released code's loss, softmax over the tokenizer's tokens only
    tokens = setup.task.eval_tokens
    with torch.no_grad():
        logits = original(input_ids=tokens).logits[..., :n_tokens]
        labels = tokens.masked_fill(tokens == setup.model_info["pad_id"], IGNORE)
        expected = torch.stack(
            [F.cross_entropy(logits[i, :-1], labels[i, 1:], ignore_index=IGNORE) for i in range(4)]
        )
    torch.testing.assert_close(setup.task.eval_losses(model), expected, rtol=1e-5, atol=1e-6)
    assert setup.model_info["pad_id"] == 1 and (tokens == 1).any()  # the pad token is in the documents
    with torch.no_grad():
        unmasked = losses_from_logits(model(input_ids=tokens).logits, tokens, setup.task.eval_lengths)
    assert (setup.task.eval_losses(model) - unmasked).abs().max() > 1e-3

    own = prepare_saved(saved, tmp_path, compat="arprobe")
    assert own.model.get_input_embeddings().weight.shape == (n_tokens + 7, 32)  # not resized
    assert "resized_embeddings" not in own.model_info


def test_authors_run_replays_bit_for_bit(saved, tmp_path):
    """Replay (pairwise recovery) trains with the run's decay groups and pad masking."""
    values = {
        "model.name": str(saved[0] / "model"),
        "init": "pretrained",
        "data.source": str(saved[0] / "cnn"),
        "data.field": "article",
        "n_docs": 4,
        "epochs": 2,
        "compat": "authors",
        "weight_decay": 0.1,
        "checkpoints": "1",
        **{"weights_every": 0, "activations_every": 0, "grads_at": "never", "all_weights_dim": 0},
    }
    result = run(tiny_config(tmp_path, **values), progress=False)
    assert result.status == "complete"
    with RunStore(result.path) as store:
        assert store.model_info["pad_id"] == 1 and store.model_info["resized_embeddings"][1] == saved[2]
        k = 3
        replay = Replay(store, k - 1, device="cpu")
        assert [g["weight_decay"] for g in replay.optimizer.param_groups] == [0.1, 0.0]
        assert replay.task.ignore_id == 1
        replay.train_episode(int(store.schedule().doc[k - 1]))
        # a replay repeats the run's own computation: bit for bit
        for name, value in store.checkpoint(k)["model"].items():
            np.testing.assert_array_equal(replay.state()["model"][name], value, err_msg=name)
        np.testing.assert_array_equal(replay.evaluate(), store.eval_matrix()[k])


def test_resize_grows_a_too_small_embedding_only_in_authors_mode(tmp_path):
    from arprobe.models.text import build_model
    from arprobe.trainer.config import ModelConfig

    torch.manual_seed(0)
    small = GPT2LMHeadModel(GPT2Config(vocab_size=90, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    small.save_pretrained(tmp_path / "gpt2")
    cfg = ModelConfig(name=str(tmp_path / "gpt2"), init="pretrained", device="cpu")
    with pytest.raises(UserError, match=r"tokenizer has 100 tokens but .* embeds only 90"):
        build_model(cfg, 100, seed=0, max_positions=32)
    grown = build_model(cfg, 100, seed=0, max_positions=32, resize_embeddings=True)
    again = build_model(cfg, 100, seed=0, max_positions=32, resize_embeddings=True)
    wte = grown.model.transformer.wte.weight
    assert wte.shape == (100, 16) and grown.provenance["resized_embeddings"] == [90, 100]
    assert torch.equal(wte[:90], small.transformer.wte.weight)
    assert torch.equal(wte, again.model.transformer.wte.weight)  # new rows seeded
    assert grown.model.lm_head.weight is wte  # still tied
    trimmed = build_model(cfg, 80, seed=0, max_positions=32, resize_embeddings=True).model
    assert trimmed.lm_head.weight.shape == (80, 16)
    assert trimmed.lm_head.weight is trimmed.transformer.wte.weight


# --- (c) weight-decay groups --------------------------------------------------------------


def neox():
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return GPTNeoXForCausalLM(config)


def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32))


NEOX_NORMS = [
    "gpt_neox.layers.0.input_layernorm.weight",
    "gpt_neox.layers.0.post_attention_layernorm.weight",
    "gpt_neox.final_layer_norm.weight",
]
NEOX_BIASES = [
    f"gpt_neox.{part}.bias"
    for part in [
        "layers.0.input_layernorm",
        "layers.0.post_attention_layernorm",
        "layers.0.attention.query_key_value",
        "layers.0.attention.dense",
        "layers.0.mlp.dense_h_to_4h",
        "layers.0.mlp.dense_4h_to_h",
        "final_layer_norm",
    ]
]
GPT2_NORMS = ["transformer.h.0.ln_1.weight", "transformer.h.0.ln_2.weight", "transformer.ln_f.weight"]
GPT2_BIASES = [
    f"transformer.{part}.bias"
    for part in [
        "h.0.ln_1",
        "h.0.attn.c_attn",
        "h.0.attn.c_proj",
        "h.0.ln_2",
        "h.0.mlp.c_fc",
        "h.0.mlp.c_proj",
    ]
] + ["transformer.ln_f.bias"]


def no_decay_names(model, rule: str) -> set[str]:
    optimizer = make_optimizer(model, "sgd", 0.1, 0.5, decay_rule=rule)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.5, 0.0]
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in optimizer.param_groups[0]["params"]}
    skipped = {names[id(p)] for p in optimizer.param_groups[1]["params"]}
    assert decayed | skipped == set(names.values()) and not decayed & skipped
    return skipped


@pytest.mark.parametrize(
    "build, rule, expected",
    [
        (neox, "arprobe", NEOX_BIASES + NEOX_NORMS),  # every bias and LayerNorm weight
        (neox, "authors", NEOX_BIASES + ["gpt_neox.final_layer_norm.weight"]),  # "bias", "layer_norm.weight"
        (gpt2, "arprobe", GPT2_BIASES + GPT2_NORMS),
        (gpt2, "authors", GPT2_BIASES),  # GPT-2's norms are ln_*: the released rule decays them all
    ],
)
def test_decay_groups_by_parameter_name(build, rule, expected):
    assert no_decay_names(build(), rule) == set(expected)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_decay_moves_only_the_decayed_group(name):
    model = neox()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, name, 0.1, 0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only the decay moves a parameter
    optimizer.step()
    for n, p in model.named_parameters():
        factor = 1.0 if n in NEOX_BIASES + NEOX_NORMS else 1 - 0.1 * 0.5
        torch.testing.assert_close(p.detach(), before[n] * factor, rtol=1e-6, atol=0)


def test_without_decay_one_group_of_every_trainable_parameter():
    model = neox()
    model.gpt_neox.embed_in.requires_grad_(False)
    for name in ("sgd", "adam"):
        for rule in ("arprobe", "authors"):
            groups = make_optimizer(model, name, 0.1, 0.0, decay_rule=rule).param_groups
            assert len(groups) == 1
            assert groups[0]["params"] == [p for p in model.parameters() if p.requires_grad]
    frozen = model.gpt_neox.embed_in.weight
    groups = make_optimizer(model, "sgd", 0.1, 0.5).param_groups
    assert all(p is not frozen for g in groups for p in g["params"])


# --- the option -----------------------------------------------------------------------------


def test_compat_option():
    cfg = load_config(None, {"compat": "authors", "n_docs": 4})
    assert cfg.compat == "authors" and default_run_name(cfg) == "cyclic-T4-C64-M10-E4-authors-s0"
    assert load_config(None, {}).compat == "arprobe"
    with pytest.raises(UserError) as err:
        load_config(None, {"compat": "paper"})
    assert str(err.value) == "compat must be 'arprobe' or 'authors', got 'paper'."
