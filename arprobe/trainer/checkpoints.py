"""Training state in and out of the store: model parameters, the optimizer's kept state and the
run's RNG, for full checkpoints, the rolling resume slots, and replays of training.

A state is a plain dict {"model": {param: array}, "optim": {"<param>/<state>": array},
"rng": uint8 array} of numpy arrays: the store keeps nothing that needs unpickling.
"""

from __future__ import annotations

import numpy as np
import torch

from arprobe.tasks.registry import task_class


def keeps_optimizer_state(cfg) -> bool:
    """Adam's moments carry over between episodes (and so belong in a checkpoint)."""
    return not cfg.optim.reset_per_doc and cfg.optim.name == "adam"


def optimizer_shapes(model: torch.nn.Module, keep: bool) -> dict[str, tuple[int, ...]]:
    if not keep:
        return {}
    shapes: dict[str, tuple[int, ...]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            shapes.update(
                {f"{name}/exp_avg": tuple(p.shape), f"{name}/exp_avg_sq": tuple(p.shape), f"{name}/step": ()}
            )
    return shapes


def capture_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator, keep_optimizer: bool
) -> dict:
    """The state to store, as numpy arrays."""
    params, optim = state_tensors(model, optimizer, keep_optimizer)
    as_numpy = {n: v.float().cpu().numpy() if isinstance(v, torch.Tensor) else v for n, v in optim.items()}
    return {
        "model": {n: p.float().cpu().numpy() for n, p in params.items()},
        "optim": as_numpy,
        "rng": generator.get_state().numpy(),
    }


def state_tensors(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, keep_optimizer: bool
) -> tuple[dict, dict]:
    """(parameters, kept optimizer state) as the live tensors, on their device and in their dtype
    (no copy: the caller copies them, e.g. the background resume writer); zeros and step counts
    as numpy."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    optim = {}
    if keep_optimizer:
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            state = optimizer.state.get(p, {})
            zeros = np.zeros(p.shape, np.float32)
            optim[f"{name}/exp_avg"] = state["exp_avg"].detach() if state else zeros
            optim[f"{name}/exp_avg_sq"] = state["exp_avg_sq"].detach() if state else zeros
            optim[f"{name}/step"] = np.float32(float(state["step"])) if state else np.float32(0)
    return params, optim


@torch.no_grad()
def restore_state(
    state: dict,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Load a stored state into the live model, optimizer (its kept Adam state, if any) and RNG."""
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.copy_(torch.from_numpy(np.asarray(state["model"][name])).to(p.dtype))
    if optimizer is not None:
        optimizer.state.clear()
        for name, p in params.items():
            step = state["optim"].get(f"{name}/step")
            if p.requires_grad and step is not None and float(step) > 0:
                # Copies: Adam updates its moments in place, and the state may be restored again.
                optimizer.state[p] = {
                    "step": torch.tensor(float(step), dtype=torch.float32, device=p.device),
                    "exp_avg": torch.tensor(
                        np.asarray(state["optim"][f"{name}/exp_avg"]), dtype=p.dtype, device=p.device
                    ),
                    "exp_avg_sq": torch.tensor(
                        np.asarray(state["optim"][f"{name}/exp_avg_sq"]), dtype=p.dtype, device=p.device
                    ),
                }
    if generator is not None and state.get("rng") is not None:
        generator.set_state(torch.from_numpy(np.asarray(state["rng"], dtype=np.uint8)))


def model_from_info(info: dict, cfg) -> torch.nn.Module:
    """A model with the run's architecture (from the store's ``model`` info, never from the hub and
    never running a model's own code), frozen and dropout-free as the run's was: its task builds it."""
    return task_class(cfg.task).model_from_info(info, cfg)
