"""Shared test set-up: no network, an isolated cache, and one tiny real run per session."""

import os
import tempfile

# Before any test module imports huggingface_hub / datasets, which read these once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("ARPROBE_CACHE", tempfile.mkdtemp(prefix="arprobe-test-cache-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY = {
    "n_docs": 5,
    "context_length": 32,
    "steps_per_doc": 3,
    "epochs": 3,
    "vocab_size": 512,
    "d_model": 64,
    "n_layers": 2,
    "n_heads": 2,
}


def tiny_config(tmp_path, **overrides):
    """A RunConfig for a run of a few seconds: T=5, C=32, M=3, E=3, a 2-block d64 model."""
    from arprobe.trainer.config import load_config

    values = {**TINY, "out": str(tmp_path), "name": "tiny"}
    values.update(overrides)
    return load_config(None, values)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Path of a finished tiny cyclic run with the default recording (shared, read-only)."""
    from arprobe.trainer.loop import run

    out = tmp_path_factory.mktemp("runs")
    result = run(tiny_config(out), progress=False)
    assert result.status == "complete"
    return result.path.parent


@pytest.fixture
def one_thread():
    """Batch-size-1 steps on shared cores: one torch thread for the test (a run sets its own)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
