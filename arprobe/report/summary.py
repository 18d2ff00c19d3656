"""The header of a run report: which run this is, its headline numbers against their reference,
the versions involved and the command that reproduces the run (``summary.json``).
"""

from __future__ import annotations

import re
import shlex
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from arprobe import __version__
from arprobe.science.finding import NO_CONTROL, control_finding
from arprobe.science.recovery import MIN_FORGETTING, online_loss, recovery_components, recovery_scores
from arprobe.science.reference import paper_reference
from arprobe.science.stats import mean_interval, paired_difference
from arprobe.storage import RunStore
from arprobe.storage.layout import CONTROL_DIR, control_store_path
from arprobe.trainer.config import RunConfig
from arprobe.values import flatten


def reproduce_command(config: dict, run_dir: str | Path | None = None, extra: dict | None = None) -> str:
    """`arprobe run` with every key whose value differs from the default: the run again, bit for bit.

    ``run_dir``: the folder the run lives in; the command then trains into a fresh folder beside it
    (``<name>-reproduced``, numbered if that exists too), since `arprobe run` refuses an existing
    one. ``extra``: keys to set on top (``{"control": "shuffle"}``). Empty values are left out.
    """
    flat = {**flatten(config), **(extra or {})}
    if run_dir is not None:
        run_dir = Path(run_dir)
        suffix = "with-control" if (extra or {}).get("control") else "reproduced"
        flat["out"], flat["name"] = str(run_dir.parent), fresh_name(run_dir, suffix)
    defaults = flatten(RunConfig().to_dict())
    parts = ["arprobe", "run"]
    for key, value in flat.items():
        if key not in defaults:
            continue  # a key this version of arprobe does not know (an older store)
        if value == defaults[key] or (value in ("", None, []) and not defaults[key]):
            continue  # the default anyway; `--name ''` said nothing
        text = (
            ",".join(str(v) for v in value)
            if isinstance(value, list)
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )
        parts += [f"--{key}", text]
    return shlex.join(parts)


def fresh_name(run_dir: Path, suffix: str = "reproduced") -> str:
    """``<name>-<suffix>``, or ``<name>-<suffix>-2``, -3, …: a folder beside ``run_dir`` that does not
    exist yet."""
    run_dir = Path(run_dir)
    name = f"{run_dir.name}-{suffix}"
    n = 2
    while (run_dir.parent / name).exists():
        name, n = f"{run_dir.name}-{suffix}-{n}", n + 1
    return name


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
    """Identity, status, the finding, headline numbers (RS per epoch, online loss), key numbers with
    intervals over documents, reference values, versions and the reproducing command of one run."""
    summary: dict = {"identity": run_identity(store)}
    planned = len(store.planned_schedule())
    summary["status"] = f"{store.status}, {store.completed_episodes} of {planned} episodes"
    if store.stop_reason:
        summary["status"] += f" ({store.stop_reason})"
    summary["numbers"] = headline_numbers(store)
    summary.update(control_summary(store, summary["numbers"]))
    summary["key_numbers"] = key_numbers(store)
    summary["reference"] = paper_reference(store.config, str(store.model_info.get("data", "")))
    summary["versions"] = {"arprobe (that wrote the run)": str(store.h5.attrs.get("arprobe_version", "?"))}
    summary["versions"].update(_versions())
    summary["reproduce"] = reproduce_command(store.config, store.path.parent)
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


def matched_control_path(store_path: str | Path) -> Path | None:
    """The run's matched shuffled control: ``<run>/control/run.h5`` (``arprobe run --control shuffle``),
    or a sweep's sibling ``<point>_control-shuffle_s<seed>/run.h5`` of a run ``<point>_s<seed>``
    (``control = "shuffle"`` in a sweep file); None when it has neither."""
    inside = control_store_path(store_path)
    if inside is not None:
        return inside
    run_dir = Path(store_path).parent
    match = re.fullmatch(r"(.+)_(s\d+)", run_dir.name)
    if match is None or match.group(1).endswith("_control-shuffle"):
        return None
    sibling = run_dir.parent / f"{match.group(1)}_control-shuffle_{match.group(2)}" / "run.h5"
    return sibling if sibling.is_file() else None


def _last_rs(numbers: dict) -> str:
    """ "RS(3) 0.41" of the last defined recovery score, or "" when none is defined."""
    rs = [(n, v) for n, v in enumerate(numbers.get("recovery_score") or [], start=1) if v is not None]
    return f"RS({rs[-1][0]}) {rs[-1][1]:.2f}" if rs else ""


def no_control_finding(numbers: dict) -> str:
    """The finding of a run without its control: no verdict, and why (``NO_CONTROL``)."""
    rs = _last_rs(numbers)
    return f"No verdict without the matched control{f' ({rs} on its own)' if rs else ''}. {NO_CONTROL}"


def control_summary(store, numbers: dict) -> dict:
    """``finding`` (the run against its matched shuffled control, one sentence) and the control's
    ``control_numbers`` when ``<run>/control/run.h5`` is complete; else ``finding`` says that no
    verdict is possible and ``control_command`` trains the run with its control into a fresh folder."""
    path = matched_control_path(store.path)
    order = str(store.config.get("schedule", {}).get("order", "cyclic"))
    command = (
        reproduce_command(store.config, store.path.parent, {"control": "shuffle"})
        if order in ("cyclic", "partial-shuffle")  # the orders a shuffled control is defined for
        else ""
    )
    if path is None and order == "shuffle":  # a shuffled run is the null a cyclic run is read against
        rs = _last_rs(numbers)
        return {
            "finding": f"A shuffled order: this run is itself a control{f' ({rs})' if rs else ''}, what "
            "forgetting plus noise give without a cyclic order; compare a cyclic run of its seed with it."
        }
    if path is None:
        return {"finding": no_control_finding(numbers), "control_command": command}
    with RunStore(path) as control:
        if control.status != "complete":
            folder = path.parent.parent if path.parent.name == CONTROL_DIR else path.parent  # a sweep's
            finish = f"`arprobe run --resume {folder}`"
            return {
                "finding": f"The matched control in {path.parent} is {control.status}; finish it with "
                f"{finish}. {no_control_finding(numbers)}"
            }
        theirs = headline_numbers(control)
    if not numbers:
        return {"finding": no_control_finding(numbers), "control_numbers": theirs}

    def rs(n):
        return [np.nan if v is None else v for v in n["recovery_score"]]

    text = control_finding(
        rs(numbers),
        numbers["online_loss_after_epoch_1"],
        rs(theirs),
        theirs["online_loss_after_epoch_1"],
        order,
    )
    return {"finding": text, "control_numbers": theirs}


# --- key numbers with intervals over documents ---------------------------------------------------

BOOTSTRAP = 2000  # resamples of the documents for the recovery score's interval
CONFIDENCE = 0.95
INTERVAL_NOTE = (
    "95% intervals over this run's documents (one seed: they do not include the spread between seeds; "
    "a sweep over seeds gives that)"
)


def _document_terms(store) -> dict:
    """What the key numbers are computed from: recovery components, RS per epoch and each document's
    mean online loss over epochs 2..E ([T], NaN for a document not trained then)."""
    loss_eval, schedule = store.eval_matrix(), store.schedule()
    ol = online_loss(loss_eval, schedule.doc, schedule.epoch)
    later = np.asarray(schedule.epoch) >= 2
    docs, losses = np.asarray(schedule.doc)[later], ol.per_episode[later]
    by_doc = np.array(
        [losses[docs == t].mean() if (docs == t).any() else np.nan for t in range(loss_eval.shape[1])]
    )
    return {
        "components": recovery_components(loss_eval, schedule.doc),
        "rs": recovery_scores(loss_eval, schedule.doc),
        "online_by_doc": by_doc,
        "n_docs": loss_eval.shape[1],
    }


def _bootstrap_rs(components, n: int, index: np.ndarray) -> np.ndarray:
    """RS(n) of every resample of documents (``index`` [B, T]), NaN where the resample's forgetting
    is too small to score (as ``recovery_scores``)."""
    l_max, l_before, l_after = (np.asarray(x[n - 1])[index] for x in (
        components.l_max, components.l_before, components.l_after))  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only untrained documents: NaN
        m_max, m_before, m_after = (np.nanmean(x, axis=1) for x in (l_max, l_before, l_after))
        forgetting = m_max - m_after
        scores = (m_max - m_before) / forgetting
    scores[~(forgetting > MIN_FORGETTING * np.abs(m_after))] = np.nan
    return scores


def _percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    """The central ``CONFIDENCE`` interval of bootstrap samples; NaN when over 5% are undefined."""
    finite = samples[np.isfinite(samples)]
    if len(finite) < 0.95 * len(samples):
        return float("nan"), float("nan")
    tail = 50 * (1 - CONFIDENCE)
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _number(value, low, high, **more) -> dict:
    return {"value": float(value), "low": float(low), "high": float(high), **more}


def key_numbers(store) -> dict:
    """The few numbers the console prints, each with a 95% interval over the run's documents:
    RS(n) at the last epoch n both the run and its control define (document bootstrap), the mean
    online loss over epochs 2..E (t interval over documents) and, with a complete matched control,
    the control's and the paired differences run − control (the same documents resampled)."""
    if not store.completed_episodes:
        return {}
    run = _document_terms(store)
    control = None
    path = matched_control_path(store.path)
    if path is not None:
        with RunStore(path) as c:
            if c.status == "complete":
                control = _document_terms(c)
    defined = np.isfinite(run["rs"])
    if control is not None:
        width = min(len(run["rs"]), len(control["rs"]))
        defined = defined[:width] & np.isfinite(control["rs"][:width])
    out: dict = {"interval": INTERVAL_NOTE, "documents": int(run["n_docs"])}
    if defined.any():
        n = int(np.flatnonzero(defined)[-1]) + 1
        index = np.random.default_rng(0).integers(0, run["n_docs"], size=(BOOTSTRAP, run["n_docs"]))
        boot = _bootstrap_rs(run["components"], n, index)
        out["recovery_score"] = _number(run["rs"][n - 1], *_percentile_interval(boot), epoch=n)
        if control is not None:
            theirs = _bootstrap_rs(control["components"], n, index)
            out["control_recovery_score"] = _number(
                control["rs"][n - 1], *_percentile_interval(theirs), epoch=n
            )
            out["recovery_score_difference"] = _number(
                run["rs"][n - 1] - control["rs"][n - 1], *_percentile_interval(boot - theirs), epoch=n
            )
    if np.isfinite(run["online_by_doc"]).sum() >= 2:
        i = mean_interval(run["online_by_doc"], CONFIDENCE)
        out["online_loss"] = _number(i.mean, i.low, i.high)
        if control is not None:
            c = mean_interval(control["online_by_doc"], CONFIDENCE)
            d = paired_difference(control["online_by_doc"], run["online_by_doc"], CONFIDENCE)
            out["control_online_loss"] = _number(c.mean, c.low, c.high)
            out["online_loss_difference"] = _number(d.mean, d.low, d.high)
    return out


def _interval_text(number: dict, digits: int = 3) -> str:
    """``0.414 [0.331, 0.492]``; without the interval when it is undefined."""
    value = f"{number['value']:.{digits}f}"
    if np.isfinite(number["low"]) and np.isfinite(number["high"]):
        return f"{value} [{number['low']:.{digits}f}, {number['high']:.{digits}f}]"
    return f"{value} [interval undefined]"


def console_lines(summary: dict) -> list[str]:
    """What `arprobe run` and `arprobe analyze` print about one run: the finding first, then the key
    numbers with their intervals, and the command that trains the control when there is none. The
    full numbers are in summary.json and the report."""
    lines = [f"finding: {summary.get('finding', '')}"]
    k = summary.get("key_numbers") or {}
    rows = []
    if "recovery_score" in k:
        rows.append((f"RS({k['recovery_score']['epoch']})", "recovery_score", 3))
    if "online_loss" in k:
        rows.append(("online loss, epochs 2..E", "online_loss", 3))
    with_control = "control_online_loss" in k or "control_recovery_score" in k
    for label, key, digits in rows:
        line = f"  {label:<26} {_interval_text(k[key], digits)}"
        if with_control and f"control_{key}" in k:
            line += f"   control {_interval_text(k[f'control_{key}'], digits)}"
            d = k[f"{key}_difference"]
            line += f"   run − control {d['value']:+.{digits}f}"
            if np.isfinite(d["low"]):
                line += f" [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"
        lines.append(line)
    if rows:
        lines.append(f"  ({k['interval']})")
    if summary.get("control_command"):
        lines.append("train the run with its matched shuffled control (a fresh folder):")
        lines.append(f"  {summary['control_command']}")
    return lines


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
