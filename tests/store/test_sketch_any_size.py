"""Count-sketches of any D: the map past 2^31 coordinates (checked without allocating them), its
segments' independence and unbiasedness, and the kept per-parameter map (same sketch, no rehash)."""

import gc

import numpy as np
import pytest
import torch

from arprobe.storage import sketch as sketch_module
from arprobe.storage.sketch import PRIME, CountSketch, segment_seed

P = PRIME  # 2^31 - 1: the coordinates of one segment


def _reference(seed: int, dim: int, coordinate: int) -> tuple[int, float]:
    """(bucket, sign) of one flat coordinate in plain Python integers: the module docstring's map."""
    segment, offset = divmod(coordinate, P)
    h, s = sketch_module._coefficients(segment_seed(seed, segment))

    def poly(c):  # Horner's rule mod p, as the tensor code reduces between steps
        v = c[0] * offset + c[1]
        for a in c[2:]:
            v = (v % P) * offset + a
        return v % P

    return poly(h) % dim, 1.0 - 2.0 * (poly(s) & 1)


@pytest.mark.parametrize(
    "start",
    [0, P - 3, 1 << 31, (1 << 32) - 3, 3 * (1 << 31) + 5, 2_538_623_990],  # 2.8B's last coordinates
)
def test_coordinates_past_2_31_hash_at_their_segment_offset(start):
    s = CountSketch(full_dim=4 * P, dim=65536, seed=0)
    bucket, sign = s.buckets(start, start + 6)  # six coordinates, nothing D-sized
    expected = [_reference(0, 65536, i) for i in range(start, start + 6)]
    assert bucket.tolist() == [b for b, _ in expected]
    assert sign.tolist() == [g for _, g in expected]
    # the compact map says the same: the bucket, with bit 31 (the int32's sign) set where s = -1
    codes = s.codes(start, start + 6)
    assert codes.dtype == torch.int32
    assert codes.tolist() == [b if g > 0 else b - (1 << 31) for b, g in expected]


def test_the_first_segment_is_the_map_stores_always_had():
    # pinned in test_sketch.py for D = 10^6; the same for any D, also past 2^31
    for full_dim in (10**6, P - 1, 2_538_624_000, 10**12):
        bucket, sign = CountSketch(full_dim, 1000, seed=0).buckets(0, 6)
        assert bucket.tolist() == [829, 209, 665, 236, 667, 703]
        assert sign.tolist() == [-1.0, 1.0, -1.0, 1.0, 1.0, 1.0]
    assert segment_seed(7, 0) == 7
    seeds = {segment_seed(0, b) for b in range(1, 2000)} | {segment_seed(1, b) for b in range(1, 2000)}
    assert len(seeds) == 2 * 1999 and not seeds & {0, 1}


def test_constructing_a_sketch_of_any_size_and_refusing_nonsense():
    s = CountSketch(full_dim=2_538_624_000, dim=65536, seed=0)  # Pythia-2.8B's weights/all
    assert s.attrs == {"dim": 65536, "seed": 0, "full_dim": 2_538_624_000}
    assert s.cache_bytes == 4 * 2_538_624_000
    with pytest.raises(ValueError, match="a count-sketch needs D >= 1, got D = 0"):
        CountSketch(full_dim=0, dim=4, seed=0)
    with pytest.raises(ValueError, match="a count-sketch needs 1 <= k < 2"):
        CountSketch(full_dim=10, dim=0, seed=0)


def test_meta_parameters_of_more_than_2_31_values_are_sketched(monkeypatch):
    # A model's parameter list on the meta device: shapes only, nothing allocated.
    monkeypatch.setattr(sketch_module, "BLOCK", {"cpu": 1 << 18, "other": 1 << 28})  # few meta blocks
    parts = [
        torch.empty(50304, 25600, device="meta"),
        torch.empty(1 << 30, device="meta"),
        torch.empty(7, device="meta"),
    ]
    total = sum(p.numel() for p in parts)
    assert total > 1 << 31
    s = CountSketch(full_dim=total, dim=65536, seed=0)
    out = s.apply(parts)
    assert out.shape == (65536,) and out.device.type == "meta" and out.dtype == torch.float32
    rows = s.apply([p.expand(3, *p.shape) for p in parts], batch_dims=1)  # per-document rows
    assert rows.shape == (3, 65536)
    assert not s._kept  # no kept map on meta
    with pytest.raises(AssertionError, match="applied to"):
        s.apply(parts[:2])


@pytest.fixture
def short_segments(monkeypatch):
    """Segments of 1000 coordinates, so a small vector spans many of them."""
    monkeypatch.setattr(sketch_module, "SEGMENT", 1000)


def test_segments_hash_independently(short_segments):
    s = CountSketch(full_dim=3000, dim=16, seed=0)
    bucket, sign = s.buckets(0, 3000)
    # coordinate o of segment 0 and of segment 1 share their offset; with one seed they would share
    # bucket and sign always (a biased sketch). Independent: bucket 1/16 of the time, sign half.
    same_bucket = float((bucket[:1000] == bucket[1000:2000]).float().mean())
    same_sign = float((sign[:1000] == sign[1000:2000]).float().mean())
    assert same_bucket < 0.12 and 0.4 < same_sign < 0.6
    # and segment b is the one-segment map of segment_seed(seed, b)
    for b in (1, 2):
        alone = CountSketch(full_dim=1000, dim=16, seed=segment_seed(0, b)).buckets(0, 1000)
        assert torch.equal(alone[0], bucket[1000 * b : 1000 * (b + 1)])
        assert torch.equal(alone[1], sign[1000 * b : 1000 * (b + 1)])


def test_a_sketch_over_many_segments_preserves_inner_products(short_segments):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, generator=g)
    y = 0.6 * x + 0.8 * torch.randn(20000, generator=g)
    exact_xx, exact_xy = float(x @ x), float(x @ y)
    xx, xy = [], []
    for seed in range(20):
        s = CountSketch(full_dim=20000, dim=2048, seed=seed)  # 20 segments
        sx, sy = s.apply(x), s.apply(y)
        torch.testing.assert_close(s.apply(2 * x - y), 2 * sx - sy, atol=1e-4, rtol=1e-5)  # linear
        xx.append(float(sx @ sx) / exact_xx)
        xy.append(float(sx @ sy) / exact_xy)
    # one seed's std is sqrt(2/k) = 3% (|x||y| / <x,y> = 1.7x that for xy); the mean of 20 seeds is
    # unbiased: within ~3 standard errors
    assert abs(np.mean(xx) - 1) < 0.02
    assert abs(np.mean(xy) - 1) < 0.04
    # and the sketch of one vector equals the dense map's sum, coordinate by coordinate
    s = CountSketch(full_dim=20000, dim=2048, seed=3)
    bucket, sign = s.buckets(0, 20000)
    dense = torch.zeros(2048, dtype=torch.float64).index_add_(0, bucket, x.double() * sign.double())
    torch.testing.assert_close(s.apply(x).double(), dense, atol=1e-4, rtol=1e-5)


def test_the_kept_map_is_hashed_once_and_gives_the_same_sketch(monkeypatch):
    g = torch.Generator().manual_seed(2)
    parts = [torch.randn(300, 70, generator=g), torch.randn(9000, generator=g), torch.randn(5, generator=g)]
    rows = [torch.randn(4, *p.shape, generator=g) for p in parts]
    D = sum(p.numel() for p in parts)
    calls = []
    real = sketch_module._hash
    monkeypatch.setattr(sketch_module, "_hash", lambda *a: calls.append(a[2:4]) or real(*a))
    # sketches of earlier tests that are garbage but not yet collected would be freed mid-test and
    # lower the count below `before`: collect them first
    gc.collect()
    before = sketch_module._kept_bytes.get("cpu", 0)
    budget = sketch_module.cache_budget

    monkeypatch.setattr(sketch_module, "cache_budget", lambda device: 0)  # nothing may be kept
    hashed = CountSketch(full_dim=D, dim=512, seed=0)
    expected, expected_rows = hashed.apply(parts), hashed.apply(rows, batch_dims=1)
    assert len(calls) == 6 and not hashed._kept  # every call hashes every parameter
    assert torch.equal(expected_rows[1], hashed.apply([r[1] for r in rows]))

    monkeypatch.setattr(sketch_module, "cache_budget", budget)
    calls.clear()
    kept = CountSketch(full_dim=D, dim=512, seed=0)
    assert torch.equal(kept.apply(parts), expected)  # bit for bit the hashed sketch
    assert sorted(calls) == [(0, 21000), (21000, 30000), (30000, 30005)]  # each parameter once
    assert sketch_module._kept_bytes["cpu"] - before == 4 * D
    calls.clear()
    assert torch.equal(kept.apply(parts), expected) and calls == []  # every later episode: no hashing
    # per-document gradients of the same parameters use the same map
    assert torch.equal(kept.apply(rows, batch_dims=1), expected_rows) and calls == []

    # an equal sketch alive at the same time (another seed's recorder) shares the kept map
    twin = CountSketch(full_dim=D, dim=512, seed=0)
    assert torch.equal(twin.apply(parts), expected) and calls == []
    assert all(twin._kept[key] is kept._kept[key] for key in kept._kept) and len(twin._kept) == 3
    assert sketch_module._kept_bytes["cpu"] - before == 4 * D  # counted once
    # what sketches keep is freed with the last of them
    del kept
    gc.collect()
    assert sketch_module._kept_bytes["cpu"] - before == 4 * D
    del twin
    gc.collect()
    assert sketch_module._kept_bytes["cpu"] == before


def test_a_budget_that_fits_some_parameters_keeps_those(monkeypatch):
    g = torch.Generator().manual_seed(3)
    parts = [torch.randn(1000, generator=g), torch.randn(5000, generator=g), torch.randn(1000, generator=g)]
    whole = CountSketch(full_dim=7000, dim=256, seed=1).apply(parts)  # its maps freed with it
    before = sketch_module._kept_bytes.get("cpu", 0)
    monkeypatch.setattr(sketch_module, "cache_budget", lambda device: before + 4 * 1000 + 4 * 1000)
    s = CountSketch(full_dim=7000, dim=256, seed=1)
    assert torch.equal(s.apply(parts), whole)
    assert sorted(key[1:] for key in s._kept) == [(0, 1000), (6000, 1000)]  # 5000 did not fit: hashed
    assert sketch_module._kept_bytes["cpu"] - before == 8000
