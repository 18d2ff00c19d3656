"""Callbacks: what a run reports as it trains, per optimizer step and per episode.

A callback is any object with some of these methods (each optional)::

    on_start(info)       once, before the first episode of this call (info: run, path, config,
                         episodes planned, the episode it starts after — 0, or a resumed run's)
    on_step(metrics)     once per optimizer step: run, step (1-based, over the whole run),
                         episode, epoch, doc, loss, lr, grad_norm (all parameter groups together)
                         and grad_norms (group name -> norm, before clipping)
    on_episode(metrics)  once per episode: run, episode, epoch, doc, step (the episode's last),
                         eval_losses (float32 [T], every document after the episode: the store's
                         eval row), mean_eval_loss, online_loss (the loss of the episode's document
                         just before it was trained on), train_loss (mean of the episode's steps)
    on_end(info)         once, when the run closes: run, path, status, episodes, stop_reason

The numbers are the ones the store received, handed over after the episode is committed (the M
step calls of an episode come together, after its training: a per-step call inside the episode
would force a device sync every step). A callback only reads them; nothing it does reaches the
training, so the eval matrix is the same with callbacks as without (tests/trainer/test_live_logging.py).
An exception in a callback ends the run as ``failed`` (the store keeps every episode before, and
``--resume`` continues it).

The live loggers (``report_to = "tensorboard,wandb,mlflow"``) are callbacks built here from the
run's config, in ``trainer.loggers``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.storage.layout import CONTROL_DIR
from arprobe.trainer.loggers import make_loggers

log = logging.getLogger(__name__)

HOOKS = ("on_start", "on_step", "on_episode", "on_end")


def run_label(run_dir: Path) -> str:
    """The name a logger shows for a run: its folder name; a matched control ``<run>-control``."""
    run_dir = Path(run_dir)
    return f"{run_dir.parent.name}-{CONTROL_DIR}" if run_dir.name == CONTROL_DIR else run_dir.name


def check_callbacks(callbacks) -> list:
    """``callbacks`` as a list, each with at least one of the hooks; one sentence if not."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, list | tuple):
        callbacks = [callbacks]
    for cb in callbacks:
        if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
            raise UserError(
                f"Callback {cb!r} has none of the methods {', '.join(HOOKS)}; give an object with at "
                "least one of them."
            )
    return list(callbacks)


class Callbacks:
    """The callbacks of one run: its config's loggers, then the caller's; calls each one's hooks."""

    def __init__(self, callbacks: list, label: str, layer_names: list[str] | None = None):
        check_callbacks(callbacks)
        self.callbacks = list(callbacks)
        self.label = label
        self.layer_names = list(layer_names or [])  # the store's L parameter groups of grad_norm
        self.ended = False

    @classmethod
    def for_run(cls, cfg, layer_names: list[str], extra: list | None = None) -> Callbacks:
        """The loggers ``cfg.report_to`` names, then ``extra``; ``layer_names``: the store's L groups."""
        check_callbacks(extra or [])  # before a logger opens a run of its own
        label = run_label(cfg.run_dir)
        return cls([*make_loggers(cfg, label), *(extra or [])], label, layer_names)

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def _call(self, hook: str, payload: dict) -> None:
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if callable(method):
                method(payload)

    def start(self, cfg, path: Path, episodes: int, start: int) -> None:
        if self.callbacks:
            info = {"run": self.label, "path": str(path), "config": cfg.to_dict()}
            self._call("on_start", {**info, "episodes": episodes, "start": start})

    def episode(
        self,
        k: int,
        doc: int,
        epoch: int,
        train_loss: np.ndarray,  # [M]
        grad_norm: np.ndarray,  # [M, L]
        lrs: np.ndarray,  # [M]
        eval_row: np.ndarray,  # [T] after episode k
        before_row: np.ndarray,  # [T] after episode k - 1
    ) -> None:
        """Episode ``k``'s step calls, then its episode call, from what the store got."""
        if not self.callbacks:
            return
        M = len(train_loss)
        names = self.layer_names or [f"group{i}" for i in range(grad_norm.shape[-1])]
        for j in range(M):
            norms = {name: float(v) for name, v in zip(names, grad_norm[j])}
            self._call(
                "on_step",
                {
                    "run": self.label,
                    "step": (k - 1) * M + j + 1,
                    "episode": k,
                    "epoch": epoch,
                    "doc": doc,
                    "loss": float(train_loss[j]),
                    "lr": float(lrs[j]),
                    "grad_norm": math.sqrt(sum(v * v for v in norms.values())),
                    "grad_norms": norms,
                },
            )
        row = np.array(eval_row, dtype=np.float32, copy=True)
        self._call(
            "on_episode",
            {
                "run": self.label,
                "episode": k,
                "epoch": epoch,
                "doc": doc,
                "step": k * M,
                "eval_losses": row,
                "mean_eval_loss": float(row.mean()),
                "online_loss": float(before_row[doc]),
                "train_loss": float(np.mean(train_loss)),
            },
        )

    def end(self, path: Path, status: str, episodes: int, reason: str) -> None:
        """Tell every callback the run closed. Never raises (it runs while stores and locks are
        being closed): a callback's error here is logged as a warning."""
        if self.ended or not self.callbacks:
            return
        self.ended = True
        info = {"run": self.label, "path": str(path), "status": status, "episodes": episodes}
        for cb in self.callbacks:
            method = getattr(cb, "on_end", None)
            if callable(method):
                try:
                    method({**info, "stop_reason": reason})
                except Exception as exc:
                    log.warning("callback %r could not finish for run %s: %s: %s", cb, self.label,
                                type(exc).__name__, exc)  # fmt: skip
