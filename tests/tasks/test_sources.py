"""Whole runs from a locally saved model + tokenizer and a save_to_disk dataset: the same code
paths that a hub id (EleutherAI/pythia-1b, abisee/cnn_dailymail) takes with network access."""

import json

import datasets
import numpy as np
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from arprobe.storage import RunStore
from arprobe.tasks.tokenizer import train_bpe_tokenizer
from arprobe.trainer.loop import run
from tests.conftest import tiny_config

ARTICLES = [f"Article {i}: " + " ".join(f"word{(i * 7 + j) % 50}" for j in range(60)) for i in range(12)]


def test_run_from_saved_pretrained_model_and_dataset(tmp_path):
    tokenizer = train_bpe_tokenizer(ARTICLES, 400, cache_dir=tmp_path / "tok")
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(
        GPTNeoXConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    datasets.Dataset.from_dict({"article": ARTICLES, "highlights": ["-"] * 12}).save_to_disk(tmp_path / "cnn")

    cfg = tiny_config(
        tmp_path,
        name="pre",
        **{
            "model.name": str(tmp_path / "model"),
            "init": "pretrained",
            "data.source": str(tmp_path / "cnn"),
            "data.field": "article",
            "epochs": 2,
        },
    )
    result = run(cfg, progress=False)
    assert result.status == "complete"
    with RunStore(result.path) as store:
        info = store.model_info
        assert info["kind"] == "pretrained" and info["name"] == str(tmp_path / "model")
        assert info["tokenizer"] == str(tmp_path / "model")  # the model's own tokenizer, not a new BPE
        _, _, texts = store.docs()
        assert all(t.startswith("Article") for t in texts)
        # row 0 is the loss of the saved weights, so it equals a direct evaluation of them
        tokens, lengths, _ = store.docs()
        first = torch.as_tensor(tokens[:1, :32], dtype=torch.long)
        with torch.no_grad():
            logits = model(input_ids=first).logits[0, :-1]
        n = int(lengths[0]) - 1
        expected = torch.nn.functional.cross_entropy(logits[:n], first[0, 1 : n + 1]).item()
        np.testing.assert_allclose(store.eval_matrix()[0, 0], expected, rtol=1e-5)
        assert json.loads(store.h5.attrs["config"])["data"]["field"] == "article"
