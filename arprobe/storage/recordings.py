"""The recording table: every recording a run makes, declared once.

A ``Recording`` says what is captured, when (the episodes, fixed before the run starts), the
shape of one snapshot, and whether it is exact or a count-sketch. The trainer builds the table
from the config and pairs each entry with its capture function; the writer creates the
datasets from it, the plan sums its sizes, the store keeps its description (``what``, ``when``)
as attributes that the reader and ``arprobe info`` show. Adding a recording is one entry here
(its kind) plus one capture function in ``arprobe.trainer.recorders``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arprobe.storage.schema import allocated_bytes

# kind -> the run option that turns it on (for "not recorded" errors) and the row shape of one
# snapshot given the recording's size ``d`` and the number of documents T.
KINDS = {
    "weights": "record.weights (with record.weights_every > 0)",
    "grads": "record.grads (with record.grads_at = epoch or end)",
    "activations": "record.activations (with record.activations_every > 0)",
    "checkpoints": "record.checkpoints (epoch or a number of episodes)",
    "stats": "always recorded",
}


@dataclass(frozen=True)
class Recording:
    kind: str  # weights | grads | activations | checkpoints | stats
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
    out: dict[str, int] = {}
    for r in recordings:
        out[r.kind] = out.get(r.kind, 0) + r.nbytes
    return out
