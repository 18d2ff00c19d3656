"""What the loop records besides losses: per-layer gradient norms every step, and weights,
activations, per-document gradients and checkpoints at the episodes the config asks for."""

from __future__ import annotations

import numpy as np
import torch

from arprobe.trainer import steps
from arprobe.trainer.naming import capture


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

        # recorded parameter groups, by TransformerLens component name
        self.weights = {names.expand(n): self._component_params(n) for n in (rec.weights if rec.weights_every else [])}
        self.grads = {names.expand(n): self._component_params(n) for n in (rec.grads if rec.grads_at != "never" else [])}
        self.hooks = [names.expand(h) for h in (rec.activations if rec.activations_every else [])]
        self.activation_docs = list(rec.activation_docs)
        self.params = dict(model.named_parameters())
        self.keep_optimizer_state = not cfg.optim.reset_per_doc and cfg.optim.name == "adam"
        self.epoch_ends = self._epoch_ends(setup.schedule_epoch)

    def _component_params(self, component: str) -> list[torch.nn.Parameter]:
        module = self.setup.model.get_submodule(self.setup.names.module_path(component))
        return list(module.parameters())

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
            "weights": {n: sum(p.numel() for p in ps) for n, ps in self.weights.items()},
            "grads": {n: sum(p.numel() for p in ps) for n, ps in self.grads.items()},
            "activations": activations,
            "activation_docs": self.activation_docs,
            "param_shapes": {n: tuple(p.shape) for n, p in self.params.items()},
            "optim_shapes": optim,
            "rng_bytes": len(torch.Generator().get_state()),
            "checkpoints": self.record.checkpoints != "none",
            "resume": self.record.resume_every > 0,
        }

    # --- the recordings ---------------------------------------------------------------------

    def group_grad_norms(self) -> torch.Tensor:
        """[L] gradient norm of every layer group, computed on device without a sync."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._norm_params]
        norms = torch.stack(torch._foreach_norm(grads)).float()
        squares = torch.zeros(len(self.layer_names), device=norms.device).index_add_(0, self._norm_owner, norms**2)
        return squares.sqrt()

    def _flat(self, params: list[torch.Tensor]) -> np.ndarray:
        return torch.cat([p.detach().reshape(-1).float() for p in params]).cpu().numpy()

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

    def _per_document_grads(self, params: list[torch.Tensor]) -> np.ndarray:
        """[T, D]: gradient of each document's loss w.r.t. ``params`` at the current weights."""
        s = self.setup
        C = s.cfg.data.context_length
        rows = []
        for t in range(s.tokens.shape[0]):
            loss = steps.doc_losses(s.model, s.tokens[t : t + 1, :C], s.lengths[t : t + 1].clamp(max=C))[0]
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                                   for g, p in zip(grads, params)]))
        return torch.stack(rows).cpu().numpy()

    def _record_snapshots(self, writer, episode: int) -> None:
        rec = self.record
        if rec.weights_every and episode % rec.weights_every == 0:
            for name, params in self.weights.items():
                writer.append_recording("weights", name, episode, self._flat(params))
        if rec.activations_every and episode % rec.activations_every == 0 and self.hooks:
            for hook, value in self._capture_activations().items():
                writer.append_recording("activations", hook, episode, value.cpu().numpy())

    def record_initial(self, writer) -> None:
        """Episode 0: the model before training."""
        self._record_snapshots(writer, 0)

    def after_episode(self, writer, episode: int, generator: torch.Generator, optimizer: torch.optim.Optimizer) -> None:
        rec = self.record
        self._record_snapshots(writer, episode)
        last = episode == len(self.setup.schedule_doc)
        if self.grads and ((rec.grads_at == "epoch" and episode in self.epoch_ends) or (rec.grads_at == "end" and last)):
            for name, params in self.grads.items():
                writer.append_recording("grads", name, episode, self._per_document_grads(params))
        if self._checkpoint_due(episode):
            writer.append_checkpoint(episode, self.param_state(), self.optimizer_state(optimizer),
                                     generator.get_state().numpy())
            self.last_checkpoint = episode

    def after_commit(self, writer, episode: int, generator: torch.Generator, optimizer: torch.optim.Optimizer) -> None:
        """The rolling resume checkpoint, written only for committed episodes."""
        every = self.record.resume_every
        if every and (episode % every == 0 or episode == len(self.setup.schedule_doc)):
            writer.write_resume(episode, self.param_state(), self.optimizer_state(optimizer), generator.get_state().numpy())

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
            out[f"{name}/exp_avg"] = state["exp_avg"].float().cpu().numpy() if state else np.zeros(p.shape, np.float32)
            out[f"{name}/exp_avg_sq"] = state["exp_avg_sq"].float().cpu().numpy() if state else np.zeros(p.shape, np.float32)
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
                        "step": torch.tensor(float(state["optim"][f"{name}/step"]), dtype=torch.float32, device=p.device),
                        "exp_avg": torch.from_numpy(np.asarray(state["optim"][f"{name}/exp_avg"])).to(p.device, p.dtype),
                        "exp_avg_sq": torch.from_numpy(np.asarray(state["optim"][f"{name}/exp_avg_sq"])).to(p.device, p.dtype),
                    }
        generator.set_state(torch.from_numpy(np.asarray(state["rng"], dtype=np.uint8)))
