"""The HTML of the report pages: the run report's index and the sweep report's index, drawn with one
style and one set of helpers (page shell, tables, figures with their SVG/CSV links, number format).

Pages are built from what the report folder holds (``summary.json``, ``<probe>/result.json``,
``sweep.json``), never from a probe: a page can be rewritten without running anything again.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from arprobe.jsonio import write_text_atomic
from arprobe.report.guide import human_name, reading_position

STATUSES = ("ok", "skipped", "failed")
esc = html.escape

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.status { font-size: 0.8em; padding: 0.1em 0.5em; border-radius: 0.3em; margin-left: 0.5em; }
.ok { background: #e3f4e3; } .skipped { background: #f4f0dc; } .failed, .bad { background: #f7dede; }
.caution { color: #a05a00; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { padding: 0.15em 0.8em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
td.key, th { color: #555; font-weight: normal; } small { color: #666; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3em 0; }
figure { margin: 0.5em 0 1.2em 0; } figcaption { font-size: 0.8em; color: #666; }
.reason { font-family: monospace; white-space: pre-wrap; } nav a { margin-right: 1em; }
.finding { font-size: 1.1em; border-left: 4px solid #4a7; padding: 0.3em 0.8em; background: #f4faf6; }
.look { background: #eef4fb; padding: 0.4em 0.7em; border-left: 3px solid #7aa7d8; }
code.cmd { display: block; background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }
iframe { width: 100%; height: 560px; border: 1px solid #eee; }
pre.trace { background: #fbf3f3; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
"""

# Checks, once the page has loaded, that every figure did: a broken one is named on the console
# and the count is left on <body data-images-loaded="n/m"> (read by the report's browser test).
CHECK_IMAGES = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  broken.forEach(function (im) { console.error("figure did not load: " + im.getAttribute("src")); });
  document.body.setAttribute("data-images-loaded", (images.length - broken.length) + "/" + images.length);
});
"""


# --- helpers shared by every page ------------------------------------------------------------------


def write_page(path: Path, title: str, body: list[str]) -> Path:
    """Write one report page (``body``: HTML fragments, already escaped) with the shared style and the
    figure check, atomically."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{STYLE}</style>",
        f"<script>{CHECK_IMAGES}</script></head><body>",
        *body,
        "</body></html>",
    ]
    return write_text_atomic(Path(path), "\n".join(parts))


def table_html(
    rows: list[list[str]],
    head: list[str] | None = None,
    *,
    row_classes: list[str] | None = None,
    key_column: bool = False,
) -> str:
    """A table of HTML cells (escaped by the caller). ``head``: header cells; ``row_classes``: one CSS
    class per row ("" for none); ``key_column``: the first column is drawn as labels."""
    lines = ["<table>"]
    if head:
        lines.append("<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for i, cells in enumerate(rows):
        cls = row_classes[i] if row_classes else ""
        tds = [
            f"<td class='key'>{c}</td>" if key_column and j == 0 else f"<td>{c}</td>"
            for j, c in enumerate(cells)
        ]
        lines.append(f"<tr{f' class={cls}' if cls else ''}>" + "".join(tds) + "</tr>")
    lines.append("</table>")
    return "".join(lines)


def key_value_table(items: list[tuple[str, str]]) -> str:
    """Label/value rows (both plain text), labels in the key style."""
    return (
        "<table>"
        + "".join(f"<tr><td class='key'>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in items)
        + "</table>"
    )


def figure_html(page_dir: Path, figure: str, folder: str = "") -> str:
    """A figure (``folder/figure``, relative to the page) with links to its PNG, SVG and CSV where
    they exist next to it."""
    src = f"{folder}/{figure}" if folder else figure
    stem = src.rsplit(".", 1)[0]
    links = [
        f"<a href='{esc(stem)}.{ext}'>{ext.upper()}</a>"
        for ext in ("png", "svg", "csv")
        if (Path(page_dir) / f"{stem}.{ext}").exists()
    ]
    alt = f"{folder}: {figure}" if folder else figure
    return (
        f"<figure><img src='{esc(src)}' alt='{esc(alt)}'>"
        f"<figcaption>{esc(figure)} · {' · '.join(links)}</figcaption></figure>"
    )


def format_value(value, digits: int = 4) -> str:
    """A headline value as a short string: numbers to ``digits`` significant digits, lists inline."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, list):
        shown = ", ".join(format_value(v, digits) for v in value[:12])
        return f"[{shown}{', …' if len(value) > 12 else ''}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v, digits)}" for k, v in value.items()) + "}"
    return str(value)


def fmt(value, digits: int = 3) -> str:
    """A number to ``digits`` decimals; "n/a" for None and NaN."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def mean_pm_std(s: dict, digits: int = 3) -> str:
    """``"mean ± std"`` of a summary over seeds ({"n", "mean", "std"}; lists: one per epoch)."""
    if s is not None and isinstance(s.get("mean"), list):  # one summary per epoch
        return (
            "["
            + ", ".join(
                mean_pm_std({"n": n, "mean": m, "std": d}, digits)
                for n, m, d in zip(s["n"], s["mean"], s["std"])
            )
            + "]"
        )
    if s is None or not s.get("n"):
        return "n/a"
    return fmt(s["mean"], digits) + (f" ± {fmt(s['std'], digits)}" if s["n"] > 1 else "")


# Written labels of the built-in probes' headline keys (the key itself is the cell's tooltip). Documents
# are named 1-based in words, as the paper's x_1..x_T; option values (``doc = 0``) stay 0-based indices.
LABELS = {
    # loss_curves
    "doc_loss_before_training": "loss of the document just before each training",
    "doc_recovered": "fraction of the document's forgetting recovered, per epoch",
    "shift_avg_peak_position": "peak of the shift-averaged curve (episodes after training), per epoch",
    "shift_avg_recovered": "fraction recovered, shift-averaged curve, per epoch",
    # recovery_score
    "recovery_score": "recovery score RS(n), per epoch",
    "undefined": "undefined scores",
    "control_recovery_score": "matched shuffled control's RS(n), per epoch",
    "verdict": "verdict",
    # forgetting
    "forgetting_mean": "forgetting, mean",
    "max_forgetting_mean": "largest forgetting, mean",
    "bwt_mean": "backward transfer (BWT), mean",
    "bwt_per_epoch": "backward transfer (BWT), per epoch",
    "plasticity_mean": "plasticity, mean",
    "plasticity_per_epoch": "plasticity, per epoch",
    "anticipation_ratio_median": "anticipation ratio, median",
    "anticipation_ratio_per_epoch": "anticipation ratio, per epoch",
    # recovery_map
    "onset_lag_per_epoch": "recovery onset lag (episodes), per epoch",
    "onset_lag_mean": "recovery onset lag (episodes), mean",
    "onset_lag_trend": "change of the onset lag per epoch (episodes)",
    "anticipating_fraction": "fraction of documents that anticipate",
    # gradient_similarity
    "layer": "layer",
    "episode": "episode",
    "mean_offdiagonal": "gradient cosine between documents, mean",
    "positional_effect": "positional effect",
    "neighbour_effect": "neighbour effect",
    "by_distance": "by distance along the cycle (d = 1, 2, …)",
    "last_trained_doc_mean": "cosine with the last-trained document, mean",
    # pairwise_recovery
    "checkpoint_episode": "checkpoint (episode)",
    "symmetry": "symmetry of the recovery matrix",
    "neighbour_recovery_mean": "recovery from neighbouring documents, mean",
    "b_since_trained": "documents since its own training at the largest neighbour recovery (b)",
    # weight_residual_similarity
    "weights": "weights",
    "residual": "residual",
    "stripe_period_episodes": "stripe period (episodes)",
    "stripe_period_epochs": "stripe period (epochs)",
    "similarity_at_lag_T": "similarity one epoch (T episodes) apart",
    "similarity_at_lag_half_T": "similarity half an epoch (T/2 episodes) apart",
    "similarity_same_doc": "similarity at the same document",
    # pca_weights
    "helix_cosine": "helix cosine",
    "helix_verdict": "helix verdict",
    "explained_variance": "explained variance of PC 1, 2, 3",
    "pc_period_episodes": "period of PC 1, 2, 3 (episodes)",
    "winding_epochs": "epochs whose winding is measured (complete epochs)",
    "winding_revolutions": "revolutions in each of those epochs",
    "radius_per_epoch": "radius, per epoch",
    "radius_last_over_first": "radius, last epoch over first",
    "helix_cosine_random_walk_q975": "helix cosine of random walks, 97.5th percentile",
    # activation_drift
    "hook": "activations at",
    "doc": "document",
    "within_epoch_similarity": "activation similarity within each epoch",
    "activation_change_per_epoch": "activation change, per epoch",
    "doc_training_change_ratio": "change while the document trains over change otherwise",
    "weight_change_per_epoch": "weight change, per epoch",
    # model_clock
    "collapse_error_episodes": "collapse error, clock in episodes",
    "collapse_error_model_time": "collapse error, clock in model time",
    "collapse_ratio": "collapse error, model time over episodes",
    "update_norm_per_epoch": "update norm, per epoch",
    "model_time_per_epoch": "model time, per epoch",
    # order_decoding
    "rank_correlation": "rank correlation of decoded and true order",
    "pairwise_accuracy": "pairwise order accuracy",
    "last_trained_accuracy": "last-trained document found",
    "last_trained_chance": "last-trained document found by chance",
    "pairwise_accuracy_per_epoch": "pairwise order accuracy, per epoch",
    "last_trained_accuracy_per_epoch": "last-trained document found, per epoch",
    # toy_model
    "toy_schedule": "toy model's schedule",
    "identity_rs_first": "toy f_i(w) = w: RS, first epoch",
    "identity_rs_last": "toy f_i(w) = w: RS, last epoch",
    "target_rs_first": "toy f_i(w) = y_i − w: RS, first epoch",
    "target_rs_last": "toy f_i(w) = y_i − w: RS, last epoch",
    "target_circle_order_before": "toy f_i(w) = y_i − w: ring order before training",
    "target_circle_order_after": "toy f_i(w) = y_i − w: ring order after training",
    "run_rs": "the run's RS, per epoch",
    "run_helix_cosine": "the run's helix cosine",
    "toy_helix_cosine": "the toy's helix cosine",
    "curve_correlation": "correlation of the toy's and the run's shift-averaged curves",
    "closed_form_task1_max_abs_diff": "closed form against the simulated toy: largest difference, task 1",
    "closed_form_curve_correlation": "correlation of the toy's and the linear-regression baseline's curves",
    "closed_form_rs_last": "linear-regression baseline (w frozen): RS, last epoch",
    "closed_form_toy_error": "closed form against the simulated toy: largest difference",
    # order_decoding, held-out protocol (Krasheninnikov et al.)
    "heldout_stage_accuracy": "held-out documents: training stage decoded",
    "heldout_stage_chance": "held-out documents: stage decoded by chance",
    "heldout_stage_interval": "held-out stage accuracy, 95% interval",
    "heldout_stage_null_q975": "held-out stage accuracy with shuffled stages, 97.5th percentile",
    "heldout_pairwise_accuracy": "held-out documents: which of two stages, mean accuracy",
    "heldout_first_last_accuracy": "held-out documents: first or last stage",
    "control_heldout_stage_accuracy": "matched shuffled control's held-out stage accuracy",
    "heldout_verdict": "held-out verdict",
    # retrospective
    "bump": "anticipation bump of the re-evaluation curve",
    "bump_interval": "anticipation bump, 95% interval",
    "peak_recency": "episodes since training at the curve's peak",
    "control_bump": "matched shuffled control's anticipation bump",
    # learning_dynamics
    "source": "gradients from",
    "spearman": "rank correlation of predicted and replayed recovery",
    "spearman_interval": "rank correlation, 95% interval",
    "r2": "replayed recovery explained by the prediction (R²)",
    "interaction_pearson": "pair-specific correlation (row and column means removed)",
    "sketch_spearman": "rank correlation from the recorded (sketched) gradients",
    "control_spearman": "matched shuffled control's rank correlation",
    # relearning
    "mean_savings_ratio": "relearning steps over first-learning steps, mean",
    "savings_interval": "savings ratio, 95% interval",
    "n_censored": "documents not back at their loss within the step cap",
    "n_already_there": "documents already at their loss",
    "control_mean_savings_ratio": "matched shuffled control's savings ratio",
}
_WORDS = {"avg": "average", "doc": "document", "docs": "documents", "rs": "RS", "bwt": "BWT", "pc": "PC"}


def humanize(key: str) -> str:
    """A result key as words: a written label for the built-in probes' keys (``LABELS``), otherwise
    the key's words with units in brackets (``pc_period_episodes`` -> "PC period (episodes)")."""
    if key in LABELS:
        return LABELS[key][0].upper() + LABELS[key][1:]
    words = key.split("_")
    unit = ""
    if len(words) > 1 and words[-1] in ("episodes", "epochs", "steps", "seconds", "nats"):
        unit = f" ({words.pop()})"
    if words[-2:] == ["per", "epoch"]:
        unit = ", per epoch" + unit
        words = words[:-2]
    text = " ".join(_WORDS.get(w.lower(), w) for w in words) + unit
    return text[:1].upper() + text[1:]


def headline_value(key: str, value) -> str:
    """A headline value as text; a document index (``doc``, 0-based) as the 1-based document it is."""
    if key == "doc" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return f"document {value + 1} (doc = {value}, 0-based)"
    return format_value(value)


# --- the run report: index.html of <run>/report ------------------------------------------------------

_RUN_COLUMNS = ("run", "model", "T / C / M / E", "order", "optimizer", "seed")


def summary_html(summary: dict) -> list[str]:
    """The header of a run report from summary.json: one run's identity, headline numbers against their
    reference and the reproducing command, or a table of runs for a multi-run report."""
    runs = summary.get("runs", [])
    if not runs:
        return []
    if len(runs) > 1:
        rows = [
            [esc(str(r.get("identity", {}).get(k, ""))) for k in _RUN_COLUMNS]
            + [
                esc(format_value(r.get("numbers", {}).get("recovery_score"), 3)),
                esc(format_value(r.get("numbers", {}).get("online_loss_after_epoch_1"), 4)),
                esc(r.get("finding", "")),
            ]
            for r in runs
        ]
        head = [*_RUN_COLUMNS, "RS per epoch", "online loss", "finding"]
        return [f"<h2 id='summary'>Runs</h2>{table_html(rows, head)}"]
    r = runs[0]
    if r.get("error"):
        return [f"<p class='reason'>summary unavailable: {esc(r['error'])}</p>"]
    identity = [(k, str(v)) for k, v in r["identity"].items()] + [("status", r["status"])]
    numbers, ref = r.get("numbers", {}), r.get("reference", {})
    rs = numbers.get("recovery_score") or []
    rs_text = (
        ", ".join(f"RS({i + 1}) {format_value(v, 3)}" for i, v in enumerate(rs)) or "n/a (needs 2 epochs)"
    )
    heads = [
        ("recovery score per epoch", rs_text, ref.get("recovery_score", "")),
        (
            "online loss, mean over epochs 2..E",
            format_value(numbers.get("online_loss_after_epoch_1"), 4),
            ref.get("online_loss", ""),
        ),
    ]
    control = r.get("control_numbers")
    if control:
        crs = ", ".join(f"RS({i + 1}) {format_value(v, 3)}" for i, v in enumerate(control["recovery_score"]))
        theirs = [crs, format_value(control.get("online_loss_after_epoch_1"), 4)]
        head_rows = [[esc(k), esc(v), esc(c), esc(p or "—")] for (k, v, p), c in zip(heads, theirs)]
        columns = ["headline", "this run", "matched shuffled control", "reference"]
    else:
        head_rows = [[esc(k), esc(v), esc(p or "—")] for k, v, p in heads]
        columns = ["headline", "this run", "reference"]
    if ref.get("source"):
        notes = [f"Reference: {ref['source']}."]
    else:
        notes = [
            "No paper setting matches this run, so there is no reference value (the paper states "
            "numbers only for Table 1: T=100, C=512, M=10, E=5, SGD lr 0.001, pre-trained Pythia on "
            "CNN/DailyMail). "
            "Differs in: " + "; ".join(ref.get("differs", [])) + "."
        ]
    if ref.get("paper"):
        notes.append(ref["paper"])
    versions = " · ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
    return [
        "<h2 id='summary'>Summary</h2>",
        *key_numbers_html(r),
        key_value_table(identity),
        table_html(head_rows, columns, key_column=True),
        *(f"<p><small>{esc(note)}</small></p>" for note in notes),
        f"<p><small>{esc(versions)}</small></p>",
        "<p><small>Reproduce this run:</small></p>",
        f"<code class='cmd'>{esc(r.get('reproduce', ''))}</code>",
    ]


def finding_html(summary: dict) -> list[str]:
    """The run's finding, one sentence (summary.json), for the top of the page, and the command that
    trains its matched control when it has none; nothing for a multi-run report."""
    runs = summary.get("runs", [])
    if len(runs) != 1 or not runs[0].get("finding"):
        return []
    r = runs[0]
    parts = [f"<p class='finding'><b>Finding:</b> {esc(r['finding'])}</p>"]
    if r.get("control_command"):
        parts.append("<p><small>Train this run with its matched shuffled control (into a fresh folder), "
                     "then analyze that folder:</small></p>")  # fmt: skip
        parts.append(f"<code class='cmd'>{esc(r['control_command'])}</code>")
    return parts


def interval_text(number: dict, digits: int = 3, sign: bool = False) -> str:
    """``0.414 [0.331, 0.492]`` of a key number ({"value", "low", "high"})."""
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    text = f.format(number["value"])
    if number.get("low") is not None and np.isfinite(number["low"]) and np.isfinite(number["high"]):
        return f"{text} [{f.format(number['low'])}, {f.format(number['high'])}]"
    return f"{text} [interval undefined]"


def key_numbers_html(r: dict) -> list[str]:
    """The key numbers of the finding with their 95% intervals over documents (summary.json's
    ``key_numbers``): RS at the compared epoch and the online loss; with the control, its values and
    the paired difference run − control."""
    k = r.get("key_numbers") or {}
    rows = []
    for key, label in (("recovery_score", "RS({epoch})"), ("online_loss", "online loss, epochs 2..E")):
        if key not in k:
            continue
        cells = [esc(label.format(epoch=k[key].get("epoch", ""))), esc(interval_text(k[key]))]
        if f"control_{key}" in k:
            cells += [
                esc(interval_text(k[f"control_{key}"])),
                esc(interval_text(k[f"{key}_difference"], sign=True)),
            ]
        rows.append(cells)
    if not rows:
        return []
    head = ["key number", "this run"]
    if any(len(c) > 2 for c in rows):
        head += ["matched shuffled control", "run − control"]
    return [table_html(rows, head, key_column=True), f"<p><small>{esc(k['interval'])}.</small></p>"]


def read_probe_records(report_dir: Path) -> list[dict]:
    """Every ``<probe>/result.json`` of a report folder, in reading order; an unreadable one as a
    failure record."""
    records = []
    for path in sorted(Path(report_dir).glob("*/result.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError
        except (OSError, ValueError):
            record = {"probe": path.parent.name, "status": "failed", "reason": "result.json is unreadable"}
        record["probe"] = path.parent.name  # the folder is the name, whatever the file says
        records.append(record)
    records.sort(key=lambda r: reading_position(r["probe"]))
    return records


def _text(record: dict, key: str) -> str:
    """A field of a result.json as text ("" unless it is a string: a plugin may write anything)."""
    value = record.get(key, "")
    return value if isinstance(value, str) else ""


def probe_section_html(report_dir: Path, r: dict) -> list[str]:
    """One probe's section of the run report: title, what to look for, headline numbers, figures and
    interactive views, or the reason (and traceback) of a skip or failure."""
    name = r["probe"]
    status = _text(r, "status") if r.get("status") in STATUSES else "failed"
    parts = [
        f"<h2 id='{esc(name)}'>{esc(_text(r, 'title') or human_name(name))} <small>({esc(name)})</small>"
        f"<span class='status {status}'>{status}</span></h2>"
    ]
    if _text(r, "look_for"):
        parts.append(f"<p class='look'><b>What to look for:</b> {esc(_text(r, 'look_for'))}</p>")
    if _text(r, "description"):
        parts.append(f"<p>{esc(_text(r, 'description'))}</p>")
    if status != "ok":
        parts.append(f"<p class='reason'>{esc(_text(r, 'reason'))}</p>")
        if _text(r, "traceback"):
            parts.append(
                f"<details><summary>traceback</summary><pre class='trace'>{esc(_text(r, 'traceback'))}"
                "</pre></details>"
            )
        parts.append(f"<p><small><a href='{esc(name)}/result.json'>result.json</a></small></p>")
        return parts
    if isinstance(r.get("headline"), dict) and r["headline"]:
        rows = "".join(
            f"<tr><td class='key' title='{esc(k)}'>{esc(humanize(k))}</td>"
            f"<td>{esc(headline_value(k, v))}</td></tr>"
            for k, v in r["headline"].items()
        )
        parts.append(f"<table>{rows}</table>")
    parts.append(f"<p><small>{esc(options_text(r))}{seconds_text(r)} · "
                 f"<a href='{esc(name)}/result.json'>result.json</a></small></p>")  # fmt: skip
    parts += [figure_html(report_dir, fig, name) for fig in r.get("figures") or [] if isinstance(fig, str)]
    for view in r.get("views") or []:
        if isinstance(view, str):
            parts.append(
                f"<figure><iframe src='{esc(name)}/{esc(view)}' title='{esc(view)}'></iframe>"
                f"<figcaption>interactive view: <a href='{esc(name)}/{esc(view)}'>{esc(view)}</a> "
                "(works offline)</figcaption></figure>"
            )
    return parts


def seconds_text(r: dict) -> str:
    seconds = r.get("seconds", 0) if isinstance(r.get("seconds"), (int, float)) else 0
    return f"{seconds:.1f} s"


def options_text(r: dict) -> str:
    """``options: a=1, b=x · `` as the probe ran: an option the probe took from the run instead
    (its result's ``options_from_run``, e.g. the toy model's T and E) shows the run's value."""
    opts = r.get("options") if isinstance(r.get("options"), dict) else {}
    result = r.get("result") if isinstance(r.get("result"), dict) else {}
    from_run = result.get("options_from_run") if isinstance(result.get("options_from_run"), dict) else {}
    if not opts:
        return ""
    shown = [
        f"{k}={format_value(from_run[k])} (the run's)"
        if k in from_run
        else f"{k}=auto"  # an empty option: the probe chooses from what the run recorded
        if v == ""
        else f"{k}={format_value(v)}"
        for k, v in opts.items()
    ]
    return "options: " + ", ".join(shown) + " · "


def write_run_index(report_dir: Path, title: str) -> Path:
    """index.html: the summary (summary.json), then every ``<probe>/result.json`` in reading order."""
    report_dir = Path(report_dir)
    records = read_probe_records(report_dir)
    try:
        summary = json.loads((report_dir / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    counts = {s: sum(r.get("status") == s for r in records) for s in STATUSES}
    body = [
        f"<h1>arprobe report: {esc(title)}</h1>",
        *finding_html(summary),
        f"<p><small>{counts['ok']} probe(s) ok, {counts['skipped']} skipped, "
        f"{counts['failed']} failed</small></p>",
        "<nav><a href='#summary'>Summary</a>"
        + "".join(
            f"<a href='#{esc(r['probe'])}' class='{esc(_text(r, 'status'))}'>"
            f"{esc(_text(r, 'title') or human_name(r['probe']))}</a>"
            for r in records
        )
        + "</nav>",
        *summary_html(summary),
    ]
    for r in records:
        body += probe_section_html(report_dir, r)
    return write_page(report_dir / "index.html", f"arprobe report: {title}", body)


# --- the sweep report: index.html of <sweep>/report ---------------------------------------------------


MIN_SEEDS = 3  # fewer seeds than this: a std or a t interval is shown with a caution


def small_n_caution(n: int) -> str:
    """What a spread over ``n`` seeds is worth, for n < MIN_SEEDS."""
    if n == 1:
        return "n = 1: one seed, no spread or interval"
    return f"n = {n}: too few seeds for a meaningful spread or interval"


def _run_link_cells(report_dir: Path, e: dict, run_links: Path | None) -> str:
    """Links to each seed's own report (``s0 s1 …``); a seed whose report is missing says how to make it."""
    if run_links is None or not e["runs"]:
        return ""
    cells = []
    for r, seed in zip(e["runs"], e["seeds"]):
        page = run_links / r / "report" / "index.html"
        if (report_dir / page).exists():
            cells.append(f"<a href='{esc(page.as_posix())}'>s{seed}</a>")
        else:
            cells.append(f"<span title='arprobe analyze {esc((run_links / r).as_posix())}'>s{seed}</span>")
    return f" <small>{' '.join(cells)}</small>"


def _point_row(report_dir: Path, e: dict, run_links: Path | None) -> list[str]:
    """One point of the sweep's points table: its label (with links to its runs' reports), seeds,
    final and per-epoch recovery score, online loss and the runs left out."""
    rs = e.get("recovery_score")
    per_epoch = ", ".join(fmt(v) for v in rs["mean"]) if rs else "n/a"
    final = e.get("final_recovery_score")
    excluded = ", ".join(f"{x['run']} ({x['status']})" for x in e["excluded"])
    name = esc(e["label"]) + _run_link_cells(report_dir, e, run_links)
    epoch = f" <small>RS({final['epoch']})</small>" if final else ""
    if final and final["n"] < e["n"]:  # an undefined score (no forgetting to recover from) is left out
        epoch += f" <small>defined for {final['n']} of {e['n']} seeds</small>"
    if 0 < e["n"] < MIN_SEEDS:
        epoch += f" <small class='caution'>{esc(small_n_caution(e['n']))}</small>"
    return [
        name,
        str(e["n"]),
        f"{esc(mean_pm_std(final))}{epoch}",
        esc(per_epoch),
        esc(mean_pm_std(e.get("online_loss"), 4)),
        esc(excluded),
    ]


def _table1_html(table: dict) -> list[str]:
    """The Table-1 section: online loss per order, and each order minus the reference, paired by seed."""
    ref, orders = table["reference"], table["orders"]
    diffs = [o for o in orders if o != ref]
    rows = []
    for row in table["rows"]:
        cells = [esc(row["label"])] + [esc(mean_pm_std(row["orders"].get(o), 4)) for o in orders]
        for o in diffs:
            d = row["differences"].get(o)
            text = (
                f"{fmt(d['mean'], 4)} [{fmt(d['ci_low'], 4)}, {fmt(d['ci_high'], 4)}] (n={d['n']})"
                if d
                else "n/a"
            )
            if d and d["n"] < MIN_SEEDS:
                text += f" — {small_n_caution(d['n'])}"
            cells.append(esc(text))
        rows.append(cells)
    head = ["point", *(esc(o) for o in orders), *(f"{esc(o)} − {esc(ref)} [95% CI]" for o in diffs)]
    return [
        "<h2>Online loss, epochs 2..E (Table 1)</h2><p>Mean ± std over seeds; the difference is paired "
        f"by seed (same documents and initialisation), {esc(', '.join(diffs))} minus {esc(ref)}, with "
        "its t-based 95% interval. A positive difference: the cyclic order has the lower online loss.</p>",
        table_html(rows, head),
    ]


def difference_text(d: dict, digits: int = 3) -> str:
    """``+0.377 [+0.351, +0.403] (n = 20)``, with the small-n caution where it applies."""
    if not d or not d.get("n"):
        return "n/a"
    text = f"{d['mean']:+.{digits}f}"
    if d["n"] >= 2 and d.get("ci_low") is not None and np.isfinite(d["ci_low"]):
        text += f" [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"
    text += f" (n = {d['n']})"
    if d["n"] < MIN_SEEDS:
        text += f" — {small_n_caution(d['n'])}"
    return text


def sweep_finding(summary: dict) -> str:
    """The sweep's finding in one sentence: each point against its matched control (paired by seed,
    95% t interval), or why there is no verdict."""
    paired = [e for e in summary["points"] if e.get("versus_control")]
    table = summary.get("table1") or {}
    orders = [
        (row["label"], o, d) for row in table.get("rows", []) for o, d in row["differences"].items() if d
    ]
    if not paired and orders:  # the order is a factor: its shuffled points are the controls
        return "; ".join(
            f"{'' if label == 'all runs' else label + ': '}online loss {o} − {table['reference']} "
            f"{difference_text(d, 4)}"
            for label, o, d in orders
        ) + (f" (paired by seed, 95% t interval; positive: {table['reference']} has the lower online loss).")
    if not paired:
        return (
            "No verdict: the sweep has no matched shuffled control, and RS on its own is not evidence of "
            'anticipation (>= 0 by construction); add control = "shuffle" to the sweep file and run it again.'
        )
    parts = []
    for e in paired:
        v = e["versus_control"]
        rs = v["final_recovery_score"]
        epoch = e.get("final_recovery_score", {}).get("epoch", "")
        parts.append(
            f"{e['label']}: RS({epoch}) minus its control {difference_text(rs)}, "
            f"online loss minus its control {difference_text(v['online_loss'])}"
        )
    return "; ".join(parts) + " (paired by seed, 95% t interval)."


def _versus_control_html(entries: list[dict]) -> list[str]:
    """Each point against its matched shuffled control, paired by seed."""
    rows = [
        [
            esc(e["label"]),
            esc(difference_text(e["versus_control"]["final_recovery_score"])),
            esc(difference_text(e["versus_control"]["first_doc_recovery_score"])),
            esc(difference_text(e["versus_control"]["online_loss"], 4)),
        ]
        for e in entries
        if e.get("versus_control")
    ]
    if not rows:
        return []
    head = ["point", "final RS − control [95% CI]", "document 1's RS − control", "online loss − control"]
    return [
        "<h2>Against the matched shuffled control</h2><p>Paired by seed (same documents and "
        "initialisation); a positive RS difference and a negative online-loss difference favour the "
        "point's order over a shuffled one.</p>",
        table_html(rows, head),
    ]


def _sweep_probes_html(entries: list[dict]) -> list[str]:
    """Probe headline numbers per point (mean ± std over seeds), linking multi-run probes' reports."""
    rows = []
    for e in entries:
        for name, p in e.get("probes", {}).items():
            items = [
                f"{humanize(key)}: "
                + (mean_pm_std(value, 4) if isinstance(value, dict) and "n" in value else str(value))
                for key, value in p["headline"].items()
            ]
            link = f" <a href='{esc(p['report'])}'>report</a>" if p.get("report") else ""
            rows.append(
                [
                    esc(e["label"]),
                    f"{esc(name)}{link}",
                    esc(", ".join(sorted(set(p["status"])))),
                    esc("; ".join(items)),
                ]
            )
    if not rows:
        return []
    return [
        "<h2>Probes (headline numbers, mean ± std over seeds)</h2>",
        table_html(rows, ["point", "probe", "status", "headline"]),
    ]


def write_sweep_index(report_dir: Path, summary: dict, run_links: Path | None) -> Path:
    """index.html of a sweep report (``summary``: sweep.json): the points table, Table 1, the figures,
    probe numbers and excluded runs. ``run_links``: the runs' folder relative to the page, to link each
    seed's own report."""
    report_dir = Path(report_dir)
    entries = summary["points"]
    body = [
        f"<h1>arprobe sweep report: {esc(summary['title'])}</h1>",
        f"<p class='finding'><b>Finding:</b> {esc(sweep_finding(summary))}</p>",
    ]
    if summary.get("fixed"):
        body.append(
            "<h2>Fixed settings</h2><p>Shared by every run of the sweep (the grid varies the rest):</p>"
        )
        body.append(key_value_table(list(summary["fixed"].items())))
    if summary["grid"]:
        body.append(
            "<p>grid: "
            + "; ".join(f"{esc(k)} = {esc(json.dumps(v))}" for k, v in summary["grid"].items())
            + "</p>"
        )
    body.append("<p><a href='sweep.json'>sweep.json</a> (every number, per seed)</p><h2>Points</h2>")
    head = [
        "point",
        "seeds",
        "final recovery score",
        "RS per epoch (mean)",
        "online loss, epochs 2..E",
        "not aggregated",
    ]
    rows = [_point_row(report_dir, e, run_links) for e in entries]
    body.append(table_html(rows, head, row_classes=["bad" if e["excluded"] else "" for e in entries]))
    body += _versus_control_html(entries)
    if summary.get("table1"):
        body += _table1_html(summary["table1"])
    if summary["figures"]:
        body.append("<h2>Figures</h2>")
        body += [figure_html(report_dir, f) for f in summary["figures"]]
    body += _sweep_probes_html(entries)
    return write_page(report_dir / "index.html", f"arprobe sweep: {summary['title']}", body)
