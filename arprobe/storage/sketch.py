"""Seeded count-sketches: a D-vector stored as k numbers whose inner products estimate the original's.

A count-sketch (Charikar, Chen & Farach-Colton 2002) adds coordinate i of x, with sign s(i) = ±1,
into bucket h(i) of k: (Sx)_b = sum over h(i) = b of s(i) x_i. S is linear, so the sketch of a
difference or a mean of snapshots is the difference or mean of their sketches, and for every pair

    E[<Sx, Sy>] = <x, y>,    std[<Sx, Sy>] <= sqrt(2 / k) |x| |y|

with no rescaling (the JL property with scale 1): cosines, Gram matrices and PCA computed from
sketches match the exact ones to about sqrt(2 / k), e.g. ±0.004 at the default k = 2^17.

h and s are polynomial hashes over the prime field Z_p (p = 2^31 - 1; degree 3, so 4-wise
independent, which the variance bound needs) with coefficients drawn from the seed. Nothing is
stored but (seed, k, D): the map is recomputed block by block in O(D) time on the tensors'
device. A dense Gaussian projection would cost k·D (5e13 multiply-adds per snapshot of
Pythia-1B's unembedding at k = 2^19) and its matrix could not be kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

PRIME = (1 << 31) - 1  # Mersenne prime: coefficients and coordinates < 2^31, products < 2^62 fit int64
# Coordinates hashed at once: 2^18 keeps the int64 temporaries (2 MiB) in cache on CPU, 4x faster
# than 2^22 measured; on a GPU larger blocks mean fewer kernel launches.
BLOCK = {"cpu": 1 << 18, "other": 1 << 22}
# Sketches of up to this many coordinates keep their whole hash map in memory (12 bytes per
# coordinate: 96 MB at the limit); larger ones hash block by block on every call.
CACHE_MAX_DIM = 8_000_000
_MAPS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_MAPS_KEPT = 4
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
    mask = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return state, z ^ (z >> 31)


@dataclass(frozen=True)
class CountSketch:
    """The count-sketch of D-vectors into ``dim`` buckets drawn from ``seed``."""

    full_dim: int  # D
    dim: int  # k
    seed: int

    def __post_init__(self):
        if not 0 < self.full_dim < PRIME:
            raise ValueError(f"a count-sketch needs 0 < D < 2^31 - 1, got D = {self.full_dim}")
        if self.dim < 1:
            raise ValueError(f"a count-sketch needs k >= 1, got {self.dim}")

    @property
    def attrs(self) -> dict[str, int]:
        """What the store keeps to say a recording is this sketch (``sketch_<key>`` attributes)."""
        return {"dim": self.dim, "seed": self.seed, "full_dim": self.full_dim}

    def _coefficients(self) -> tuple[list[int], list[int]]:
        state, out = self.seed & ((1 << 64) - 1), []
        for _ in range(8):
            state, z = _splitmix64(state)
            out.append(1 + z % (PRIME - 1))
        return out[:4], out[4:]

    def buckets(
        self, start: int, stop: int, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(bucket int64 [n], sign float32 [n]) of coordinates start..stop-1."""
        h_coef, s_coef = self._coefficients()
        i = torch.arange(start, stop, dtype=torch.int64, device=device)

        def poly(coef: list[int]) -> torch.Tensor:  # Horner's rule mod p, in place; every product < 2^62
            v = i * coef[0] + coef[1]
            for c in coef[2:]:
                v.remainder_(PRIME).mul_(i).add_(c)
            return v.remainder_(PRIME)

        bucket = poly(h_coef).remainder_(self.dim)
        sign = poly(s_coef).bitwise_and_(1).to(torch.float32).mul_(-2.0).add_(1.0)
        return bucket, sign

    def _whole_map(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(bucket, sign) of every coordinate, hashed once and kept (a few sketches at a time)."""
        key = (self.full_dim, self.dim, self.seed, str(device))
        if key not in _MAPS:
            if len(_MAPS) >= _MAPS_KEPT:
                _MAPS.pop(next(iter(_MAPS)))
            step = BLOCK["cpu" if device.type == "cpu" else "other"]
            pieces = [
                self.buckets(lo, min(lo + step, self.full_dim), device)
                for lo in range(0, self.full_dim, step)
            ]
            _MAPS[key] = (torch.cat([b for b, _ in pieces]), torch.cat([s for _, s in pieces]))
        return _MAPS[key]

    def apply(self, parts: Sequence[torch.Tensor] | torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        """Sketch of the concatenation of ``parts`` flattened after their first ``batch_dims`` dims.

        ``parts`` [*batch, ...] each (a list of parameters, or of per-document gradients with
        ``batch_dims=1``) -> float32 [*batch, k], on the parts' device. Blocks of BLOCK
        coordinates are hashed at a time, so no D-sized index is built for large D (CACHE_MAX_DIM).
        """
        if isinstance(parts, torch.Tensor):
            parts = [parts]
        flat = [p.detach().reshape(*p.shape[:batch_dims], -1) for p in parts]
        batch = flat[0].shape[:-1]
        total = sum(f.shape[-1] for f in flat)
        assert total == self.full_dim, f"sketch of D={self.full_dim} applied to {total} values"
        out = torch.zeros(*batch, self.dim, dtype=torch.float32, device=flat[0].device)
        if total <= CACHE_MAX_DIM:
            # Hashing D coordinates costs far more than summing them (0.16 s a call for the 5.3M
            # parameters of the default model, every episode): keep the whole map once per sketch.
            bucket, sign = self._whole_map(out.device)
            values = torch.cat([f.float() for f in flat], dim=-1) if len(flat) > 1 else flat[0].float()
            return out.index_add_(out.dim() - 1, bucket, values * sign)
        offset, step = 0, BLOCK["cpu" if out.device.type == "cpu" else "other"]
        for f in flat:
            for lo in range(0, f.shape[-1], step):
                block = f[..., lo : lo + step].float()
                bucket, sign = self.buckets(offset + lo, offset + lo + block.shape[-1], block.device)
                out.index_add_(out.dim() - 1, bucket, block * sign)
            offset += f.shape[-1]
        return out


def sketch_array(values: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Sketch every row of ``values`` [..., D] -> float32 [..., k]; for tests and offline use."""
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    sketch = CountSketch(full_dim=x.shape[-1], dim=dim, seed=seed)
    return sketch.apply(x, batch_dims=x.dim() - 1).numpy()
