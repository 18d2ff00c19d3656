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
    leading axes until one chunk is at most CHUNK_BYTES.
    """
    dims = list(row_shape)
    row_bytes = itemsize
    for d in dims:
        row_bytes *= d
    if row_bytes <= CHUNK_BYTES:
        return (max(1, min(1024, (64 << 10) // max(row_bytes, 1))), *dims)
    for axis in range(len(dims)):
        rest = itemsize
        for d in dims[axis + 1 :]:
            rest *= d
        if rest * dims[axis] <= CHUNK_BYTES:
            break
        dims[axis] = max(1, CHUNK_BYTES // rest)
    return (1, *dims)
