"""Model loading: presets, overrides, the Pythia and normal inits, freezing, pretrained loading, errors."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers/huggingface_hub read it

import json
import math
import time

import pytest
import torch

from arprobe.errors import UserError
from arprobe.models.text import (
    PYTHIA_PRESETS,
    build_config,
    build_model,
    freeze_first_blocks,
    init_pythia_,
    n_blocks,
    resolve_device,
)
from arprobe.trainer.config import ModelConfig

VOCAB = 300


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may touch the network, whatever the order modules were imported in."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def tiny(**kw) -> ModelConfig:
    """A 2-block, width-64 GPT-NeoX on CPU unless told otherwise."""
    base = dict(name="pythia-14m", init="pythia", d_model=64, n_layers=2, n_heads=4, device="cpu")
    return ModelConfig(**{**base, **kw})


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def meta_param_count(config) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


# --- presets and overrides ----------------------------------------------------------------


# Non-embedding parameters of the Pythia suite as published (Biderman et al. 2023, Table 1; 14m and
# 31m: total minus 2 × 50304 × d_model of the later model cards).
PYTHIA_NON_EMBEDDING = [
    ("pythia-14m", 128, 1_189_888),
    ("pythia-31m", 256, 4_739_072),
    ("pythia-70m", 512, 18_915_328),
    ("pythia-160m", 768, 85_056_000),
    ("pythia-410m", 1024, 302_311_424),
    ("pythia-1b", 2048, 805_736_448),
    ("pythia-1.4b", 2048, 1_208_602_624),
    ("pythia-2.8b", 2560, 2_517_652_480),
]


def test_every_pythia_preset_is_checked_against_the_published_count():
    assert {n for n in PYTHIA_PRESETS if n.startswith("pythia-")} == {n for n, _, _ in PYTHIA_NON_EMBEDDING}


@pytest.mark.parametrize("name, d, non_embedding", PYTHIA_NON_EMBEDDING)
def test_presets_build_pythias_non_embedding_part_with_any_vocabulary(name, d, non_embedding):
    # With the embedded 4096-token BPE only the (untied) embeddings shrink: the model built from the
    # preset has exactly Pythia's parameters outside them.
    config, _ = build_config(ModelConfig(name=name, d_model=0, n_layers=0, n_heads=0), 4096, 2048)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    embedding = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    assert embedding == 2 * 4096 * d
    assert sum(p.numel() for p in model.parameters()) - embedding == non_embedding


@pytest.mark.parametrize("name, published", [("pythia-160m", 162_322_944), ("pythia-1b", 1_011_781_632)])
def test_preset_parameter_count_matches_pythia(name, published):
    config, overrides = build_config(ModelConfig(name=name, d_model=0, n_layers=0, n_heads=0), 50304, 2048)
    assert overrides == {}
    assert config.rope_parameters["partial_rotary_factor"] == 0.25
    assert abs(meta_param_count(config) - published) / published < 0.01


def test_overrides_vocab_and_positions_are_applied():
    lm = build_model(tiny(), vocab_size=VOCAB, seed=0, max_positions=4096)
    c = lm.model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (64, 2, 4, 256)
    assert c.vocab_size == VOCAB and c.max_position_embeddings == 4096
    assert lm.model.get_input_embeddings().weight.shape == (VOCAB, 64)
    assert lm.model.get_output_embeddings().weight.shape == (VOCAB, 64)
    assert lm.provenance["overrides"] == {"d_model": 64, "n_layers": 2}  # the preset already has 4 heads
    assert lm.bridge_name == "EleutherAI/pythia-14m"


def test_provenance_is_json_and_counts_parameters():
    lm = build_model(tiny(), vocab_size=VOCAB, seed=3, max_positions=64)
    prov = json.loads(json.dumps(lm.provenance))
    n = sum(p.numel() for p in lm.model.parameters())
    assert prov["kind"] == "random" and prov["init"] == "pythia" and prov["seed"] == 3
    assert prov["n_params"] == prov["n_trainable"] == n
    assert prov["hf_config"]["hidden_size"] == 64 and prov["hf_config"]["model_type"] == "gpt_neox"
    assert prov["dtype"] == "float32" and prov["device"] == "cpu"
    assert prov["attn_implementation"] == "sdpa"


def test_model_trains_with_dropout_off_and_is_deterministic():
    lm = build_model(tiny(), vocab_size=VOCAB, seed=0, max_positions=64)
    model = lm.model
    assert model.training
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model.config.attention_dropout == 0.0 and model.config.hidden_dropout == 0.0
    ids = torch.randint(0, VOCAB, (1, 32), generator=torch.Generator().manual_seed(0))
    first = model(ids).logits
    assert torch.equal(first, model(ids).logits)  # train mode, yet no randomness
    again = build_model(tiny(), vocab_size=VOCAB, seed=0, max_positions=64).model
    assert torch.equal(first, again(ids).logits)


# --- initialisation -----------------------------------------------------------------------


def test_pythia_init_uses_small_init_and_wang_init():
    d, layers = 256, 2
    model = build_model(tiny(d_model=d, n_layers=layers), vocab_size=VOCAB, seed=0, max_positions=64).model
    small, wang = math.sqrt(2 / (5 * d)), 2 / (layers * math.sqrt(d))
    block = model.gpt_neox.layers[1]
    for weight, expected in [
        (block.attention.query_key_value.weight, small),
        (block.mlp.dense_h_to_4h.weight, small),
        (model.gpt_neox.embed_in.weight, small),
        (model.get_output_embeddings().weight, small),
        (block.attention.dense.weight, wang),
        (block.mlp.dense_4h_to_h.weight, wang),
    ]:
        assert abs(weight.std().item() / expected - 1) < 0.1
    assert torch.all(block.attention.query_key_value.bias == 0) and torch.all(
        block.mlp.dense_4h_to_h.bias == 0
    )
    assert torch.all(block.input_layernorm.weight == 1) and torch.all(block.input_layernorm.bias == 0)
    assert torch.all(model.gpt_neox.final_layer_norm.weight == 1)


def test_init_pythia_overwrites_every_parameter():
    model = build_model(tiny(), vocab_size=VOCAB, seed=0, max_positions=64).model
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(7.0)
    init_pythia_(model)
    assert not any(torch.any(p == 7.0) for p in model.parameters())


def test_normal_init_is_n0_002():
    model = build_model(tiny(init="normal", d_model=128), vocab_size=VOCAB, seed=0, max_positions=64).model
    block = model.gpt_neox.layers[0]
    for weight in [
        block.attention.query_key_value.weight,
        block.attention.dense.weight,
        block.mlp.dense_4h_to_h.weight,
        model.gpt_neox.embed_in.weight,
        model.get_output_embeddings().weight,
    ]:
        assert abs(weight.std().item() / 0.02 - 1) < 0.1
        assert abs(weight.mean().item()) < 0.002
    assert torch.all(block.attention.dense.bias == 0) and torch.all(
        block.post_attention_layernorm.weight == 1
    )


def test_same_seed_same_weights_other_seed_other_weights():
    a = state(build_model(tiny(), vocab_size=VOCAB, seed=1, max_positions=64).model)
    b = state(build_model(tiny(), vocab_size=VOCAB, seed=1, max_positions=64).model)
    c = state(build_model(tiny(), vocab_size=VOCAB, seed=2, max_positions=64).model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["gpt_neox.embed_in.weight"], c["gpt_neox.embed_in.weight"])


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(tiny(), vocab_size=VOCAB, seed=0, max_positions=64)
    assert torch.equal(torch.rand(3), expected)


def test_bfloat16_dtype():
    lm = build_model(tiny(dtype="bfloat16"), vocab_size=VOCAB, seed=0, max_positions=64)
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert lm.provenance["dtype"] == "bfloat16"
    f32 = build_model(tiny(), vocab_size=VOCAB, seed=0, max_positions=64).model
    # Initialised in float32, then rounded: the same weights up to bfloat16 precision.
    assert torch.equal(
        lm.model.get_output_embeddings().weight, f32.get_output_embeddings().weight.to(torch.bfloat16)
    )


# --- freezing -----------------------------------------------------------------------------


def test_freeze_first_blocks_freezes_embedding_and_first_blocks():
    model = build_model(tiny(n_layers=3), vocab_size=VOCAB, seed=0, max_positions=64).model
    assert n_blocks(model) == 3
    freeze_first_blocks(model, 2)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert "gpt_neox.embed_in.weight" in frozen
    assert all(
        any(n.startswith(f"gpt_neox.layers.{i}.") for i in (0, 1)) or n == "gpt_neox.embed_in.weight"
        for n in frozen
    )
    assert all(p.requires_grad for p in model.gpt_neox.layers[2].parameters())
    assert (
        model.get_output_embeddings().weight.requires_grad
        and model.gpt_neox.final_layer_norm.weight.requires_grad
    )
    with pytest.raises(UserError, match=r"model.freeze_blocks must be in \[0, 3\] .* got 4"):
        freeze_first_blocks(model, 4)


def test_build_model_applies_freeze_blocks_and_counts_trainable():
    lm = build_model(tiny(freeze_blocks=1), vocab_size=VOCAB, seed=0, max_positions=64)
    trainable = sum(p.numel() for p in lm.model.parameters() if p.requires_grad)
    assert lm.provenance["n_trainable"] == trainable < lm.provenance["n_params"]
    assert lm.provenance["freeze_blocks"] == 1
    assert freeze_first_blocks(lm.model, 0) is None  # 0 freezes nothing more


# --- pretrained (the hub path, exercised on local folders) --------------------------------


@pytest.fixture(scope="module")
def saved_neox(tmp_path_factory):
    model = build_model(tiny(), vocab_size=VOCAB, seed=5, max_positions=64).model
    path = tmp_path_factory.mktemp("neox")
    model.save_pretrained(path)
    return path, state(model)


@pytest.fixture(scope="module")
def saved_gpt2(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=128,
        n_embd=64,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
    )
    model = GPT2LMHeadModel(config)
    path = tmp_path_factory.mktemp("gpt2")
    model.save_pretrained(path)
    return path, state(model)


def test_pretrained_gpt_neox_from_a_folder_loads_identical_weights(saved_neox):
    path, weights = saved_neox
    lm = build_model(
        ModelConfig(name=str(path), init="pretrained", device="cpu"), VOCAB, seed=99, max_positions=64
    )
    loaded = state(lm.model)
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert lm.model.training and lm.bridge_name == str(path)
    assert lm.provenance["kind"] == "pretrained" and lm.provenance["overrides"] == {}
    json.dumps(lm.provenance)


def test_pretrained_gpt2_loads_identical_weights_with_dropout_off(saved_gpt2):
    path, weights = saved_gpt2
    lm = build_model(
        ModelConfig(name=str(path), init="pretrained", device="cpu"), VOCAB, seed=0, max_positions=128
    )
    loaded = state(lm.model)
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    c = lm.model.config
    assert (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == (0.0, 0.0, 0.0)
    assert all(m.p == 0.0 for m in lm.model.modules() if isinstance(m, torch.nn.Dropout))
    assert n_blocks(lm.model) == 2
    ids = torch.arange(16).unsqueeze(0)
    assert torch.equal(lm.model(ids).logits, lm.model(ids).logits)


def test_freezing_gpt2_freezes_token_and_position_embeddings(saved_gpt2):
    path, _ = saved_gpt2
    model = build_model(
        ModelConfig(name=str(path), init="pretrained", device="cpu", freeze_blocks=1),
        VOCAB,
        seed=0,
        max_positions=128,
    ).model
    t = model.transformer
    assert not t.wte.weight.requires_grad and not t.wpe.weight.requires_grad
    assert not any(p.requires_grad for p in t.h[0].parameters())
    assert all(p.requires_grad for p in t.h[1].parameters())


def test_pretrained_rejects_too_long_context_and_too_large_vocab(saved_gpt2):
    cfg = ModelConfig(name=str(saved_gpt2[0]), init="pretrained", device="cpu")
    with pytest.raises(UserError, match=r"context_length \(129\) exceeds the 128 positions model"):
        build_model(cfg, VOCAB, seed=0, max_positions=129)
    with pytest.raises(UserError, match=r"tokenizer has 301 tokens but .* embeds only 300"):
        build_model(cfg, VOCAB + 1, seed=0, max_positions=64)


def test_random_init_from_a_local_config_folder(saved_neox):
    path, weights = saved_neox
    cfg = ModelConfig(name=str(path), init="pythia", d_model=0, n_layers=0, n_heads=0, device="cpu")
    lm = build_model(cfg, vocab_size=VOCAB, seed=0, max_positions=64)
    assert (lm.model.config.hidden_size, lm.model.config.num_hidden_layers) == (64, 2)
    assert lm.provenance["kind"] == "random" and lm.provenance["overrides"] == {}
    assert lm.bridge_name == str(path)
    qkv = lm.model.gpt_neox.layers[0].attention.query_key_value.weight
    assert not torch.equal(qkv, weights["gpt_neox.layers.0.attention.query_key_value.weight"])
    assert abs(qkv.std().item() / math.sqrt(2 / (5 * 64)) - 1) < 0.1


def test_random_init_of_another_architecture(saved_gpt2):
    path, _ = saved_gpt2
    cfg = ModelConfig(name=str(path), init="normal", d_model=128, n_layers=3, n_heads=0, device="cpu")
    lm = build_model(cfg, vocab_size=VOCAB, seed=0, max_positions=64)
    c = lm.model.config
    assert (c.n_embd, c.n_layer, c.n_head) == (128, 3, 4)
    assert abs(lm.model.transformer.h[0].attn.c_attn.weight.std().item() / 0.02 - 1) < 0.1  # GPT-2's Conv1D
    with pytest.warns(UserWarning, match="GPT-NeoX only"):
        lm = build_model(
            ModelConfig(name=str(path), init="pythia", d_model=0, n_layers=0, n_heads=0, device="cpu"),
            vocab_size=VOCAB,
            seed=0,
            max_positions=64,
        )
    assert "GPT-NeoX only" in lm.provenance["init_scheme"]


# --- errors -------------------------------------------------------------------------------


def test_missing_path_is_a_user_error(tmp_path):
    missing = str(tmp_path / "nowhere")
    for init in ("pretrained", "pythia"):
        with pytest.raises(UserError, match=f"^Model path '{missing}' does not exist.$"):
            build_model(ModelConfig(name=missing, init=init, device="cpu"), VOCAB, seed=0, max_positions=64)


def test_folder_without_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="has no config.json"):
        build_model(
            ModelConfig(name=str(tmp_path), init="pretrained", device="cpu"), VOCAB, seed=0, max_positions=64
        )


def test_preset_with_pretrained_init_asks_for_a_hub_id():
    with pytest.raises(
        UserError, match=r"'pythia-1b' is a size preset .* hub id \(e.g. EleutherAI/pythia-1b\)"
    ):
        build_model(
            ModelConfig(name="pythia-1b", init="pretrained", device="cpu"), VOCAB, seed=0, max_positions=64
        )


def test_width_not_divisible_by_heads():
    with pytest.raises(UserError, match=r"model.d_model \(100\) must be divisible by model.n_heads \(8\)"):
        build_model(tiny(d_model=100, n_heads=8), VOCAB, seed=0, max_positions=64)
    with pytest.raises(UserError, match=r"d_model \(100\) .* by model.n_heads \(8\)"):  # the preset's 8 heads
        build_model(tiny(name="pythia-31m", d_model=100, n_heads=0), VOCAB, seed=0, max_positions=64)


def test_unknown_hub_id_offline_is_a_quick_user_error():
    start = time.perf_counter()
    with pytest.raises(
        UserError,
        match=r"^Model 'nobody/no-such-model-xyz' at revision 'step1' was not found locally; "
        r"a hub id needs network access",
    ):
        build_model(
            ModelConfig(name="nobody/no-such-model-xyz", init="pretrained", revision="step1", device="cpu"),
            VOCAB,
            seed=0,
            max_positions=64,
        )
    with pytest.raises(
        UserError, match=r"'pythia-15m' was not found locally and is not a size preset \(pythia-14m, "
    ):
        build_model(
            ModelConfig(name="pythia-15m", init="pythia", device="cpu"), VOCAB, seed=0, max_positions=64
        )
    assert time.perf_counter() - start < 5


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="'cuda:0' was asked for but CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(UserError, match="Unknown device 'gpu-please'"):
        resolve_device("gpu-please")
    with pytest.raises(UserError, match="model.dtype must be"):
        build_model(tiny(dtype="float64"), VOCAB, seed=0, max_positions=64)
