"""Live loggers: TensorBoard, Weights & Biases and MLflow, as callbacks (``trainer.callbacks``).

``report_to = "tensorboard,wandb,mlflow"`` (any of them, comma-separated; ``--report_to`` on the
command line) gives every run one logger of each. Each is an optional extra
(``pip install 'arprobe[tensorboard]'``, ``[wandb]``, ``[mlflow]``); a missing one is refused when
the config is checked, before anything trains. What each writes, on one x axis, the run's global
optimizer step (1-based; episode k ends at step k*M):

    train/loss, train/lr, train/grad_norm        every step (grad_norm: all parameter groups)
    grad_norm/<group>                            every step, each parameter group (before clipping)
    eval/mean_loss, eval/online_loss,            every episode (online_loss: the episode's document
    eval/doc_<i>, train/episode_loss,            just before training on it; doc_<i>: the eval row)
    episode, epoch

Where: TensorBoard event files in ``<run>/tensorboard/`` (``tensorboard --logdir runs``); W&B in
project ``$WANDB_PROJECT`` (default ``arprobe``), files under ``$WANDB_DIR`` or the run folder,
offline with ``WANDB_MODE=offline``; MLflow at ``$MLFLOW_TRACKING_URI`` (MLflow's own default
otherwise), experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``arprobe``). Every logger names the
run by its folder (a matched control: ``<run>-control``) and records the run's config.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

from arprobe.errors import UserError
from arprobe.values import flatten

# name -> (module that must be importable, the pip extra that installs it, what it is called)
LOGGERS = {
    "tensorboard": ("tensorboard", "tensorboard", "TensorBoard"),
    "wandb": ("wandb", "wandb", "Weights & Biases (wandb)"),
    "mlflow": ("mlflow", "mlflow", "MLflow"),
}

log = logging.getLogger(__name__)


def parse_report_to(value: str) -> list[str]:
    """The logger names of a ``report_to`` value ("" or "none": none); one sentence for an unknown
    name or a logger whose extra is not installed. Reads no module (start-up of --help)."""
    names = [n.strip().lower() for n in str(value).split(",") if n.strip()]
    if names == ["none"]:
        return []
    for name in names:
        if name not in LOGGERS:
            close = difflib.get_close_matches(name, list(LOGGERS), n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UserError(
                f"report_to names an unknown logger '{name}'.{hint} Choose from {', '.join(LOGGERS)} "
                "(comma-separated), or leave it empty."
            )
        module, extra, title = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(
                f"report_to = '{name}' needs {title}, which is not installed: pip install 'arprobe[{extra}]'."
            )
    return list(dict.fromkeys(names))


def make_loggers(cfg, label: str) -> list:
    """One logger per name in ``cfg.report_to`` for the run ``label`` (its folder ``cfg.run_dir``)."""
    kinds = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}
    return [kinds[name](cfg, label) for name in parse_report_to(getattr(cfg, "report_to", ""))]


def step_scalars(m: dict) -> dict[str, float]:
    """The scalars of one ``on_step`` call, by the name every logger uses."""
    out = {"train/loss": m["loss"], "train/lr": m["lr"], "train/grad_norm": m["grad_norm"]}
    out.update({f"grad_norm/{group}": v for group, v in m["grad_norms"].items()})
    return out


def episode_scalars(m: dict) -> dict[str, float]:
    """The scalars of one ``on_episode`` call, by the name every logger uses."""
    out = {
        "eval/mean_loss": m["mean_eval_loss"],
        "eval/online_loss": m["online_loss"],
        "train/episode_loss": m["train_loss"],
        "episode": float(m["episode"]),
        "epoch": float(m["epoch"]),
    }
    out.update({f"eval/doc_{i}": float(v) for i, v in enumerate(m["eval_losses"])})
    return out


def _config_params(config: dict) -> dict[str, str]:
    return {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in flatten(config).items()}


def _could_not(name: str, exc: Exception) -> UserError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return UserError(
        f"report_to = '{name}' could not start logging ({type(exc).__name__}{': ' + first if first else ''})."
    )


class TensorBoardLogger:
    """Event files in ``<run>/tensorboard/``; a resumed run drops the steps after its resume point."""

    def __init__(self, cfg, label: str):
        self.log_dir = Path(cfg.run_dir) / "tensorboard"
        self.writer = None

    def on_start(self, info: dict) -> None:
        # Here, not at the top: torch's tensorboard module imports TensorBoard (seconds).
        from torch.utils.tensorboard import SummaryWriter

        steps = info["config"]["schedule"]["steps_per_doc"]
        purge = info["start"] * steps + 1 if info["start"] else None  # a resume rewrites what came after
        try:
            self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)
            self.writer.add_text("config", f"```\n{json.dumps(info['config'], indent=2)}\n```", 0)
        except Exception as exc:
            raise _could_not("tensorboard", exc) from exc

    def on_step(self, m: dict) -> None:
        for key, value in step_scalars(m).items():
            self.writer.add_scalar(key, value, m["step"])

    def on_episode(self, m: dict) -> None:
        for key, value in episode_scalars(m).items():
            self.writer.add_scalar(key, value, m["step"])
        self.writer.flush()  # a person watching sees every finished episode

    def on_end(self, info: dict) -> None:
        if self.writer is not None:
            self.writer.close()


class WandbLogger:
    """A W&B run per arprobe run (several at once for seeds trained together)."""

    def __init__(self, cfg, label: str):
        self.label, self.run_dir, self.run = label, Path(cfg.run_dir), None

    def on_start(self, info: dict) -> None:
        # Here, not at the top: wandb is an optional extra and slow to import.
        import wandb

        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "arprobe",
                name=self.label,
                dir=os.environ.get("WANDB_DIR") or str(self.run_dir),
                config=info["config"],
                reinit="create_new",  # one W&B run per arprobe run, also several in one process
                settings=wandb.Settings(console="off"),  # the run's own output stays as it is
            )
        except Exception as exc:
            raise _could_not("wandb", exc) from exc

    def on_step(self, m: dict) -> None:
        self.run.log(step_scalars(m), step=m["step"])

    def on_episode(self, m: dict) -> None:
        self.run.log(episode_scalars(m), step=m["step"])

    def on_end(self, info: dict) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if info["status"] == "complete" else 1)


class MlflowLogger:
    """An MLflow run per arprobe run, through the client API (several runs at once are fine)."""

    STATUS = {"complete": "FINISHED", "stopped": "KILLED"}  # anything else: FAILED

    def __init__(self, cfg, label: str):
        self.label, self.client, self.run_id, self.pending = label, None, None, []

    def on_start(self, info: dict) -> None:
        # Here, not at the top: mlflow is an optional extra and slow to import.
        from mlflow.entities import Param

        # lazy: optional extra
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient()
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "arprobe"
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            self.run_id = self.client.create_run(experiment_id, run_name=self.label).info.run_id
            params = [Param(k, v[:6000]) for k, v in _config_params(info["config"]).items()]
            for lo in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
                self.client.log_batch(self.run_id, params=params[lo : lo + 100])
        except Exception as exc:
            raise _could_not("mlflow", exc) from exc

    def _metrics(self, scalars: dict[str, float], step: int) -> list:
        # lazy: optional extra
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(k, float(v), now, step) for k, v in scalars.items()]

    def on_step(self, m: dict) -> None:
        self.pending.extend(self._metrics(step_scalars(m), m["step"]))  # sent with the episode's

    def on_episode(self, m: dict) -> None:
        metrics, self.pending = self.pending + self._metrics(episode_scalars(m), m["step"]), []
        for lo in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.run_id, metrics=metrics[lo : lo + 1000])

    def on_end(self, info: dict) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=self.STATUS.get(info["status"], "FAILED"))
