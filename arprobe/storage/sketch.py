"""Seeded count-sketches: a D-vector stored as k numbers whose inner products estimate the original's.

A count-sketch (Charikar, Chen & Farach-Colton 2002) adds coordinate i of x, with sign s(i) = ±1,
into bucket h(i) of k: (Sx)_b = sum over h(i) = b of s(i) x_i. S is linear, so the sketch of a
difference or a mean of snapshots is the difference or mean of their sketches, and for every pair

    E[<Sx, Sy>] = <x, y>,    std[<Sx, Sy>] <= sqrt(2 / k) |x| |y|

with no rescaling (the JL property with scale 1): cosines, Gram matrices and PCA computed from
sketches match the exact ones to about sqrt(2 / k), e.g. ±0.004 at the default k = 2^17.

The map, for any D. h and s are polynomial hashes over the prime field Z_p (p = 2^31 - 1; degree
3, so 4-wise independent, which the variance bound needs) with coefficients drawn from a seed by
SplitMix64. The flat coordinate i of the D-vector lies in segment b = i // SEGMENT at offset
o = i % SEGMENT (SEGMENT = p, so the offsets of one segment are distinct field elements), and is
hashed at o with the coefficients of ``segment_seed(seed, b)``: segment 0 uses the sketch's seed
itself, so every D < 2^31 - 1 (all a store could hold before segments existed) keeps exactly the
map it always had; later segments draw independent coefficients. Nothing but (seed, k, D) defines
the map, and it depends only on the flat vector, not on how it is split into parameters.

The cost. Hashing costs far more than summing (about 30 ns a coordinate on one CPU core, int64
arithmetic), so the map of each parameter is computed once and kept on that parameter's device as
one int32 per coordinate (the bucket, and the sign in bit 31): 4 bytes a coordinate,
21 MB for the 5.3M parameters of the default CPU model, 4.0 GB for Pythia-1B, 10.2 GB for
Pythia-2.8B. What is kept per device is bounded by ``cache_budget`` (1/8 of the device's memory);
coordinates past the budget are hashed block by block on every call, as all were before. A dense
Gaussian projection would cost k·D (5e13 multiply-adds per snapshot of Pythia-1B's unembedding at
k = 2^19) and its matrix could not be kept. Measured costs: docs/sketches.md.

Versions. ``VERSION`` names the map above. A store records ``sketch_dim``, ``sketch_seed`` and
``sketch_full_dim``; a future change of the map must bump ``VERSION`` and record
``sketch_version`` so that readers never compare sketches of two maps (absent means 1).
"""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

VERSION = 1  # the map defined above; see the module docstring before changing anything it computes
PRIME = (1 << 31) - 1  # Mersenne prime: coefficients and offsets < 2^31, products < 2^62 fit int64
SEGMENT = PRIME  # coordinates hashed with one seed; offsets 0..p-1 are p distinct field elements
MASK64 = (1 << 64) - 1
# Coordinates hashed (or unpacked from the kept map) at once: 2^18 keeps the int64 temporaries
# (2 MiB) in cache on CPU, 4x faster than 2^22 measured; on a GPU larger blocks mean fewer launches.
BLOCK = {"cpu": 1 << 18, "other": 1 << 22}
CODE_BYTES = 4  # kept map: one int32 a coordinate
SIGN_BIT = -(1 << 31)  # int32 with only bit 31 set: the sign bit of a code and of a float32
BUCKET_BITS = (1 << 31) - 1  # the other 31 bits of a code: its bucket
CACHE_SHARE = 8  # the kept maps of one device use at most 1/CACHE_SHARE of its memory
_kept_bytes: dict[str, int] = {}  # device -> bytes of kept maps alive now (released with their sketch)
# (k, seed, device, first coordinate, count) -> kept map, while a sketch keeps it: the runs of
# several seeds trained together (one recorder each) share one map per parameter
_shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
MIN_SAVING = 2  # sketch only when it at least halves the stored values (see stored_dim)


def stored_dim(full_dim: int, sketch_dim: int) -> int:
    """Values stored per snapshot of a D-vector under ``record.sketch_dim``.

    A sketch is worth its ±sqrt(2/k) error only where it saves a lot, so a vector is sketched
    when D > MIN_SAVING · k; smaller ones stay exact. ``sketch_dim`` 0 keeps everything exact.
    """
    return sketch_dim if sketch_dim and full_dim > MIN_SAVING * sketch_dim else full_dim


def _splitmix64(state: int) -> tuple[int, int]:
    """One step of SplitMix64 (Steele et al. 2014): (new state, 64-bit output). Plain Python ints,
    so the coefficients a seed gives are the same on every platform and library version."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def segment_seed(seed: int, segment: int) -> int:
    """The seed whose coefficients hash segment ``segment`` of a sketch drawn from ``seed``: the seed
    itself for segment 0 (the map of every D < 2^31 - 1 is the one-segment map), else a SplitMix64
    output of (seed, segment)."""
    if segment == 0:
        return seed
    _, z = _splitmix64(((seed & MASK64) ^ (segment * 0xD1B54A32D192ED03)) & MASK64)
    return z


@functools.lru_cache(maxsize=256)
def _coefficients(seed: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(h, s) coefficients in 1..p-1, four each, drawn from ``seed``."""
    state, out = seed & MASK64, []
    for _ in range(8):
        state, z = _splitmix64(state)
        out.append(1 + z % (PRIME - 1))
    return tuple(out[:4]), tuple(out[4:])


def _hash(seed: int, dim: int, lo: int, hi: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(bucket int64, sign bit int64: 1 means -1) of offsets lo..hi-1 (< p) of a segment of ``seed``."""
    h_coef, s_coef = _coefficients(seed)
    i = torch.arange(lo, hi, dtype=torch.int64, device=device)

    def poly(coef: tuple[int, ...]) -> torch.Tensor:  # Horner's rule mod p, in place; every product < 2^62
        v = i * coef[0] + coef[1]
        for c in coef[2:]:
            v.remainder_(PRIME).mul_(i).add_(c)
        return v.remainder_(PRIME)

    return poly(h_coef).remainder_(dim), poly(s_coef).bitwise_and_(1)


def cache_budget(device: torch.device) -> int:
    """Bytes of kept maps allowed on ``device``: 1/CACHE_SHARE of its memory (CUDA: the GPU's,
    CPU: the machine's); none on other devices (meta, mps), which hash on every call."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // CACHE_SHARE
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // CACHE_SHARE
        except (ValueError, OSError, AttributeError):  # no sysconf (Windows): keep up to 1 GB
            return 1 << 30
    return 0


def _release(device: str, nbytes: int) -> None:
    _kept_bytes[device] = _kept_bytes.get(device, 0) - nbytes


@dataclass(frozen=True)
class CountSketch:
    """The count-sketch of D-vectors into ``dim`` buckets drawn from ``seed`` (any D > 0).

    An instance keeps the maps of the coordinate ranges it was applied to (one per parameter),
    on their device, within ``cache_budget``, shared with equal instances alive at the same time
    (one per seed when seeds train together); a map is freed with the last instance that keeps
    it. Sketches are the same bit for bit whether or not their maps are kept.
    """

    full_dim: int  # D
    dim: int  # k
    seed: int
    # (device, first coordinate, count) -> int32 codes of the kept map; not part of the sketch's identity
    _kept: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.full_dim < 1:
            raise ValueError(f"a count-sketch needs D >= 1, got D = {self.full_dim}")
        if not 1 <= self.dim < PRIME:
            raise ValueError(f"a count-sketch needs 1 <= k < 2^31 - 1, got {self.dim}")

    @property
    def attrs(self) -> dict[str, int]:
        """What the store keeps to say a recording is this sketch (``sketch_<key>`` attributes)."""
        return {"dim": self.dim, "seed": self.seed, "full_dim": self.full_dim}

    @property
    def cache_bytes(self) -> int:
        """Device memory the whole kept map of this sketch takes (4 bytes a coordinate)."""
        return CODE_BYTES * self.full_dim

    def _pieces(self, start: int, stop: int):
        """(segment seed, first offset, last offset + 1) of coordinates start..stop-1, one per segment."""
        while start < stop:
            segment, offset = divmod(start, SEGMENT)
            n = min(stop - start, SEGMENT - offset)
            yield segment_seed(self.seed, segment), offset, offset + n
            start += n

    def buckets(
        self, start: int, stop: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(bucket int64 [n], sign float32 [n]) of flat coordinates start..stop-1 (any size: only
        the n asked for are built, so this can be asked about coordinates past 2^31 or 2^32)."""
        bucket, bit = self._hash_range(start, stop, device)
        return bucket, bit.to(torch.float32).mul_(-2.0).add_(1.0)

    def _hash_range(self, start: int, stop: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(bucket int64, sign bit int64) of coordinates start..stop-1, segment by segment."""
        pieces = [_hash(s, self.dim, lo, hi, device) for s, lo, hi in self._pieces(start, stop)]
        if len(pieces) == 1:
            return pieces[0]
        if not pieces:
            empty = torch.empty(0, dtype=torch.int64, device=device)
            return empty, empty.clone()
        return torch.cat([b for b, _ in pieces]), torch.cat([s for _, s in pieces])

    def codes(self, start: int, stop: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """int32 [n] the compact map of coordinates start..stop-1: the bucket in bits 0-30, bit 31
        (the sign bit: the code is bucket - 2^31) set where the sign is -1."""
        codes = torch.empty(stop - start, dtype=torch.int32, device=device)
        step = BLOCK["cpu" if torch.device(device).type == "cpu" else "other"]
        for lo in range(0, stop - start, step):
            n = min(step, stop - start - lo)
            bucket, bit = self._hash_range(start + lo, start + lo + n, device)
            codes[lo : lo + n] = bucket.sub_(bit.mul_(1 << 31))  # bit 31 set where the sign is -1
        return codes

    def _kept_codes(self, start: int, n: int, device: torch.device) -> torch.Tensor | None:
        """The kept map of coordinates start..start+n-1 on ``device``, made now if the budget allows."""
        key = (str(device), start, n)
        codes = self._kept.get(key)
        if codes is None:
            codes = _shared.get((self.dim, self.seed, *key))  # an equal sketch's (another seed's run)
        if codes is None:
            nbytes = CODE_BYTES * n
            if _kept_bytes.get(str(device), 0) + nbytes > cache_budget(device):
                return None
            codes = _shared[(self.dim, self.seed, *key)] = self.codes(start, start + n, device)
            _kept_bytes[str(device)] = _kept_bytes.get(str(device), 0) + nbytes
            weakref.finalize(codes, _release, str(device), nbytes)
        self._kept[key] = codes
        return codes

    def apply(self, parts: Sequence[torch.Tensor] | torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        """Sketch of the concatenation of ``parts`` flattened after their first ``batch_dims`` dims.

        ``parts`` [*batch, ...] each (a list of parameters, or of per-document gradients with
        ``batch_dims=1``) -> float32 [*batch, k], on the parts' device. Each part's map is kept
        (``_kept_codes``) or hashed BLOCK coordinates at a time; no D-sized index is ever built.
        """
        if isinstance(parts, torch.Tensor):
            parts = [parts]
        flat = [p.detach().reshape(*p.shape[:batch_dims], -1) for p in parts]
        batch = flat[0].shape[:-1]
        total = sum(f.shape[-1] for f in flat)
        assert total == self.full_dim, f"sketch of D={self.full_dim} applied to {total} values"
        out = torch.zeros(*batch, self.dim, dtype=torch.float32, device=flat[0].device)
        step = BLOCK["cpu" if out.device.type == "cpu" else "other"]
        offset, last = 0, out.dim() - 1
        # Blocks are added in coordinate order, so the float sums (and the stored sketches) are the
        # same bit for bit whether a map is kept or hashed, and however the vector is split.
        for f in flat:
            n = f.shape[-1]
            kept = self._kept_codes(offset, n, f.device) if n else None
            for lo in range(0, n, step):
                block = f[..., lo : lo + step].float()
                if kept is not None:
                    code = kept[lo : lo + block.shape[-1]]
                    # x * s(i): flip the float's sign bit where the code's is set (exactly -x; no
                    # float multiply, no sign tensor)
                    signed = block.view(torch.int32).bitwise_xor(code & SIGN_BIT).view(torch.float32)
                    out.index_add_(last, code & BUCKET_BITS, signed)
                else:
                    bucket, sign = self.buckets(offset + lo, offset + lo + block.shape[-1], block.device)
                    out.index_add_(last, bucket, block * sign)
            offset += n
        return out


def sketch_array(values: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Sketch every row of ``values`` [..., D] -> float32 [..., k]; for tests and offline use."""
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    sketch = CountSketch(full_dim=x.shape[-1], dim=dim, seed=seed)
    return sketch.apply(x, batch_dims=x.dim() - 1).numpy()
