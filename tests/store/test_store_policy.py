"""The default recording (sketched unembedding and gradients, one checkpoint) against exact
recording of the same training: every built-in probe's headline numbers agree within the sketch's
error, and the finished store carries no resume point."""

import math
import re

import numpy as np
import pytest

from arprobe.storage import RunStore
from arprobe.trainer.loop import run
from tests.conftest import tiny_config

SKETCH_DIM = 8192  # the tiny model's unembedding (32,768 values) and attention grads (16,640) get sketched
# A count-sketch estimates inner products to sqrt(2 / k) |x||y| (one standard deviation);
# cosines, variance fractions and PCA coordinates inherit that: four standard deviations.
TOLERANCE = 4 * math.sqrt(2 / SKETCH_DIM)
PROBES = [
    "pca_weights",
    "gradient_similarity",
    "weight_residual_similarity",
    "model_clock",
    "pairwise_recovery",
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy")
    exact = run(tiny_config(out, name="exact", sketch_dim=0, checkpoints="epoch"), progress=False).path
    sketched = run(tiny_config(out, name="sketched", sketch_dim=SKETCH_DIM), progress=False).path
    return exact, sketched


def headline(path, name, tmp_path):
    from arprobe.probes.registry import default_registry
    from arprobe.probes.runner import run_probe

    probe = default_registry().get(name)
    probe.progress = False
    with RunStore(path) as store:
        outcome = run_probe(probe, [store], tmp_path / path.parent.name)
    assert outcome.status == "ok", outcome.reason
    return outcome.headline


def test_sketched_default_recording_is_what_it_says(pair):
    exact, sketched = pair
    with RunStore(sketched) as store, RunStore(exact) as exact_store:
        assert store.sketch_info("weights", "unembed")["dim"] == SKETCH_DIM
        assert store.checkpoint_episodes().tolist() == [10]  # the end of epoch 2 of 3
        # the recording policy never touches training: the same computation, bit for bit
        np.testing.assert_array_equal(store.eval_matrix(), exact_store.eval_matrix())
        unembed = store.sketch_info("weights", "unembed")["full_dim"]
        grads = store.sketch_info("grads", "blocks.1.attn")["full_dim"]
        n_params = store.model_info["n_params"]
    # what the sketches and the two dropped checkpoints save: 16 unembedding snapshots, 3 epochs x 5
    # documents of gradients, 2 models (float32); HDF5's chunking may round either file up a little
    saved = 4 * (16 * (unembed - SKETCH_DIM) + 15 * (grads - SKETCH_DIM) + 2 * n_params)
    assert exact.stat().st_size - sketched.stat().st_size >= 0.9 * saved
    assert not list(sketched.parent.glob("*.resume.h5*")) and not list(exact.parent.glob("*.resume.h5*"))


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")  # a number inside a verdict sentence


@pytest.mark.parametrize("name", PROBES)
def test_probe_headlines_survive_the_sketch(pair, name, tmp_path):
    exact, sketched = (headline(p, name, tmp_path) for p in pair)
    assert exact.keys() == sketched.keys()
    for key, want in exact.items():
        got = sketched[key]
        if want is None:
            assert got is None, key
            continue
        if isinstance(want, str):  # a verdict in words with its numbers: the same words, numbers close
            assert NUMBER.sub("#", got) == NUMBER.sub("#", want), key
            want, got = [float(x) for x in NUMBER.findall(want)], [float(x) for x in NUMBER.findall(got)]
        want, got = np.asarray(want, dtype=float), np.asarray(got, dtype=float)
        assert got.shape == want.shape, key
        both = np.isfinite(want) & np.isfinite(got)
        np.testing.assert_array_equal(np.isfinite(want), np.isfinite(got), err_msg=key)
        scale = np.maximum(1.0, np.abs(want[both]))
        assert np.all(np.abs(got[both] - want[both]) <= TOLERANCE * scale), (key, want, got)
