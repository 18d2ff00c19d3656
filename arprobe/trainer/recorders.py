"""What the loop records besides losses: the recording table of this run and its capture functions.

``Recorder.table`` declares every recording (``arprobe.storage.recordings.Recording``: what,
when, shape, exact or sketched); ``capture`` maps each one's key to the function that takes a
snapshot. ``DECLARE`` holds, per kind of the recording table (``recordings.KINDS``), the function
that declares a run's recordings of that kind and their capture functions: a new kind is its
table entry plus its function here. The loop asks ``due(episode)`` and appends what it returns.
Per-layer gradient norms are read every step inside the episode step. Checkpoints and resume
slots live in ``arprobe.trainer.checkpoints``.

Weights and gradients of a layer with more than 2 x ``record.sketch_dim`` values are stored as a
seeded count-sketch of ``sketch_dim`` values (``arprobe.storage.sketch``), whose inner products,
cosines and PCA match the exact ones to about sqrt(2 / sketch_dim). ``weights/all`` — every
parameter as one vector, the paper's weight trajectory (Fig. 8c, 22b) — is always a sketch of
``record.all_weights_dim`` values.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import numpy as np
import torch

from arprobe.models.naming import capture
from arprobe.science.schedule import Schedule
from arprobe.storage import recordings
from arprobe.storage.recordings import Recording, describe_every, every
from arprobe.storage.sketch import CountSketch, stored_dim
from arprobe.trainer import memory
from arprobe.trainer.checkpoints import keeps_optimizer_state

log = logging.getLogger(__name__)

# One projection for every run and layer: sketches of the same layer in two runs (or its weights
# and gradients in one run) share it, so inner products across them stay meaningful.
SKETCH_SEED = 0


def checkpoint_episodes(policy: str, epoch_ends: list[int], K: int) -> tuple[tuple[int, ...], str]:
    """(episodes, description) of the full checkpoints under ``record.checkpoints`` (not "none")."""
    if policy == "probes":
        # pairwise_recovery's default checkpoint: the latest before the last episode, at the end
        # of the next-to-last epoch (or the last episode of a one-epoch run)
        if len(epoch_ends) > 1:
            return (epoch_ends[-2],), "end of the next-to-last epoch"
        return (K,), "end of the run"
    if policy == "epoch":
        return tuple(epoch_ends), "end of each epoch"
    n = int(policy)
    return tuple(sorted(set(range(n, K + 1, n)) | {K})), f"every {n} episodes and the last"


class Recorder:
    def __init__(self, model: torch.nn.Module, names, task, cfg, schedule: Schedule, device: torch.device):
        self.model, self.names, self.task, self.cfg = model, names, task, cfg
        self.device = torch.device(device)
        rec = self.record = cfg.record
        self.n_values = sum(p.numel() for p in model.parameters())  # a checkpoint's model values
        self.table: list[Recording] = []
        self.capture: dict[str, Callable[[int], np.ndarray]] = {}
        self._sketches: dict[tuple[int, int], CountSketch] = {}  # (D, k) -> the one sketch of that size

        # the store's L parameter groups of stats/grad_norm (the members strategy computes the norms)
        self.layer_names = list(names.parameter_groups(model))

        # A backward keeps several times a forward's activations: a quarter of the eval batch, fewer
        # when free memory says so (sized at the first pass: by then the optimizer state exists).
        self._grad_chunk = max(1, task.eval_batch // 4)
        self._grad_chunk_sized = False
        self._grad_method = "vmap"
        self._eval_activations: dict[int, dict[str, torch.Tensor]] = {}  # episode -> {hook: [n, C, d]}
        self.activation_docs = list(rec.activation_docs)
        self.hooks = [names.expand(h) for h in (rec.activations if rec.activations_every else [])]

        for kind, declare in DECLARE.items():
            assert kind in recordings.KINDS, f"recorders.DECLARE has {kind!r}, which recordings.KINDS lacks"
            declare(self, schedule)

    # --- the table ---------------------------------------------------------------------------

    def add(self, recording: Recording, capture: Callable[[int], np.ndarray] | None = None) -> None:
        """Declare ``recording``; ``capture(episode)`` takes one snapshot of it (snapshot kinds)."""
        self.table.append(recording)
        if capture is not None:
            self.capture[recording.key] = capture

    def _declare_weights(self, schedule: Schedule) -> None:
        rec, names, K = self.record, self.names, len(schedule)
        for component in rec.weights if rec.weights_every else []:
            name = names.expand(component)
            params, when = self._component_params(component), describe_every(rec.weights_every)
            self._add_params("weights", name, params, every(rec.weights_every, K), when, rec.sketch_dim,
                             f"the parameters of {name}, flattened")  # fmt: skip
        if rec.all_weights_dim:
            everything, when = dict(self.model.named_parameters()), describe_every(1)
            self._add_params("weights", "all", everything, every(1, K), when, rec.all_weights_dim,
                             "every parameter of the model as one vector", force_sketch=True)  # fmt: skip

    def _declare_grads(self, schedule: Schedule) -> None:
        rec, K = self.record, len(schedule)
        episodes = {"epoch": tuple(int(k) for k in schedule.epoch_ends), "end": (K,), "never": ()}[
            rec.grads_at
        ]
        when = {"epoch": "end of each epoch", "end": "end of the run", "never": "never"}[rec.grads_at]
        for component in rec.grads if episodes else []:
            name = self.names.expand(component)
            self._add_params("grads", name, self._component_params(component), episodes, when, rec.sketch_dim,
                             f"the gradient of each document's loss w.r.t. {name}")  # fmt: skip

    def _declare_activations(self, schedule: Schedule) -> None:
        if not self.hooks:
            return
        K, T = len(schedule), self.task.n_docs
        shapes = {h: tuple(v.shape) for h, v in self._capture_activations().items()}
        for hook in self.hooks:
            self.add(
                Recording(
                    kind="activations",
                    name=hook,
                    what=f"activations at {hook} of documents {self.activation_docs}",
                    when=describe_every(self.record.activations_every),
                    row_shape=recordings.kind("activations").row_shape(shapes[hook], T),
                    episodes=every(self.record.activations_every, K),
                    attrs={"docs": self.activation_docs},
                ),
                lambda episode, hook=hook: self._activations(episode)[hook],
            )

    def _component_params(self, component: str) -> dict[str, torch.nn.Parameter]:
        path = self.names.module_path(component)
        module = self.model.get_submodule(path)
        return {f"{path}.{n}": p for n, p in module.named_parameters()}

    def _add_params(
        self,
        kind: str,
        name: str,
        params: dict[str, torch.Tensor],
        episodes: tuple[int, ...],
        when: str,
        sketch_dim: int,
        what: str,
        force_sketch: bool = False,
    ) -> None:
        full = sum(p.numel() for p in params.values())
        dim = min(sketch_dim, full) if force_sketch else stored_dim(full, sketch_dim)
        sketch = self._sketch(full, dim) if dim < full or force_sketch else None
        row = recordings.kind(kind).row_shape((dim,), self.task.n_docs)
        snapshot = self._snapshot if kind == "weights" else self._per_document_grads
        self.add(
            Recording(
                kind=kind,
                name=name,
                what=what + (f" (count-sketch of {full:,})" if sketch else ""),
                when=when,
                row_shape=row,
                episodes=episodes,
                sketch=sketch.attrs if sketch else None,
            ),
            lambda episode: snapshot(params, sketch),
        )

    def _sketch(self, full: int, dim: int) -> CountSketch:
        """One sketch instance per (D, k): a layer's weights and gradients share its kept hash map
        (``CountSketch`` keeps it per parameter on the parameter's device: 4 bytes a coordinate)."""
        key = (full, dim)
        if key not in self._sketches:
            self._sketches[key] = CountSketch(full_dim=full, dim=dim, seed=SKETCH_SEED)
        return self._sketches[key]

    def _add_checkpoints(self, schedule: Schedule) -> None:
        policy, K = self.record.checkpoints, len(schedule)
        if policy == "none":
            return
        episodes, when = checkpoint_episodes(policy, [int(k) for k in schedule.epoch_ends], K)
        self.add(
            Recording(
                kind="checkpoints",
                name="model",
                what="full model, kept optimizer state and RNG",
                when=when,
                row_shape=(self.n_values,),
                episodes=episodes,
                bytes_per_snapshot=self.state_bytes,
            )
        )

    @property
    def state_bytes(self) -> int:
        """Bytes of one saved training state (model, kept optimizer state): a checkpoint or the
        resume point."""
        return 4 * self.n_values * (3 if keeps_optimizer_state(self.cfg) else 1)

    def due(self, episode: int) -> list[Recording]:
        """Snapshot recordings (weights, grads, activations, ...) to take after ``episode``."""
        kinds = recordings.snapshot_kinds()
        return [r for r in self.table if r.kind in kinds and r.due(episode)]

    def checkpoint_due(self, episode: int) -> bool:
        return any(r.kind == "checkpoints" and r.due(episode) for r in self.table)

    # --- capture functions -------------------------------------------------------------------

    @staticmethod
    def _snapshot(params: dict[str, torch.Tensor], sketch: CountSketch | None) -> np.ndarray:
        """[D] the flattened parameters, or [k] their sketch."""
        if sketch is not None:
            return sketch.apply(list(params.values())).cpu().numpy()
        flat = [p.detach().reshape(-1).float() for p in params.values()]
        # One parameter (the unembedding) is written straight from its memory: no copy on CPU.
        return (flat[0] if len(flat) == 1 else torch.cat(flat)).cpu().numpy()

    def _per_document_grads(self, params: dict[str, torch.Tensor], sketch: CountSketch | None) -> np.ndarray:
        """[T, D] (or [T, k] sketched): gradient of each document's loss w.r.t. ``params`` now.

        Out of memory: the chunk of documents per pass is halved (down to one), then vmap gives way
        to one backward pass per document. Any other failure of vmap (it cannot batch every
        architecture: data-dependent control flow, missing batching rules): one backward pass per
        document. The choice sticks for the rest of the run. Each retry runs after the ``except``
        block has ended, so the failed attempt's tensors (held by its traceback) are freed first.
        """
        if not self._grad_chunk_sized:
            self._grad_chunk = min(self._grad_chunk, self._grad_chunk_that_fits(params))
            self._grad_chunk_sized = True
        while True:
            try:
                return self._document_grads_by(self._grad_method, params, sketch)
            except (RuntimeError, NotImplementedError) as exc:
                out_of_memory = isinstance(exc, torch.OutOfMemoryError)
                if self._grad_method == "loop" and not (out_of_memory and self._grad_chunk > 1):
                    raise
                failure = f"{type(exc).__name__}: {exc}".splitlines()[0]  # text only: frees the frames
            if out_of_memory and self._grad_chunk > 1:
                self._grad_chunk //= 2
                log.warning(
                    "per-document gradients: out of memory (%s); retrying %d documents per pass.",
                    failure, self._grad_chunk,
                )  # fmt: skip
            else:
                log.warning(
                    "per-document gradients: vmap failed (%s); using one backward pass per document.",
                    failure,
                )
                self._grad_method = "loop"

    def _grad_chunk_that_fits(self, params: dict[str, torch.Tensor]) -> int:
        """Documents per pass that fit in the memory free on the run's device now (everything the
        run holds already allocated), by the plan's rule (``memory.grad_chunk_that_fits``)."""
        values = sum(p.numel() for p in params.values())
        shape = memory.ModelShape.of(self.model, self.cfg)
        reserve = memory.CUDA_RESERVE if self.device.type == "cuda" else 0
        room = memory.free_memory_bytes(self.device) - reserve
        return memory.grad_chunk_that_fits(self.cfg, shape, values, room)

    def _document_grads_by(self, method: str, params, sketch: CountSketch | None) -> np.ndarray:
        rows = []
        for chunk in self.task.per_document_grads(self.model, params, chunk=self._grad_chunk, method=method):
            if sketch is not None:
                rows.append(
                    sketch.apply(chunk, batch_dims=1).cpu()
                )  # sketched per chunk: [n, k] on device at most
            else:
                rows.append(torch.cat([g.reshape(g.shape[0], -1).float() for g in chunk], 1).cpu())
        return torch.cat(rows).numpy()

    def _activations(self, episode: int) -> dict[str, np.ndarray]:
        captured = self._eval_activations.get(episode)
        if captured is None:
            captured = self._capture_activations()
            self._eval_activations = {episode: captured}
        return {h: v.cpu().numpy() for h, v in captured.items()}

    @contextlib.contextmanager
    def activations_from_eval(self, episode: int):
        """Around the eval pass of ``episode``: yields the ``after_batch`` callback of the task's
        eval that keeps the recorded documents' activations from that forward, or None when none
        are due. Saves the extra forward ``_capture_activations`` would run."""
        self._eval_activations = {}
        if not any(r.kind == "activations" and r.due(episode) for r in self.table):
            yield None
            return
        rows: dict[str, list] = {h: [None] * len(self.activation_docs) for h in self.hooks}
        with capture(self.model, self.names, self.hooks) as cache:

            def after_batch(start: int, stop: int) -> None:
                for j, doc in enumerate(self.activation_docs):
                    if start <= doc < stop:
                        for h in self.hooks:
                            rows[h][j] = cache[h][doc - start].float().clone()  # [C, d]

            yield after_batch
        if all(row is not None for hook_rows in rows.values() for row in hook_rows):  # else: a forward later
            self._eval_activations[episode] = {h: torch.stack(rows[h]) for h in self.hooks}

    @torch.inference_mode()
    def _capture_activations(self) -> dict[str, torch.Tensor]:
        """{hook: [n docs, C, d]} for the recorded documents at the current weights."""
        was_training = self.model.training
        self.model.eval()
        try:
            with capture(self.model, self.names, self.hooks) as cache:
                self.task.forward_docs(self.model, self.activation_docs)
        finally:
            self.model.train(was_training)
        return {h: cache[h].float() for h in self.hooks}


# kind -> the function that declares a run's recordings of it (``Recorder.add``), in the order the
# table is built; every kind here has its entry in ``recordings.KINDS``.
DECLARE: dict[str, Callable[[Recorder, Schedule], None]] = {
    "weights": Recorder._declare_weights,
    "grads": Recorder._declare_grads,
    "activations": Recorder._declare_activations,
    "checkpoints": Recorder._add_checkpoints,
}
