"""Seeded count-sketches: hand-checkable properties, determinism, accuracy on a real run, and the store."""

import numpy as np
import pytest
import torch

from arprobe.storage import RunStore
from arprobe.storage import sketch as sketch_module
from arprobe.storage.sketch import CountSketch, sketch_array, stored_dim
from arprobe.trainer.recorders import SKETCH_SEED
from tests.conftest import tiny_config

# A d512 model on the 1024-token BPE: its unembedding has D = 1024 * 512 = 524288 values, sketched
# to k = 2^17 (std of a cosine ~ sqrt(2/k) = 0.004, so 0.02 is a 5-sigma bound).
WIDE = dict(
    vocab_size=1024,
    d_model=512,
    n_heads=4,
    weights=["unembed"],
    grads=["unembed"],
    activations_every=0,
    checkpoints="none",
)
D, K_SKETCH = 1024 * 512, 1 << 17


def test_stored_dim_sketches_only_what_it_at_least_halves():
    assert stored_dim(1000, 0) == 1000  # 0: always exact
    assert stored_dim(1000, 500) == 1000  # exactly twice: kept exact
    assert stored_dim(1001, 500) == 500
    # the default keeps the CPU default model's unembedding (4096 x 256 = 2^20) exact
    assert stored_dim(4096 * 256, 1 << 19) == 4096 * 256
    assert stored_dim(50304 * 2048, 1 << 19) == 1 << 19  # Pythia-1B's is sketched


def test_one_hot_vectors_land_in_their_bucket_with_their_sign():
    s = CountSketch(full_dim=10, dim=4, seed=3)
    bucket, sign = s.buckets(0, 10)
    for i in range(10):
        x = torch.zeros(10)
        x[i] = 2.0
        expected = torch.zeros(4)
        expected[bucket[i]] = 2.0 * sign[i]
        assert torch.equal(s.apply(x), expected)
    assert set(sign.tolist()) <= {-1.0, 1.0} and 0 <= int(bucket.min()) and int(bucket.max()) < 4


def test_sketch_is_linear_and_preserves_inner_products_in_expectation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20000, generator=g), torch.randn(20000, generator=g)
    s = CountSketch(full_dim=20000, dim=2048, seed=5)
    torch.testing.assert_close(s.apply(2 * x - y), 2 * s.apply(x) - s.apply(y), atol=1e-4, rtol=1e-5)
    # <Sx, Sx> estimates |x|^2 (std sqrt(2/k) |x|^2 = 3%): averaged over 20 seeds, within 2%
    ratios = [
        float(CountSketch(20000, 2048, seed).apply(x).square().sum() / x.square().sum()) for seed in range(20)
    ]
    assert abs(np.mean(ratios) - 1) < 0.02


def test_the_projection_is_fixed_by_the_seed():
    # Pinned: a change here makes every stored sketch incomparable with new ones.
    bucket, sign = CountSketch(10**6, 1000, seed=0).buckets(0, 6)
    assert bucket.tolist() == [829, 209, 665, 236, 667, 703]
    assert sign.tolist() == [-1.0, 1.0, -1.0, 1.0, 1.0, 1.0]
    again = CountSketch(10**6, 1000, seed=0).buckets(0, 6)
    assert torch.equal(again[0], bucket) and torch.equal(again[1], sign)
    other = CountSketch(10**6, 1000, seed=1).buckets(0, 6)
    assert not torch.equal(other[0], bucket)
    x = np.random.default_rng(0).normal(size=(3, 5000)).astype(np.float32)
    np.testing.assert_array_equal(sketch_array(x, 100, seed=7), sketch_array(x, 100, seed=7))


def test_parts_rows_and_blocks_do_not_change_the_sketch(monkeypatch):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 7, 11, generator=g), torch.randn(3, 50, generator=g)  # [doc, ...] per parameter
    s = CountSketch(full_dim=7 * 11 + 50, dim=16, seed=2)
    whole = torch.cat([a.reshape(3, -1), b], 1)
    by_parts = s.apply([a, b], batch_dims=1)
    torch.testing.assert_close(by_parts, s.apply(whole, batch_dims=1))
    torch.testing.assert_close(by_parts[1], s.apply(whole[1]))
    monkeypatch.setattr(sketch_module, "BLOCK", {"cpu": 5, "other": 5})  # many small blocks
    torch.testing.assert_close(s.apply([a, b], batch_dims=1), by_parts)


# --- against the exact numbers of a real run --------------------------------------------------


def _cosines(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return unit @ unit.T


def _explained_variance(rows: np.ndarray, n: int = 3) -> np.ndarray:
    centred = rows.astype(np.float64) - rows.mean(axis=0)
    eig = np.linalg.eigvalsh(centred @ centred.T)[::-1]
    return eig[:n] / eig.sum()


@pytest.fixture(scope="module")
def exact_and_sketched(tmp_path_factory):
    """Two runs of the same seed: exact recording, and recording sketched to K_SKETCH values."""
    from arprobe.trainer.loop import run

    out = tmp_path_factory.mktemp("sketch-runs")
    exact = run(tiny_config(out, name="exact", sketch_dim=0, **WIDE), progress=False)
    sketched = run(tiny_config(out, name="sketched", sketch_dim=K_SKETCH, **WIDE), progress=False)
    return exact.path, sketched.path


def test_cosines_and_pca_from_sketches_match_the_exact_ones(exact_and_sketched):
    with RunStore(exact_and_sketched[0]) as store:
        _, weights = store.weights("unembed")  # [S, D]
        _, grads = store.grads("unembed")  # [G, T, D]
    assert weights.shape[1] == D  # recorded exactly
    w_sketch = sketch_array(weights, K_SKETCH, SKETCH_SEED)
    g_sketch = sketch_array(grads, K_SKETCH, SKETCH_SEED)
    # per-document gradient cosines (gradient_similarity), at every recorded episode
    for exact, approx in zip(grads, g_sketch):
        assert np.abs(_cosines(approx) - _cosines(exact)).max() < 0.02
    # cosines of weight snapshots minus their mean (the residuals weight_residual_similarity compares)
    centred = weights - weights.mean(axis=0)
    assert np.abs(_cosines(w_sketch - w_sketch.mean(axis=0)) - _cosines(centred)).max() < 0.02
    # PCA of the weight trajectory (pca_weights): explained variance of the top 3 components
    np.testing.assert_allclose(_explained_variance(w_sketch), _explained_variance(weights), atol=0.02)


def test_sketched_store_carries_its_projection_and_round_trips(exact_and_sketched):
    with RunStore(exact_and_sketched[0]) as exact, RunStore(exact_and_sketched[1]) as sketched:
        assert exact.sketch_info("weights", "unembed") is None
        for kind in ("weights", "grads"):
            assert sketched.sketch_info(kind, "unembed") == {
                "dim": K_SKETCH,
                "seed": SKETCH_SEED,
                "full_dim": D,
            }
        (we, wx), (ws, wv) = exact.weights("unembed"), sketched.weights("unembed")
        (ge, gx), (gs, gv) = exact.grads("unembed"), sketched.grads("unembed")
        np.testing.assert_array_equal(we, ws)
        np.testing.assert_array_equal(ge, gs)
        assert wv.shape == (len(ws), K_SKETCH) and gv.shape == (len(gs), 5, K_SKETCH)
        # same seed, same training: the stored sketch is the sketch of the exact recording
        np.testing.assert_allclose(wv, sketch_array(wx, K_SKETCH, SKETCH_SEED), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(gv, sketch_array(gx, K_SKETCH, SKETCH_SEED), rtol=1e-5, atol=1e-7)
        # recording never touches training: the two runs are the same computation, bit for bit
        np.testing.assert_array_equal(exact.eval_matrix(), sketched.eval_matrix())
