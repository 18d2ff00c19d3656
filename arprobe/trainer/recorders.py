"""What the loop records besides losses: per-layer gradient norms every step, and weights,
activations, per-document gradients and checkpoints at the episodes the config asks for.

Weights and gradients of a layer with more than 2 x ``record.sketch_dim`` values are stored as a
seeded count-sketch of ``sketch_dim`` values (``arprobe.storage.sketch``), whose inner products,
cosines and PCA match the exact ones to about sqrt(2 / sketch_dim).
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from arprobe.storage.sketch import CountSketch, stored_dim
from arprobe.trainer import steps
from arprobe.trainer.naming import capture

log = logging.getLogger(__name__)

# One projection for every run and layer: sketches of the same layer in two runs (or its weights
# and gradients in one run) share it, so inner products across them stay meaningful.
SKETCH_SEED = 0


class Recorder:
    def __init__(self, setup):
        self.setup = setup
        cfg, model, names = setup.cfg, setup.model, setup.names
        rec = cfg.record
        self.record = rec
        self.loss_eval: list[np.ndarray] = []
        self.loss_train: list[np.ndarray] = []
        self.last_checkpoint: int | None = None

        # per-layer gradient norm: one flat list of parameters and the group of each
        groups = names.parameter_groups(model)
        params = dict(model.named_parameters())
        self.layer_names = list(groups)
        self._norm_params = [params[n] for g in groups.values() for n in g if params[n].requires_grad]
        owner = [i for i, g in enumerate(groups.values()) for n in g if params[n].requires_grad]
        self._norm_owner = torch.tensor(owner, dtype=torch.long, device=setup.device)
        self._norm_zeros = torch.zeros(len(self.layer_names), device=setup.device)

        # recorded parameter groups, by TransformerLens component name: {name: {HF param name: param}}
        self.weights = {
            names.expand(n): self._component_params(n) for n in (rec.weights if rec.weights_every else [])
        }
        self.grads = {
            names.expand(n): self._component_params(n) for n in (rec.grads if rec.grads_at != "never" else [])
        }
        self.sketches: dict[str, CountSketch] = {}  # "weights/<name>" | "grads/<name>" -> its sketch
        for kind, table in (("weights", self.weights), ("grads", self.grads)):
            for name, group in table.items():
                full = sum(p.numel() for p in group.values())
                if stored_dim(full, rec.sketch_dim) < full:
                    self.sketches[f"{kind}/{name}"] = CountSketch(
                        full_dim=full, dim=rec.sketch_dim, seed=SKETCH_SEED
                    )
        C = cfg.data.context_length
        self._eval_tokens, self._eval_lengths = setup.tokens[:, :C], setup.lengths.clamp(max=C)
        # A backward keeps several times a forward's activations: a quarter of the eval batch.
        self._grad_chunk = max(1, steps.eval_batch_size(cfg.eval_batch_size, C) // 4)
        self._grad_method = "vmap"
        self._eval_activations: dict[int, dict[str, torch.Tensor]] = {}  # episode -> {hook: [n, C, d]}
        self.hooks = [names.expand(h) for h in (rec.activations if rec.activations_every else [])]
        self.activation_docs = list(rec.activation_docs)
        self.params = dict(model.named_parameters())
        self.keep_optimizer_state = not cfg.optim.reset_per_doc and cfg.optim.name == "adam"
        self.epoch_ends = self._epoch_ends(setup.schedule_epoch)

    def _component_params(self, component: str) -> dict[str, torch.nn.Parameter]:
        path = self.setup.names.module_path(component)
        module = self.setup.model.get_submodule(path)
        return {f"{path}.{n}": p for n, p in module.named_parameters()}

    @staticmethod
    def _epoch_ends(epoch: np.ndarray) -> set[int]:
        """1-based episodes that end an epoch."""
        return {k for k in range(1, len(epoch) + 1) if k == len(epoch) or epoch[k] != epoch[k - 1]}

    # --- shapes, fixed before the store is created ------------------------------------------

    def layout_fields(self) -> dict:
        activations = {}
        if self.hooks:
            for hook, value in self._capture_activations().items():
                activations[hook] = tuple(value.shape)
        optim = {}
        if self.keep_optimizer_state:
            for name, p in self.params.items():
                if p.requires_grad:
                    optim[f"{name}/exp_avg"] = tuple(p.shape)
                    optim[f"{name}/exp_avg_sq"] = tuple(p.shape)
                    optim[f"{name}/step"] = ()
        return {
            "weights": self._stored_dims("weights", self.weights),
            "grads": self._stored_dims("grads", self.grads),
            "sketches": {key: sketch.attrs for key, sketch in self.sketches.items()},
            "activations": activations,
            "activation_docs": self.activation_docs,
            "param_shapes": {n: tuple(p.shape) for n, p in self.params.items()},
            "optim_shapes": optim,
            "rng_bytes": len(torch.Generator().get_state()),
            "checkpoints": self.record.checkpoints != "none",
            "resume": self.record.resume_every > 0,
        }

    def _stored_dims(self, kind: str, table: dict[str, dict[str, torch.Tensor]]) -> dict[str, int]:
        """Values per snapshot of each recorded group: its size, or its sketch's."""
        return {
            name: self.sketches[f"{kind}/{name}"].dim
            if f"{kind}/{name}" in self.sketches
            else sum(p.numel() for p in group.values())
            for name, group in table.items()
        }

    # --- the recordings ---------------------------------------------------------------------

    def group_grad_norms(self) -> torch.Tensor:
        """[L] gradient norm of every layer group, computed on device without a sync."""
        grads = [p.grad if p.grad is not None else p.new_zeros(1) for p in self._norm_params]
        if self._norm_zeros.device.type == "cpu":
            # BLAS dot products: half the time of _foreach_norm on CPU (3 -> 1.3 ms a step, 5M params)
            flat = [g.reshape(-1).float() for g in grads]
            squares = torch.stack([torch.dot(g, g) for g in flat])
        else:
            squares = torch.stack(torch._foreach_norm(grads)).float().square_()  # one fused kernel
        return self._norm_zeros.index_add(0, self._norm_owner, squares).sqrt_()

    def _snapshot(self, key: str, params: dict[str, torch.Tensor]) -> np.ndarray:
        """[D] the flattened parameters, or [k] their sketch."""
        if key in self.sketches:
            return self.sketches[key].apply(list(params.values())).cpu().numpy()
        flat = [p.detach().reshape(-1).float() for p in params.values()]
        # One parameter (the unembedding) is written straight from its memory: no copy on CPU.
        return (flat[0] if len(flat) == 1 else torch.cat(flat)).cpu().numpy()

    def _activations_due(self, episode: int) -> bool:
        return bool(
            self.hooks and self.record.activations_every and episode % self.record.activations_every == 0
        )

    @contextlib.contextmanager
    def activations_from_eval(self, episode: int):
        """Around the eval pass of ``episode``: yields the ``after_batch`` callback of
        ``steps.evaluate_docs`` that keeps the recorded documents' activations from that forward,
        or None when none are due. Saves the extra forward ``_capture_activations`` would run."""
        if not self._activations_due(episode):
            yield None
            return
        rows: dict[str, list] = {h: [None] * len(self.activation_docs) for h in self.hooks}
        with capture(self.setup.model, self.setup.names, self.hooks) as cache:

            def after_batch(start: int, stop: int) -> None:
                for j, doc in enumerate(self.activation_docs):
                    if start <= doc < stop:
                        for h in self.hooks:
                            rows[h][j] = cache[h][doc - start].float().clone()  # [C, d]

            yield after_batch
        if all(
            row is not None for hook_rows in rows.values() for row in hook_rows
        ):  # else: a separate forward later
            self._eval_activations[episode] = {h: torch.stack(rows[h]) for h in self.hooks}

    @torch.inference_mode()
    def _capture_activations(self) -> dict[str, torch.Tensor]:
        """{hook: [n docs, C, d]} for the recorded documents at the current weights."""
        s = self.setup
        C = s.cfg.data.context_length
        idx = torch.as_tensor(self.activation_docs, device=s.device)
        was_training = s.model.training
        s.model.eval()
        try:
            with capture(s.model, s.names, self.hooks) as cache:
                s.model(input_ids=s.tokens[idx, :C])
        finally:
            s.model.train(was_training)
        return {h: cache[h].float() for h in self.hooks}

    def _per_document_grads(self, key: str, params: dict[str, torch.Tensor]) -> np.ndarray:
        """[T, D] (or [T, k] sketched): gradient of each document's loss w.r.t. ``params`` now."""
        try:
            return self._document_grads_by(self._grad_method, key, params)
        except (RuntimeError, NotImplementedError) as exc:
            if self._grad_method == "loop":
                raise
            # vmap cannot batch every architecture (data-dependent control flow, missing batching rules).
            log.warning(
                "per-document gradients: vmap failed (%s); using one backward pass per document.", exc
            )
            self._grad_method = "loop"
            return self._document_grads_by("loop", key, params)

    def _document_grads_by(self, method: str, key: str, params: dict[str, torch.Tensor]) -> np.ndarray:
        sketch = self.sketches.get(key)
        rows = []
        for chunk in steps.per_document_grads(
            self.setup.model,
            params,
            self._eval_tokens,
            self._eval_lengths,
            chunk=self._grad_chunk,
            method=method,
        ):
            if sketch is not None:
                rows.append(
                    sketch.apply(chunk, batch_dims=1).cpu()
                )  # sketched per chunk: [n, k] on device at most
            else:
                rows.append(torch.cat([g.reshape(g.shape[0], -1).float() for g in chunk], 1).cpu())
        return torch.cat(rows).numpy()

    def _record_snapshots(self, writer, episode: int) -> None:
        rec = self.record
        if rec.weights_every and episode % rec.weights_every == 0:
            for name, params in self.weights.items():
                writer.append_recording("weights", name, episode, self._snapshot(f"weights/{name}", params))
        if self._activations_due(episode):
            captured = self._eval_activations.pop(episode, None)
            for hook, value in (captured if captured is not None else self._capture_activations()).items():
                writer.append_recording("activations", hook, episode, value.cpu().numpy())

    def record_initial(self, writer) -> None:
        """Episode 0: the model before training."""
        self._record_snapshots(writer, 0)

    def after_episode(
        self, writer, episode: int, generator: torch.Generator, optimizer: torch.optim.Optimizer
    ) -> None:
        rec = self.record
        self._record_snapshots(writer, episode)
        last = episode == len(self.setup.schedule_doc)
        if self.grads and (
            (rec.grads_at == "epoch" and episode in self.epoch_ends) or (rec.grads_at == "end" and last)
        ):
            for name, params in self.grads.items():
                writer.append_recording(
                    "grads", name, episode, self._per_document_grads(f"grads/{name}", params)
                )
        if self._checkpoint_due(episode):
            writer.append_checkpoint(
                episode, self.param_state(), self.optimizer_state(optimizer), generator.get_state().numpy()
            )
            self.last_checkpoint = episode

    def after_commit(
        self, writer, episode: int, generator: torch.Generator, optimizer: torch.optim.Optimizer
    ) -> None:
        """The rolling resume checkpoint, written only for committed episodes."""
        every = self.record.resume_every
        if every and (episode % every == 0 or episode == len(self.setup.schedule_doc)):
            writer.write_resume(
                episode, self.param_state(), self.optimizer_state(optimizer), generator.get_state().numpy()
            )

    def _checkpoint_due(self, episode: int) -> bool:
        policy = self.record.checkpoints
        if policy == "none":
            return False
        if policy == "epoch":
            return episode in self.epoch_ends
        return episode % int(policy) == 0 or episode == len(self.setup.schedule_doc)

    def param_state(self) -> dict[str, np.ndarray]:
        return {n: p.detach().float().cpu().numpy() for n, p in self.params.items()}

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, np.ndarray]:
        """Adam's moments and step per parameter, when they carry over between episodes."""
        if not self.keep_optimizer_state:
            return {}
        out = {}
        for name, p in self.params.items():
            if not p.requires_grad:
                continue
            state = optimizer.state.get(p, {})
            out[f"{name}/exp_avg"] = (
                state["exp_avg"].float().cpu().numpy() if state else np.zeros(p.shape, np.float32)
            )
            out[f"{name}/exp_avg_sq"] = (
                state["exp_avg_sq"].float().cpu().numpy() if state else np.zeros(p.shape, np.float32)
            )
            out[f"{name}/step"] = np.float32(float(state["step"])) if state else np.float32(0)
        return out

    @torch.no_grad()
    def restore(self, state: dict, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
        """Load a saved {"model", "optim", "rng"} state into the live model, optimizer and RNG."""
        for name, p in self.params.items():
            p.copy_(torch.from_numpy(np.asarray(state["model"][name])).to(p.dtype))
        if self.keep_optimizer_state:
            for name, p in self.params.items():
                if p.requires_grad and float(state["optim"][f"{name}/step"]) > 0:
                    optimizer.state[p] = {
                        "step": torch.tensor(
                            float(state["optim"][f"{name}/step"]), dtype=torch.float32, device=p.device
                        ),
                        "exp_avg": torch.from_numpy(np.asarray(state["optim"][f"{name}/exp_avg"])).to(
                            p.device, p.dtype
                        ),
                        "exp_avg_sq": torch.from_numpy(np.asarray(state["optim"][f"{name}/exp_avg_sq"])).to(
                            p.device, p.dtype
                        ),
                    }
        generator.set_state(torch.from_numpy(np.asarray(state["rng"], dtype=np.uint8)))
