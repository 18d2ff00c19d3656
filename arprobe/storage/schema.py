"""Names and versions shared by the store's writer and reader.

Departure from DESIGN.md's table, forced by HDF5 single-writer/multi-reader (SWMR) mode, in
which no dataset, group or attribute may be created once writing has started:
- recordings are groups, ``weights/<name>/values`` [S, D] next to ``weights/<name>/episodes`` [S]
  (likewise ``grads/<name>`` and ``activations/<hook>``), so the episode index can grow too;
- checkpoints are pre-created growable datasets ``checkpoints/model/<param>`` [S, *shape] with
  ``checkpoints/episodes`` [S], instead of one group per episode;
- the live episode counter is the dataset ``progress`` [1]; the root attribute
  ``completed_episodes`` is written when the run stops.
What is recorded is declared in one table, ``arprobe.storage.recordings``.
"""

from __future__ import annotations

import math

FORMAT = "arprobe-run"
# 2: the planned schedule (schedule/planned_doc, planned_epoch), the clean window of each document
# (docs/window_start, two-sided window shift), recordings described by the recording table
# (attributes what / when), weights/all. Format-1 stores are read as they are.
FORMAT_VERSION = 2

STATUSES = ("running", "complete", "stopped", "failed", "diverged")

EPISODE_FILL = -1  # fill value of */episodes: an entry still -1 was never committed

CHUNK_BYTES = 1 << 20  # upper bound of one chunk (h5py guidance: 10 KiB - 1 MiB)


def chunk_shape(row_shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks for a dataset growing along axis 0 with rows of ``row_shape``.

    Small rows are grouped (about 64 KiB of rows per chunk); a large row is split along its
    leading axes into equal pieces of at most CHUNK_BYTES, so no chunk is mostly padding (a row
    of 263,168 values cut at 262,144 would store a second, almost empty chunk per row).
    """
    dims = list(row_shape)
    row_bytes = itemsize * math.prod(dims)
    if row_bytes <= CHUNK_BYTES:
        return (max(1, min(1024, (64 << 10) // max(row_bytes, 1))), *dims)
    for axis in range(len(dims)):
        rest = itemsize * math.prod(dims[axis + 1 :])
        if rest > CHUNK_BYTES:
            dims[axis] = 1  # the inner axes alone are too big: one index of this axis per chunk
            continue
        pieces = -(-dims[axis] * rest // CHUNK_BYTES)
        dims[axis] = -(-dims[axis] // pieces)
        break
    return (1, *dims)


def allocated_bytes(row_shape: tuple[int, ...], itemsize: int, n_rows: int) -> int:
    """Bytes HDF5 allocates for ``n_rows`` rows in chunks of ``chunk_shape`` (whole chunks only)."""
    if n_rows <= 0:
        return 0
    chunk = chunk_shape(tuple(row_shape), itemsize)
    n_chunks = -(-n_rows // chunk[0])
    for d, c in zip(row_shape, chunk[1:]):
        n_chunks *= -(-d // c)
    return n_chunks * itemsize * math.prod(chunk)
