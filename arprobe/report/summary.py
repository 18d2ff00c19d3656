"""The header of a run report: which run this is, its headline numbers against their reference,
the versions involved and the command that reproduces the run (``summary.json``).
"""

from __future__ import annotations

import shlex
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from arprobe import __version__
from arprobe.science.finding import NO_CONTROL, control_finding
from arprobe.science.recovery import online_loss, recovery_scores
from arprobe.science.reference import paper_reference
from arprobe.storage import RunStore
from arprobe.storage.layout import control_store_path
from arprobe.trainer.config import RunConfig
from arprobe.values import flatten


def reproduce_command(config: dict) -> str:
    """`arprobe run` with every key whose value differs from the default: the run again, bit for bit."""
    defaults = flatten(RunConfig().to_dict())
    parts = ["arprobe", "run"]
    for key, value in flatten(config).items():
        if key in defaults and value == defaults[key] and key not in ("out", "name"):
            continue
        if key not in defaults:
            continue  # a key this version of arprobe does not know (an older store)
        text = (
            ",".join(str(v) for v in value)
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        parts += [f"--{key}", text]
    return shlex.join(parts)


def _versions() -> dict:
    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return {"arprobe (this analysis)": __version__, "torch (this analysis)": torch}


def run_identity(store) -> dict:
    """The facts that say which run this is, as label -> text (for the summary and figure subtitles)."""
    config = store.config
    flat = flatten(config)
    try:
        info = store.model_info
    except Exception:
        info = {}
    n_params = info.get("n_params")
    model = str(flat.get("model.name", "?"))
    init = flat.get("model.init", "")
    model_text = model + (
        f" ({init} init)" if init and init != "pretrained" else " (pre-trained)" if init else ""
    )
    if n_params:
        model_text += f", {n_params / 1e6:.2f}M parameters"
    optim = (
        f"{flat.get('optim.name', '?')} lr {flat.get('optim.lr', '?'):g}"
        if isinstance(flat.get("optim.lr"), (int, float))
        else str(flat.get("optim.name", "?"))
    )
    if flat.get("optim.lr_schedule") not in (None, "constant"):
        optim += f", {flat['optim.lr_schedule']} schedule"
    data = info.get("data") or str(flat.get("data.source", "?"))
    return {
        "run": str(store.path.parent),
        "model": model_text,
        "T / C / M / E": (
            f"{flat.get('data.n_docs', '?')} / {flat.get('data.context_length', '?')} / "
            f"{flat.get('schedule.steps_per_doc', '?')} / {flat.get('schedule.epochs', '?')}"
        ),
        "order": str(flat.get("schedule.order", "?")),
        "optimizer": optim,
        "seed": str(flat.get("seed", store.seed)),
        "data": str(data),
    }


def figure_subtitle(stores: list) -> str:
    """One line under every figure: which run (or how many runs) it shows."""
    if not stores:
        return "arprobe toy model (no run)"
    if len(stores) > 1:
        return (
            f"{len(stores)} runs: "
            + ", ".join(s.path.parent.name for s in stores[:6])
            + (", …" if len(stores) > 6 else "")
        )
    try:
        i = run_identity(stores[0])
    except Exception:  # a damaged config must not stop the figures
        return str(stores[0].path.parent)
    model = i["model"].split(" (")[0]
    return (
        f"{Path(i['run']).name} · {model} · T/C/M/E {i['T / C / M / E'].replace(' ', '')} · "
        f"{i['order']} · {i['optimizer']} · seed {i['seed']}"
    )


def run_summary(store) -> dict:
    """Identity, status, headline numbers (RS per epoch, online loss), reference values, versions
    and the reproducing command of one run."""
    summary: dict = {"identity": run_identity(store)}
    planned = len(store.planned_schedule())
    summary["status"] = f"{store.status}, {store.completed_episodes} of {planned} episodes"
    if store.stop_reason:
        summary["status"] += f" ({store.stop_reason})"
    summary["numbers"] = headline_numbers(store)
    summary.update(control_summary(store, summary["numbers"]))
    summary["reference"] = paper_reference(store.config)
    summary["versions"] = {"arprobe (that wrote the run)": str(store.h5.attrs.get("arprobe_version", "?"))}
    summary["versions"].update(_versions())
    summary["reproduce"] = reproduce_command(store.config)
    return summary


def headline_numbers(store) -> dict:
    """RS per epoch (rounded, None where undefined) and the online loss of a store's completed episodes."""
    numbers: dict = {}
    if store.completed_episodes:
        loss_eval, schedule = store.eval_matrix(), store.schedule()
        rs = recovery_scores(loss_eval, schedule.doc)
        numbers["recovery_score"] = [None if not np.isfinite(v) else round(float(v), 4) for v in rs]
        ol = online_loss(loss_eval, schedule.doc, schedule.epoch)
        numbers["online_loss_after_epoch_1"] = ol.mean_after_first_epoch
        numbers["online_loss_per_epoch"] = ol.per_epoch
    return numbers


def control_summary(store, numbers: dict) -> dict:
    """``finding`` (the run against its matched shuffled control, one sentence) and the control's
    ``control_numbers`` when ``<run>/control/run.h5`` is complete; else ``finding`` says that RS alone
    is not evidence and how to get the control."""
    path = control_store_path(store.path)
    if path is None:
        return {"finding": NO_CONTROL}
    with RunStore(path) as control:
        if control.status != "complete":
            return {"finding": f"The matched control in {path.parent} is {control.status}; finish it with "
                    f"`arprobe run --resume {path.parent.parent}`. {NO_CONTROL}"}  # fmt: skip
        theirs = headline_numbers(control)
    if not numbers:
        return {"finding": NO_CONTROL, "control_numbers": theirs}

    def rs(n):
        return [np.nan if v is None else v for v in n["recovery_score"]]

    order = str(store.config.get("schedule", {}).get("order", "cyclic"))
    text = control_finding(
        rs(numbers),
        numbers["online_loss_after_epoch_1"],
        rs(theirs),
        theirs["online_loss_after_epoch_1"],
        order,
    )
    return {"finding": text, "control_numbers": theirs}


def run_summaries(stores: list) -> dict:
    runs = []
    for store in stores:
        try:
            runs.append(run_summary(store))
        except Exception as exc:  # the header must not cost the report
            runs.append({"identity": {"run": str(store.path.parent)}, "error": one_line(exc)})
    return {"runs": runs, "versions": _versions()}


def one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.splitlines()[0]
