"""`arprobe pretrain`: checkpoint steps, the corpus and its dedup against the fine-tuning documents, a
one-size ladder of a few steps (files, provenance, revisions, bit-exact resume), and fine-tuning from it."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from arprobe.cli.main import main
from arprobe.errors import UserError
from arprobe.pretrain.corpus import NGRAM, build_corpus, load_corpus, word_ngrams
from arprobe.pretrain.ladder import Settings, checkpoint_steps
from arprobe.pretrain.train import Batches, lr_at, pretrain_ladder

FINETUNE = [
    "The assert statement is a convenient way to insert debugging assertions into a program.\n\n"
    "Assignment statements are used to bind or rebind names to values and to modify attributes.",
]


def test_checkpoint_steps_are_pythia_like():
    assert checkpoint_steps(512, 128) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512]
    assert checkpoint_steps(16, 4) == [0, 1, 2, 4, 8, 12, 16]
    assert checkpoint_steps(5, 128) == [0, 1, 2, 4, 5]


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    s = Settings(tokens=100 * 1024, warmup=0.05)  # 100 steps, 5 of warmup
    assert s.steps == 100
    assert lr_at(0, s) == pytest.approx(2e-4) and lr_at(4, s) == pytest.approx(1e-3)
    assert lr_at(5, s) == pytest.approx(1e-3)
    assert lr_at(100, s) == pytest.approx(1e-4)


def test_dedup_drops_finetune_overlap_duplicates_and_short_paragraphs():
    pairs = [
        ("a", "Return the sum of the two numbers given as arguments to this function."),
        # a verbatim fine-tuning paragraph, and one sharing only an 8-word run, next to a clean one
        (
            "a",
            FINETUNE[0].split("\n\n")[1] + "\n\nA clean paragraph about parsing configuration files quickly.",
        ),
        ("b", "We note that the assert statement is a convenient way to insert checks."),
        ("b", "Return the sum of the two numbers given as arguments to this function."),  # duplicate
        ("b", "Returns\n\nArgs: x"),  # too short
    ]
    corpus = build_corpus(pairs, "test", FINETUNE)
    assert corpus.texts == [
        "Return the sum of the two numbers given as arguments to this function.",
        "A clean paragraph about parsing configuration files quickly.",
    ]
    assert (corpus.dropped_overlap, corpus.dropped_duplicate, corpus.dropped_short) == (2, 1, 2)
    assert corpus.sources == {"a": 2, "b": 3} and corpus.paragraphs_read == 7
    info = corpus.info()
    assert info["documents"] == 2 and len(info["sha256"]) == 64


def test_python_docs_corpus_shares_no_word_run_with_the_pydoc_topics():
    from arprobe.tasks.text_data import load_texts
    from arprobe.trainer.config import DataConfig

    topics, _ = load_texts(DataConfig(source="pydoc"))
    corpus = load_corpus("python-docs", topics, max_chars=150_000)
    assert sum(len(t) for t in corpus.texts) >= 150_000
    assert set(corpus.sources) == {"stdlib docstrings"}  # read in order: the stdlib comes first
    banned = set().union(*(word_ngrams(t) for t in topics))
    assert all(word_ngrams(t).isdisjoint(banned) for t in corpus.texts)
    assert corpus.dropped_overlap > 0  # the stdlib's docstrings do repeat the reference manual
    # and a topic planted in the stream is dropped whole
    planted = build_corpus([("x", topics[3])], "planted", topics)
    assert planted.texts == [] and planted.dropped_overlap > 0
    assert NGRAM == 8


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega tensor module value".split()
    paragraphs = [" ".join(rng.choice(words, size=40)) + f" item{i}." for i in range(120)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(paragraphs))
    return path


def tiny_settings(corpus_file, **kw) -> Settings:
    values = dict(
        sizes=["700k"],
        tokens=6 * 2 * 32,
        seq_len=32,
        batch_size=2,
        checkpoint_every=2,
        corpus=str(corpus_file),
        vocab_size=512,
        val_sequences=4,
    )
    values.update(kw)
    return Settings(**values)


@pytest.fixture(scope="module")
def ladder(tmp_path_factory, corpus_file):
    folder = tmp_path_factory.mktemp("ladders") / "t"
    meta = pretrain_ladder(folder, "t", tiny_settings(corpus_file), progress=False)
    return folder, meta["700k"]


def test_ladder_folder_is_laid_out_like_the_hub(ladder):
    folder, meta = ladder
    size = folder / "700k"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "arprobe_pretrain.json"):
        assert (size / name).is_file(), name
    revisions = sorted(p.name for p in size.iterdir() if p.is_dir())
    assert revisions == ["step0", "step1", "step2", "step4", "step6"]
    for rev in revisions:
        assert (size / rev / "model.safetensors").is_file() and (size / rev / "tokenizer.json").is_file()
    assert not (size / "_resume").exists()
    assert (folder / "corpus" / "tokens.npy").is_file() and (folder / "ladder.json").is_file()
    final, last = load_file(size / "model.safetensors"), load_file(size / "step6" / "model.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in final)
    first = load_file(size / "step0" / "model.safetensors")
    assert not torch.equal(first["gpt_neox.embed_in.weight"], final["gpt_neox.embed_in.weight"])


def test_provenance_says_corpus_tokens_steps_seed_and_version(ladder):
    folder, meta = ladder
    stored = json.loads((folder / "700k" / "step4" / "arprobe_pretrain.json").read_text())
    assert stored["revision"] == "step4" and stored["step"] == 4 and stored["tokens_seen"] == 4 * 64
    assert stored["steps_total"] == 6 and stored["tokens_total"] == 384
    assert stored["settings"]["seed"] == 0 and stored["arprobe_version"]
    assert stored["corpus"]["sha256"] == meta["corpus"]["sha256"] and stored["corpus"]["tokens"] > 0
    assert stored["corpus"]["deduplicated_against"].startswith("pydoc_data.topics")
    assert stored["n_params"] == meta["n_params"] and 0 < stored["val_loss"] < 10
    assert meta["revision"] == "step6" and meta["tokens_seen"] == 384


def test_step0_is_the_pythia_init_and_revisions_load_through_the_model_loader(ladder):
    from arprobe.models.text import build_model
    from arprobe.pretrain.train import build_size
    from arprobe.trainer.config import ModelConfig

    folder, meta = ladder
    fresh = dict(build_size("700k", 512, tiny_settings("x")).model.named_parameters())
    cfg = ModelConfig(name=str(folder / "700k"), init="pretrained", revision="step0", device="cpu")
    step0 = build_model(cfg, 512, seed=7, max_positions=32)
    assert all(torch.equal(p, fresh[n]) for n, p in step0.model.named_parameters())
    assert step0.provenance["pretrain"]["step"] == 0 and step0.provenance["path"].endswith("step0")
    final = build_model(ModelConfig(name=str(folder / "700k"), init="pretrained", device="cpu"), 512, 7, 32)
    assert final.provenance["pretrain"]["revision"] == "step6"
    assert meta["val_loss"] < step0.provenance["pretrain"]["val_loss"]  # it learned something


def test_resume_continues_bit_for_bit(tmp_path, corpus_file, ladder):
    settings = tiny_settings(corpus_file)
    stopped = pretrain_ladder(tmp_path / "r", "r", settings, progress=False, stop_after=3)["700k"]
    assert stopped["stopped"] and stopped["step"] == 3
    assert (tmp_path / "r" / "700k" / "_resume" / "state.safetensors").is_file()
    pretrain_ladder(tmp_path / "r", "r", settings, progress=False)
    resumed = load_file(tmp_path / "r" / "700k" / "model.safetensors")
    straight = load_file(ladder[0] / "700k" / "model.safetensors")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_other_settings_on_an_existing_ladder_are_refused(ladder, corpus_file):
    folder, _ = ladder
    with pytest.raises(UserError, match=r"was trained with other settings \(lr, seed\); resume it"):
        pretrain_ladder(folder, "t", tiny_settings(corpus_file, lr=2e-3, seed=1), progress=False)


def test_batches_are_a_function_of_the_step():
    s = Settings(seq_len=4, batch_size=3, val_sequences=2, seed=5)
    batches = Batches(np.arange(40, dtype=np.uint16), s)  # 10 sequences: 8 train, 2 held out
    assert batches.n_train == 8 and batches.held_out().tolist() == [list(range(32, 36)), list(range(36, 40))]
    seen = torch.cat([batches.train(k) for k in range(3)])[:8]  # the first pass covers every train sequence
    assert sorted(seen[:, 0].tolist()) == list(range(0, 32, 4))
    assert torch.equal(batches.train(2), Batches(np.arange(40, dtype=np.uint16), s).train(2))


def test_finetuning_from_a_revision_loads_it_and_keeps_its_provenance(ladder, tmp_path):
    from arprobe.storage import RunStore
    from arprobe.trainer.loop import run
    from tests.conftest import tiny_config

    folder, _ = ladder
    name = str(folder / "700k")
    cfg = tiny_config(
        tmp_path,
        init="pretrained",
        **{
            "model.name": name,
            "revision": "step4",
            "d_model": 0,
            "n_layers": 0,
            "n_heads": 0,
            "threads": 1,
            "epochs": 2,
        },
    )
    result = run(cfg, progress=False)
    assert result.status == "complete"
    with RunStore(result.path) as store:
        info = store.model_info
    assert info["pretrain"]["revision"] == "step4" and info["pretrain"]["tokens_seen"] == 256
    assert info["path"].endswith("700k/step4") and info["vocab_size"] == 512
    assert info["tokenizer"] == name  # the ladder's own tokenizer, through data.tokenizer = auto


def test_missing_revision_and_unknown_size_are_one_line_errors(ladder, capsys):
    from arprobe.models.hub import check_hub_model

    folder, _ = ladder
    with pytest.raises(
        UserError, match=r"has no revision 'step5'; it has step0, step1, step2, step4, step6\.$"
    ):
        check_hub_model(str(folder / "700k"), "step5")
    with pytest.raises(UserError, match=r"has no revisions, so --revision 'step1' cannot be loaded"):
        check_hub_model(str(folder / "corpus"), "step1")
    assert main(["pretrain", "--sizes", "3m", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["arprobe pretrain: error: Unknown ladder size '3m'. Available: 700k, 2m, 5m, 17m."]
    assert main(["pretrain", "--tokens", "10", "--dry-run"]) == 2
    assert "is less than one step of 1024 tokens" in capsys.readouterr().err


def test_dry_run_gives_revisions_time_and_disk_per_size(tmp_path, corpus_file):
    from arprobe.pretrain.train import build_size, disk_bytes, dry_run

    settings = tiny_settings(corpus_file)
    text = dry_run(tmp_path / "d", settings, threads=1)
    n_params = build_size("700k", 512, settings).provenance["n_params"]  # vocab 512 here
    lines = text.splitlines()
    assert lines[1].startswith("6 steps of 2 x 32 tokens = 384 tokens per size")
    assert lines[2] == "revisions: step0, step1, step2, step4, step6"
    row = next(line.split() for line in lines if line.strip().startswith("700k"))
    assert row[1] == f"{n_params / 1e6:.2f}M" and row[-1] == "MB"
    # 5 revisions + the final folder in float32, the resume state (weights + 2 moments), tokenizers
    assert disk_bytes(n_params, settings) == 4 * n_params * 6 + 12 * n_params + 6 * 400_000
    assert row[-2] == f"{disk_bytes(n_params, settings) / 1e6:,.0f}"
    assert lines[-1].startswith("total: about ") and not (tmp_path / "d").exists()  # nothing written


def test_a_ladder_size_is_named_by_ladder_and_size(ladder, monkeypatch):
    from arprobe.models import hub
    from arprobe.models.hub import resolve_ladder_name
    from arprobe.pretrain.ladder import default_ladders_dir

    folder, _ = ladder
    monkeypatch.setattr(hub, "ladders_dir", lambda: folder.parent)
    assert default_ladders_dir() == folder.parent  # arprobe pretrain writes where the loader looks
    assert resolve_ladder_name(f"{folder.name}/700k") == str(folder / "700k")
    assert resolve_ladder_name("EleutherAI/pythia-14m") == "EleutherAI/pythia-14m"  # a hub id stays one
    assert resolve_ladder_name(f"{folder.name}/9g") == f"{folder.name}/9g"  # no such size: left to the loader
