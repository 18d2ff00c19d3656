"""The matched shuffled control of a run (``control = "shuffle"``): the same config — seed,
documents, initialisation, recording — in a shuffled order, written to ``<run>/control/run.h5``.

The order has its own random stream (``trainer.schedules``), so the same seed gives the control
the same documents and the same initial weights; only the order differs. The control is trained
after the run, and ``--resume`` finishes whichever of the two is unfinished.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from arprobe.errors import UserError
from arprobe.science.finding import control_finding
from arprobe.science.recovery import online_loss, recovery_scores
from arprobe.storage import RunStore, resolve_store_path
from arprobe.storage.layout import CONTROL_DIR
from arprobe.trainer import loop
from arprobe.trainer.config import RunConfig, config_from_dict


@dataclass
class Controlled:
    """A run and its matched control (``control`` None when none was asked for or reached)."""

    run: loop.RunResult
    control: loop.RunResult | None = None
    finding: str = ""


def control_config(cfg: RunConfig) -> RunConfig:
    """The control of ``cfg``: shuffled order, same everything else, in ``<run>/control``."""
    return dataclasses.replace(
        cfg,
        name=CONTROL_DIR,
        out=str(cfg.run_dir),
        control="",
        schedule=dataclasses.replace(cfg.schedule, order="shuffle"),
    )


def run_with_control(
    cfg: RunConfig, *, progress: bool = True, overwrite: bool = False, callbacks=None
) -> Controlled:
    """Train the run, then (``cfg.control``) its control once the run has completed; ``callbacks``
    (``loop.run``) hear both."""
    result = loop.run(cfg, progress=progress, overwrite=overwrite, callbacks=callbacks)
    # an overwritten run gets a new control
    return _then_control(cfg, result, progress, fresh=overwrite, callbacks=callbacks)


def resume_with_control(
    run: str | Path, *, progress: bool = True, trust_remote_code: bool = False, callbacks=None
) -> Controlled:
    """Finish an unfinished run, then its control if the run asks for one and it is unfinished."""
    store_path = resolve_store_path(run)
    with RunStore(store_path) as store:
        status, stored = store.status, store.config
    cfg = config_from_dict(stored)
    cfg = dataclasses.replace(cfg, out=str(store_path.parent.parent), name=store_path.parent.name)
    control_store = store_path.parent / CONTROL_DIR / "run.h5"
    if status == "complete":
        if not cfg.control or _status(control_store) == "complete":
            raise UserError(f"'{store_path}' is already complete; nothing to resume.")
        result = _finished_result(store_path)
    else:
        result = loop.resume(
            store_path, progress=progress, trust_remote_code=trust_remote_code, callbacks=callbacks
        )
    return _then_control(cfg, result, progress, trust_remote_code, callbacks=callbacks)


def _then_control(
    cfg: RunConfig,
    result: loop.RunResult,
    progress: bool,
    trust_remote_code: bool = False,
    fresh: bool = False,  # train the control anew (the run was overwritten)
    callbacks=None,
):
    if not cfg.control or result.status != "complete":
        return Controlled(result)
    ctrl_cfg = control_config(cfg)
    path = ctrl_cfg.run_dir / "run.h5"
    status = _status(path)
    if fresh:
        control = loop.run(ctrl_cfg, progress=progress, overwrite=True, callbacks=callbacks)
    elif status == "complete":
        control = _finished_result(path)
    elif status is None:
        control = loop.run(ctrl_cfg, progress=progress, callbacks=callbacks)
    else:
        control = loop.resume(
            path, progress=progress, trust_remote_code=trust_remote_code, callbacks=callbacks
        )
    finding = ""
    if control.status == "complete":
        finding = control_finding(
            result.recovery_scores, result.online_loss, control.recovery_scores, control.online_loss,
            cfg.schedule.order,
        )  # fmt: skip
    return Controlled(result, control, finding)


def _status(path: Path) -> str | None:
    if not path.exists():
        return None
    with RunStore(path) as store:
        return store.status


def _finished_result(path: Path) -> loop.RunResult:
    """The headline numbers of a complete store, as ``loop.run`` returns them."""
    with RunStore(path) as store:
        matrix, schedule = store.eval_matrix(), store.schedule()
        return loop.RunResult(
            path=path,
            status=store.status,
            completed_episodes=store.completed_episodes,
            seconds=0.0,
            recovery_scores=recovery_scores(matrix, schedule.doc),
            online_loss=online_loss(matrix, schedule.doc, schedule.epoch).mean_after_first_epoch,
        )
