"""TransformerLens names for Hugging Face models, and capture by forward hooks == the bridge's cache."""

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

from arprobe.errors import UserError
from arprobe.models.naming import bridge_names, capture
from arprobe.tasks.tokenizer import train_bpe_tokenizer

TEXTS = ["The loss on a document rises after it is trained and falls before it returns."] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_bpe_tokenizer(TEXTS, 300, cache_dir=tmp_path_factory.mktemp("tok"))


def neox():
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=300,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )


def test_gpt_neox_components_map_to_hf_modules(tokenizer):
    names = bridge_names(neox(), tokenizer, "EleutherAI/pythia-14m")
    assert names.components["embed"] == "gpt_neox.embed_in"
    assert names.components["blocks.2.attn"] == "gpt_neox.layers.2.attention"
    assert names.components["blocks.0.mlp"] == "gpt_neox.layers.0.mlp"
    assert names.components["ln_final"] == "gpt_neox.final_layer_norm"
    assert names.components["unembed"] == "lm_head"
    assert names.expand("blocks.mid.attn") == "blocks.1.attn"


def test_parameter_groups_cover_every_parameter_once(tokenizer):
    model = neox()
    groups = bridge_names(model, tokenizer, "EleutherAI/pythia-14m").parameter_groups(model)
    flat = [n for g in groups.values() for n in g]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    assert list(groups)[:5] == ["embed", "blocks.0.ln1", "blocks.0.ln2", "blocks.0.attn", "blocks.0.mlp"]
    assert list(groups)[-2:] == ["ln_final", "unembed"]


@pytest.mark.parametrize(
    "hook",
    [
        "ln_final.hook_normalized",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_pre",
        "blocks.0.attn.hook_out",
        "blocks.2.mlp.hook_out",
    ],
)
def test_forward_hook_capture_equals_the_bridge(tokenizer, hook):
    from transformer_lens.model_bridge import TransformerBridge

    model = neox()
    names = bridge_names(model, tokenizer, "EleutherAI/pythia-14m")
    tokens = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture(model, names, [hook]) as cache:
        model(input_ids=tokens)
    bridge = TransformerBridge.boot_transformers(
        "EleutherAI/pythia-14m", hf_model=copy.deepcopy(model), tokenizer=tokenizer
    )
    with torch.no_grad():
        _, expected = bridge.run_with_cache(tokens, names_filter=[hook])
    assert cache[hook].shape == expected[hook].shape == (2, 16, 32)
    torch.testing.assert_close(cache[hook], expected[hook], atol=1e-5, rtol=1e-5)
    assert not model.gpt_neox.final_layer_norm._forward_hooks  # hooks removed afterwards


def test_gpt2_names_and_tied_embedding(tokenizer):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    names = bridge_names(model, tokenizer, "gpt2")
    assert names.components["blocks.1.attn"] == "transformer.h.1.attn"
    assert names.components["ln_final"] == "transformer.ln_f"
    groups = names.parameter_groups(model)
    assert "transformer.wte.weight" in groups["embed"]  # tied with lm_head: counted once


def test_unknown_hook_is_a_user_error(tokenizer):
    names = bridge_names(neox(), tokenizer, "EleutherAI/pythia-14m")
    with pytest.raises(UserError, match="Unknown activation hook 'blocks.9.hook_resid_post'"):
        names.hook_target("blocks.9.hook_resid_post")
    with pytest.raises(UserError, match="Unknown layer 'blocks.7.attn'"):
        names.module_path("blocks.7.attn")
