"""TransformerLens names from a table per architecture (no bridge boot, no TransformerLens import)
are exactly the names the bridge gives."""

import json
import os
import subprocess
import sys

import pytest
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXForCausalLM

from arprobe.errors import UserError
from arprobe.models import naming
from arprobe.models.naming import architecture_key, boot_bridge_names, bridge_names, expand_table, names_table
from arprobe.models.text import PYTHIA_PRESETS, build_config
from arprobe.models.tl_tables import BY_CLASS, GPT2, GPT_NEOX
from arprobe.tasks.tokenizer import train_bpe_tokenizer
from arprobe.trainer.config import load_config

TEXTS = ["The loss on a document rises after it is trained and falls before it returns."] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_bpe_tokenizer(TEXTS, 300, cache_dir=tmp_path_factory.mktemp("tok"))


def preset(name: str, layers: int = 0) -> GPTNeoXForCausalLM:
    """A preset's architecture, configured as a run builds it, at a small width (names do not
    depend on sizes)."""
    model_cfg = load_config(None, {"model.name": name, "d_model": 32, "n_heads": 4, "n_layers": layers}).model
    config, _ = build_config(model_cfg, vocab_size=300, max_positions=64)
    return GPTNeoXForCausalLM(config)


def same(a: naming.ModelNames, b: naming.ModelNames) -> bool:
    return (
        list(a.components.items()) == list(b.components.items())
        and a.hook_names == b.hook_names
        and a.n_blocks == b.n_blocks
    )


@pytest.mark.parametrize("name", ["tiny", "pythia-14m"])
def test_shipped_gpt_neox_table_is_what_the_bridge_gives(tokenizer, name):
    model = preset(name)
    from_bridge = boot_bridge_names(model, tokenizer, "EleutherAI/pythia-14m")
    assert "transformer_lens" in sys.modules  # the bridge really ran
    assert names_table(from_bridge) == GPT_NEOX
    assert same(expand_table(GPT_NEOX, from_bridge.n_blocks), from_bridge)
    assert len(from_bridge.components) == 4 + 9 * from_bridge.n_blocks
    assert from_bridge.components["blocks.3.attn"] == "gpt_neox.layers.3.attention"


@pytest.mark.parametrize("layers", [2, 3])
def test_shipped_gpt2_table_is_what_the_bridge_gives(tokenizer, layers):
    config = GPT2Config(vocab_size=300, n_embd=32, n_layer=layers, n_head=4, n_positions=64)
    from_bridge = boot_bridge_names(GPT2LMHeadModel(config), tokenizer, "gpt2")
    assert "transformer_lens" in sys.modules  # the bridge really ran
    assert names_table(from_bridge) == GPT2 == BY_CLASS["GPT2LMHeadModel"]
    assert same(expand_table(GPT2, layers), from_bridge)
    assert from_bridge.components["blocks.1.attn"] == "transformer.h.1.attn"
    assert len(from_bridge.hook_names) == len(GPT2["hooks"]) + layers * len(GPT2["block_hooks"])


def test_all_gpt_neox_presets_share_one_architecture_key():
    keys = {architecture_key(preset(name, layers=2)) for name in PYTHIA_PRESETS}
    assert len(keys) == 1


def test_a_table_made_at_one_depth_gives_the_bridges_names_at_another(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("ARPROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(naming, "SHIPPED", {})  # no shipped table: the cache alone
    boots = []
    real = naming.boot_bridge_names
    monkeypatch.setattr(naming, "boot_bridge_names", lambda *a: boots.append(1) or real(*a))
    shallow, deep = preset("tiny", layers=2), preset("tiny", layers=5)
    first = bridge_names(shallow, tokenizer, "EleutherAI/pythia-14m")
    cached = list((tmp_path / "tl_names").glob("*.json"))
    assert len(boots) == 1 and [p.stem for p in cached] == [architecture_key(shallow)]
    assert json.loads(cached[0].read_text()) == names_table(first)
    second = bridge_names(deep, tokenizer, "EleutherAI/pythia-14m")
    assert len(boots) == 1  # read from the cache: no second boot
    assert same(second, real(deep, tokenizer, "EleutherAI/pythia-14m"))
    assert second.n_blocks == 5 and second.components["blocks.4.mlp"] == "gpt_neox.layers.4.mlp"


def test_a_damaged_cached_table_is_ignored_and_rewritten(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("ARPROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(naming, "SHIPPED", {})
    model = preset("tiny", layers=2)
    path = tmp_path / "tl_names" / f"{architecture_key(model)}.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"format": 1, "before": []}')
    names = bridge_names(model, tokenizer, "EleutherAI/pythia-14m")
    assert same(names, boot_bridge_names(model, tokenizer, "EleutherAI/pythia-14m"))
    assert json.loads(path.read_text()) == names_table(names)


def test_blocks_that_differ_make_no_table():
    names = naming.ModelNames(
        components={"blocks.0.attn": "h.0.attn", "blocks.1.attn": "h.1.self_attn"},
        hook_names={"blocks.0.hook_out", "blocks.1.hook_out"},
        n_blocks=2,
    )
    assert names_table(names) is None


def test_preparing_the_default_run_does_not_import_transformer_lens(tmp_path):
    """The default text run's names come from the table: TransformerLens is never imported."""
    code = (
        "import sys\n"
        "from arprobe.trainer.config import load_config\n"
        "from arprobe.tasks.text import TextLM\n"
        "p = TextLM.prepare(load_config(None, {'n_docs': 2, 'out': sys.argv[1]}))\n"
        "assert p.names.components['unembed'] == 'lm_head', p.names.components\n"
        "print(sorted(m for m in sys.modules if m.startswith('transformer_lens')))\n"
    )
    # A cache that already holds the table (the shipped one is only for its own library versions).
    model = preset("tiny")
    cache = tmp_path / "cache"
    (cache / "tl_names").mkdir(parents=True)
    (cache / "tl_names" / f"{architecture_key(model)}.json").write_text(json.dumps(GPT_NEOX))
    env = dict(os.environ, ARPROBE_CACHE=str(cache), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "runs")], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_without_transformer_lens_a_run_takes_the_shipped_table_of_its_class(
    tokenizer, tmp_path, monkeypatch, caplog
):
    """An install where TransformerLens cannot be imported (a GPU image without it, an install
    without dependencies) still trains: GPT-NeoX and GPT-2 take their shipped tables, other classes
    Hugging Face module paths, each with a warning, and a TransformerLens name then says why it is
    unknown."""
    from transformers import OPTConfig, OPTForCausalLM

    monkeypatch.setenv("ARPROBE_CACHE", str(tmp_path))
    monkeypatch.setattr(naming, "SHIPPED", {})  # as for versions no table was made with
    monkeypatch.setitem(sys.modules, "transformer_lens.model_bridge", None)  # import fails
    model = preset("tiny", layers=3)
    with caplog.at_level("WARNING", logger="arprobe.models.naming"):
        names = bridge_names(model, tokenizer, "EleutherAI/pythia-14m")
    assert same(names, expand_table(GPT_NEOX, 3))
    assert names.components["blocks.2.attn"] == "gpt_neox.layers.2.attention"
    assert "ln_final.hook_normalized" in names.hook_names
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith(
            "TransformerLens cannot be imported (import of transformer_lens.model_bridge halted; None in "
            "sys.modules); using the names TransformerLens 4.3.0 under transformers 5.25.0 gives for "
            "GPTNeoXForCausalLM (shipped table)."
        )
    )
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=300, n_positions=32))
    names = bridge_names(gpt2, tokenizer, "gpt2")
    assert same(names, expand_table(GPT2, 2)) and names.components["unembed"] == "lm_head"
    assert caplog.records[-1].getMessage().endswith("gives for GPT2LMHeadModel (shipped table).")
    opt = OPTForCausalLM(
        OPTConfig(num_hidden_layers=2, hidden_size=16, num_attention_heads=2, ffn_dim=32, vocab_size=300)
    )
    names = bridge_names(opt, tokenizer, "facebook/opt-125m")
    assert names.components["model.decoder.layers.1"] == "model.decoder.layers.1" and not names.hook_names
    assert caplog.records[-1].getMessage().endswith("using Hugging Face module names.")
    with pytest.raises(UserError) as error:
        names.module_path("unembed")
    assert str(error.value).startswith("Unknown layer 'unembed'; known: lm_head, model, model.decoder")
    assert str(error.value).endswith(
        "(layers and hooks go by Hugging Face module paths here, e.g. model, because TransformerLens "
        "cannot be imported (import of transformer_lens.model_bridge halted; None in sys.modules; pip "
        "install transformer-lens))"
    )
    with pytest.raises(UserError, match=r"^Unknown activation hook 'ln_final.hook_normalized' \(layers and"):
        names.hook_target("ln_final.hook_normalized")
