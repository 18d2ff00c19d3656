"""Figures shared by run and sweep reports: a Matplotlib figure without pyplot, saved as PNG + SVG
+ CSV atomically with the run's identity under the title; an offline 3-D view; axes in episodes
with the stored epoch ends.

Probes and the sweep report draw with these; ``arprobe.probes.base`` re-exports the ones a
third-party probe uses (docs/probes.md).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from arprobe.jsonio import write_text_atomic

# The report sets this before a probe runs (one line naming the run); every figure saved while it is
# set carries it as a subtitle, so a figure copied out of the report still says where it comes from.
_figure_subtitle = ""


def set_figure_subtitle(text: str) -> None:
    """The line ``save_figure`` adds under every figure's title from now on ("" for none)."""
    global _figure_subtitle
    _figure_subtitle = str(text)


def new_figure(
    n_panels: int = 1, *, width: float = 6.0, height: float = 4.2, projection: list | None = None
) -> tuple[Any, list]:
    """``(fig, axes)``: a matplotlib Figure with ``n_panels`` axes side by side, drawn with Agg.

    width, height: inches per panel; projection: one entry per panel (None or "3d").
    The Figure is made without pyplot, so no GUI backend is touched and nothing stays open in
    a global figure list after a probe returns.
    """
    from matplotlib.figure import Figure  # here, not at the top: `arprobe --help` stays instant

    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    axes = [
        fig.add_subplot(1, n_panels, i + 1, projection=(projection or [None] * n_panels)[i])
        for i in range(n_panels)
    ]
    return fig, axes


def save_figure(fig, path: Path, data: dict | None = None) -> Path:
    """Write ``path`` (PNG) and the same figure as SVG next to it, atomically: a reader of the
    report never sees half a file. ``data`` (column -> values, see ``save_data``) is written as
    the figure's CSV (same stem), so every number drawn can be re-plotted elsewhere.

    The run identity the report set (``set_figure_subtitle``) goes under the figure's title."""
    path = Path(path)
    if _figure_subtitle:
        if fig._suptitle is None:  # above the panels' own titles
            fig.suptitle(_figure_subtitle, fontsize=8, color="0.35")
        else:  # the probe used the suptitle itself: a footer instead
            fig.supxlabel(_figure_subtitle, fontsize=8, color="0.35")
    import matplotlib  # here, not at the top: `arprobe --help` stays instant

    for suffix in (".png", ".svg"):
        target = path.with_suffix(suffix)
        tmp = target.with_name(f".{target.stem}.tmp{suffix}")
        # SVG text stays text (searchable, editable, smaller), not outlines.
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "arprobe"}):
            fig.savefig(tmp, dpi=110, metadata={"Date": None} if suffix == ".svg" else None)
        os.replace(tmp, target)
    if data is not None:
        save_data(path.parent, path.stem, data)
    return path


def save_data(out: Path, name: str, columns: dict) -> Path:
    """Write ``out/<name>.csv``: one column per key. A 1-D value is one column; a 2-D value
    [rows, k] becomes k columns ``key[0]`` … ``key[k-1]`` (a heat map row by row); columns of
    unequal length are padded with empty cells; NaN is written empty."""
    header, cols = [], []
    for key, value in columns.items():
        arr = np.asarray(value, dtype=object if _is_text(value) else np.float64)
        if arr.ndim == 2:
            for j in range(arr.shape[1]):
                header.append(f"{key}[{j}]")
                cols.append(arr[:, j])
        else:
            assert arr.ndim <= 1, f"save_data column '{key}' has {arr.ndim} dimensions"
            header.append(str(key))
            cols.append(arr.reshape(-1))
    rows = max((len(c) for c in cols), default=0)
    path = Path(out) / f"{name}.csv"
    tmp = path.with_name(f".{name}.tmp.csv")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in range(rows):
            writer.writerow([_cell(c[i]) if i < len(c) else "" for c in cols])
    os.replace(tmp, path)
    return path


def _is_text(value) -> bool:
    return any(isinstance(v, str) for v in np.asarray(value, dtype=object).reshape(-1)[:1])


def _cell(value) -> str:
    if isinstance(value, str):
        return value
    if value is None or not np.isfinite(value):
        return ""
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def integer_axis(ax, label: str | None = None, axis: str = "x") -> None:
    """An axis that counts (epochs, episodes, documents): ticks only at whole numbers, never 1.25 or
    1.75, and its label. Ticks set by hand before (``mark_epochs``, ``set_xticks``) are kept."""
    from matplotlib.ticker import FixedLocator, MaxNLocator  # here: `arprobe --help` stays instant

    target = getattr(ax, f"{axis}axis")
    if not isinstance(target.get_major_locator(), FixedLocator):
        target.set_major_locator(MaxNLocator(integer=True))
    if label is not None:
        getattr(ax, f"set_{axis}label")(label)


def legend_below(ax, *more_axes, ncol: int = 2, fontsize: float = 7) -> None:
    """One legend for ``ax`` and its twin axes, under the panel (outside it, so it never covers what
    is drawn): every labelled line, bar and dot of all of them."""
    handles, labels = [], []
    for a in (ax, *more_axes):
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol,
              fontsize=fontsize, frameon=False)  # fmt: skip


def bars_from_zero(ax) -> None:
    """Keep 0 on a bar chart's value axis (matplotlib may start it at the smallest bar when
    limits are set by hand), so bar heights compare as ratios."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, 0.0), max(hi, 0.0))


def write_3d_view(path: Path, series: list[dict], *, title: str, axes: tuple[str, str, str]) -> Path:
    """A self-contained HTML page (no network, no library) with an interactive 3-D line plot:
    drag to rotate, wheel to zoom, double-click to reset. ``series``: [{"name", "color" (CSS),
    "points" [n, 3]}]; each axis is scaled to [-1, 1] on its own."""
    payload = {
        "title": title,
        "subtitle": _figure_subtitle,
        "axes": list(axes),
        "series": [
            {
                "name": str(s["name"]),
                "color": str(s["color"]),
                "points": np.round(np.asarray(s["points"], dtype=np.float64), 6).tolist(),
            }
            for s in series
        ],
    }
    html_text = _VIEW_3D.replace("/*DATA*/null", json.dumps(payload).replace("</", "<\\/"))
    return write_text_atomic(Path(path), html_text)


_VIEW_3D = """<!doctype html>
<html><head><meta charset="utf-8"><title>3-D view</title>
<style>
body { margin: 0; font-family: system-ui, sans-serif; color: #222; background: #fff; }
#head { padding: 6px 10px; font-size: 13px; } #head small { color: #666; }
#legend span { margin-right: 12px; font-size: 12px; white-space: nowrap; }
canvas { display: block; cursor: grab; touch-action: none; }
</style></head><body>
<div id="head"><b id="title"></b><br><small id="subtitle"></small>
<div id="legend"></div><small>drag: rotate · wheel: zoom · double-click: reset</small></div>
<canvas id="view" width="640" height="480" aria-label="interactive 3-D plot"></canvas>
<script>
"use strict";
const DATA = /*DATA*/null;
const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d");
document.getElementById("title").textContent = DATA.title;
document.getElementById("subtitle").textContent = DATA.subtitle;
const legend = document.getElementById("legend");
for (const s of DATA.series) {
  const span = document.createElement("span");
  span.innerHTML = "<b style='color:" + s.color + "'>&#9679;</b> ";
  span.appendChild(document.createTextNode(s.name));
  legend.appendChild(span);
}
// Each axis scaled to [-1, 1] on its own: the shape, not the units, is what the view is for.
const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
for (const s of DATA.series) for (const p of s.points) for (let k = 0; k < 3; k++) {
  lo[k] = Math.min(lo[k], p[k]); hi[k] = Math.max(hi[k], p[k]);
}
const scaled = DATA.series.map(s => s.points.map(p => p.map((v, k) =>
  hi[k] > lo[k] ? 2 * (v - lo[k]) / (hi[k] - lo[k]) - 1 : 0)));
const start = {yaw: -0.6, pitch: 0.35, zoom: 1};
let view = Object.assign({}, start);
function project(p) {
  const cy = Math.cos(view.yaw), sy = Math.sin(view.yaw);
  const cp = Math.cos(view.pitch), sp = Math.sin(view.pitch);
  const x = cy * p[0] + sy * p[1], y = -sy * p[0] + cy * p[1];
  const z = p[2], yy = cp * y - sp * z, zz = sp * y + cp * z;
  const s = Math.min(canvas.width, canvas.height) * 0.3 * view.zoom;
  return [canvas.width / 2 + s * x, canvas.height / 2 - s * zz, yy];
}
function line(a, b, color, width) {
  const p = project(a), q = project(b);
  ctx.strokeStyle = color; ctx.lineWidth = width;
  ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke();
}
function draw() {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const corners = [[-1, -1, -1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]];
  for (let k = 0; k < 3; k++) {
    line(corners[0], corners[k + 1], "#999", 1);
    const t = project(corners[k + 1].map(v => v * 1.08));
    ctx.fillStyle = "#444"; ctx.font = "12px system-ui, sans-serif"; ctx.fillText(DATA.axes[k], t[0], t[1]);
  }
  DATA.series.forEach((s, i) => {
    const pts = scaled[i];
    for (let j = 1; j < pts.length; j++) line(pts[j - 1], pts[j], s.color, 1.5);
    ctx.fillStyle = s.color;
    for (const p of pts) {
      const q = project(p); ctx.beginPath(); ctx.arc(q[0], q[1], 2, 0, 2 * Math.PI); ctx.fill();
    }
  });
}
function resize() {
  canvas.width = Math.max(320, window.innerWidth);
  canvas.height = Math.max(240, window.innerHeight - document.getElementById("head").offsetHeight - 4);
  draw();
}
let drag = null;
canvas.addEventListener("pointerdown", e => {
  drag = [e.clientX, e.clientY]; canvas.setPointerCapture(e.pointerId);
});
canvas.addEventListener("pointerup", () => { drag = null; });
canvas.addEventListener("pointermove", e => {
  if (!drag) return;
  view.yaw += (e.clientX - drag[0]) * 0.01;
  view.pitch = Math.max(-1.5, Math.min(1.5, view.pitch + (e.clientY - drag[1]) * 0.01));
  drag = [e.clientX, e.clientY]; draw();
});
canvas.addEventListener("wheel", e => {
  e.preventDefault(); view.zoom = Math.max(0.2, Math.min(8, view.zoom * Math.exp(-e.deltaY * 0.001))); draw();
}, {passive: false});
canvas.addEventListener("dblclick", () => { view = Object.assign({}, start); draw(); });
window.addEventListener("resize", resize);
resize();
</script></body></html>
"""


def episode_extent(episodes) -> tuple[float, float]:
    """Edges, in episodes, of an image whose rows are evenly spaced ``episodes``: each pixel is
    centred on its episode. Use with ``mark_epochs`` to label the axes in epochs."""
    episodes = np.asarray(episodes, dtype=np.float64)
    half = (episodes[1] - episodes[0]) / 2 if len(episodes) > 1 else 0.5
    return episodes[0] - half, episodes[-1] + half


def epoch_extent(episodes, schedule) -> tuple[float, float]:
    """Edges, in epochs (``schedule.episodes_in_epochs``), of an image whose rows are evenly spaced
    ``episodes``. Exact only when the epochs have equal lengths; otherwise draw the image in
    episodes (``episode_extent``) and mark the stored boundaries with ``mark_epochs``.
    ``schedule`` may still be a number of documents T (plugins written before the Schedule
    object): epochs are then taken to be T episodes long, right only for T-episode epochs."""
    lo, hi = episode_extent(episodes)
    if isinstance(schedule, (int, np.integer)):
        return lo / schedule, hi / schedule
    edges = schedule.episodes_in_epochs(np.clip([lo, hi], 0, len(schedule)))
    return float(edges[0]), float(edges[1])


def mark_epochs(ax, schedule, first: float, last: float, axes: str = "x", lines: bool = True) -> None:
    """Epoch boundaries at the episodes where the run's epochs end (its stored schedule, so epochs of
    any length sit where they were trained), on an axis drawn in episodes from ``first`` to
    ``last``: a faint line at each, and ticks labelled by the epoch that ends there."""
    ends = np.asarray(schedule.epoch_ends, dtype=np.float64)
    inside = ends[:-1][(ends[:-1] > first) & (ends[:-1] < last)]  # between epochs, not the run's end
    for axis in axes:
        ticks = np.concatenate([[0.0], ends]) if first <= 0 else ends
        ticks = ticks[(ticks >= first) & (ticks <= last)]
        labels = [str(int(np.searchsorted(ends, t)) + (t in ends)) for t in ticks]
        getattr(ax, f"set_{axis}ticks")(ticks, labels, fontsize=7)
        getattr(ax, f"set_{axis}label")("end of epoch (episodes as trained)")
        if lines:
            for e in inside:
                (ax.axvline if axis == "x" else ax.axhline)(e, color="0.85", lw=0.8, zorder=0)
