"""The recording table: every recording a run makes, declared once.

A ``Recording`` says what is captured, when (the episodes, fixed before the run starts), the
shape of one snapshot, and whether it is exact or a count-sketch. The trainer builds the table
from the config and pairs each entry with its capture function; the writer creates the
datasets from it, the plan sums its sizes, the store keeps its description (``what``, ``when``)
as attributes that the reader and ``arprobe info`` show.

``KINDS`` is the one table of recording kinds: the writer, reader, recorder, plan, ``arprobe
info`` and the probes' missing-data checks read it. A new kind is one entry here plus its
declare-and-capture function in ``arprobe.trainer.recorders.DECLARE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arprobe.storage.schema import allocated_bytes


@dataclass(frozen=True)
class Kind:
    """One kind of recording, as every part of arprobe names and stores it."""

    name: str  # the store's top-level group: weights, grads, ...
    option: str  # the run option that turns it on (said by every "not recorded" error)
    words: str  # how people name one recording of it: "weight snapshots of" 'unembed'
    snapshots: bool  # stored as <kind>/<name>/{values, episodes}: float32 rows the writer grows
    per_document: bool = False  # one row per document: a snapshot is [T, *value], else the value's shape

    def row_shape(self, value_shape: tuple[int, ...], n_docs: int) -> tuple[int, ...]:
        """One snapshot's shape, from the shape of what is captured per document (or at all)."""
        return (n_docs, *value_shape) if self.per_document else tuple(value_shape)


# Table order is the order of the store estimate's parts and of `arprobe info`'s list.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        # [S, D]: flattened parameters (or their count-sketch [S, k])
        Kind("weights", "record.weights (with record.weights_every > 0)", "weight snapshots of", True),
        # [A, n docs, C, d]: as the hook gives them
        Kind("activations", "record.activations (with record.activations_every > 0)", "activations at", True),
        # [G, T, D]: the gradient of each document's loss (or [G, T, k] sketched)
        Kind("grads", "record.grads (with record.grads_at = epoch or end)", "per-document gradients of", True,
             per_document=True),
        # the full training state (model, kept optimizer state, RNG) under checkpoints/
        Kind("checkpoints", "record.checkpoints (epoch or a number of episodes)", "checkpoints", False),
        # stats/grad_norm [K, M, L]
        Kind("stats", "always recorded", "statistics", False),
    )
}  # fmt: skip


def kind(name: str) -> Kind:
    """The table's entry for ``name`` (read at call time, so a test may replace ``KINDS``)."""
    return KINDS[name]


def snapshot_kinds() -> list[str]:
    """Kinds stored as ``<kind>/<name>/{values, episodes}``, in table order."""
    return [k.name for k in KINDS.values() if k.snapshots]


@dataclass(frozen=True)
class Recording:
    kind: str  # a key of KINDS
    name: str  # TransformerLens name ("unembed", "blocks.2.attn", "ln_final.hook_normalized"), "all", ...
    what: str  # one line for people: what one snapshot holds
    when: str  # the policy in words: "every episode", "end of each epoch", ...
    row_shape: tuple[int, ...]  # one snapshot's shape
    episodes: tuple[int, ...]  # the episodes it is taken at (0: the model before training)
    sketch: dict | None = None  # {"dim", "seed", "full_dim"} when stored as a count-sketch
    attrs: dict = field(default_factory=dict)  # extra dataset attributes (e.g. activation docs)
    bytes_per_snapshot: int = 0  # when the snapshot is not one float32 array (checkpoints)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def nbytes(self) -> int:
        """Bytes the recording takes in the finished store: whole chunks, as HDF5 allocates them."""
        if self.bytes_per_snapshot:
            return self.bytes_per_snapshot * len(self.episodes)
        return allocated_bytes(self.row_shape, 4, len(self.episodes))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_due", frozenset(self.episodes))

    def due(self, episode: int) -> bool:
        return episode in self._due

    def describe(self) -> dict:
        """What the store keeps about the recording (dataset attributes)."""
        out = {"what": self.what, "when": self.when, "planned_snapshots": len(self.episodes)}
        if self.sketch:
            out.update({f"sketch_{k}": v for k, v in self.sketch.items()})
        out.update(self.attrs)
        return out


def every(n: int, n_episodes: int) -> tuple[int, ...]:
    """Episodes 0, n, 2n, ... up to ``n_episodes`` (none when n is 0)."""
    return tuple(range(0, n_episodes + 1, n)) if n else ()


def describe_every(n: int) -> str:
    return "every episode, and before training" if n == 1 else f"every {n} episodes, and before training"


def sizes_by_kind(recordings: list[Recording]) -> dict[str, int]:
    """{kind: bytes in the finished store} of every snapshot kind in table order (0 when unrecorded)."""
    out: dict[str, int] = dict.fromkeys(snapshot_kinds(), 0)
    for r in recordings:
        out[r.kind] = out.get(r.kind, 0) + r.nbytes
    return out
