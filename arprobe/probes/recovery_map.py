"""recovery_map: the whole eval matrix as a map of loss changes, and when anticipation starts.

The image has an episode per row and a document per column, coloured by each document's loss
change over the episode (blue: falls, red: rises), with the trained document marked; in cyclic
order the training diagonal and the falling band before it repeat every epoch. Per epoch, the
lag from a document's last loss peak to its next turn (the paper's Fig. 1b, epoch by epoch): does
anticipation start earlier as training goes on? Epochs and turns are the run's stored schedule.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.probes.base import Probe, integer_axis, mark_epochs, new_figure, save_figure
from arprobe.probes.nulls import control_value, versus_control
from arprobe.science.geometry import trend
from arprobe.science.recovery_map import change_before_turn, loss_changes, onset_lags


def _nanmean(values) -> np.ndarray | float:
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


class RecoveryMap(Probe):
    name = "recovery_map"
    description = (
        "The eval matrix as an image of loss changes (episodes × documents), and how many episodes "
        "before a document's turn its loss starts to fall, per epoch (Fig. 1b per epoch)."
    )
    requires = ["eval"]
    options = {"order": "first"}
    option_help = {
        "order": "columns: 'first' (documents in the order of their first training, so the cycle is a "
        "diagonal) or 'index' (document 1..T)"
    }
    headline_keys = ["onset_lag_per_epoch", "onset_lag_mean", "onset_lag_trend", "anticipating_fraction"]

    def run(self, store, out: Path, order: str = "first") -> dict:
        if order not in ("first", "index"):
            raise UserError(f"Option recovery_map.order must be 'first' or 'index', got '{order}'.")
        loss_eval = store.eval_matrix()  # [K+1, T]
        schedule = store.schedule()
        changes = loss_changes(loss_eval)  # [K, T]
        lags = onset_lags(loss_eval, schedule.doc)  # [n, T]
        max_lag = int(np.ceil(2 * schedule.cycle_length))
        profile = change_before_turn(loss_eval, schedule.doc, max_lag)  # [n, max_lag]
        per_epoch = np.array([_nanmean(row) for row in lags])
        columns = self._columns(schedule, order)
        result = {
            "columns": columns,  # document (0-based) of each image column
            "onset_lag": lags,  # [n, T]
            "onset_lag_per_epoch": per_epoch,  # [n], index n − 1: after each document's n-th training
            "onset_lag_mean": _nanmean(lags),
            "onset_lag_trend": trend(per_epoch),  # episodes per epoch; > 0: anticipation starts earlier
            # intervals whose loss was falling at the document's turn (lag ≥ 1)
            "anticipating_fraction": _anticipating_fraction(lags),
            "change_before_turn": profile,  # [n, lag]: mean ΔL j + 1 episodes before the next turn
        }
        control = control_value(
            store, lambda c: _anticipating_fraction(onset_lags(c.eval_matrix(), c.schedule().doc))
        )
        falling = result["anticipating_fraction"]
        result["null"] = {
            "reads": "without anticipation a document's loss rises until its turn: onset lag 0 and no "
            "interval falling at the turn, except by noise (the default run's shuffled control: 0.61 of "
            "intervals falling, lag trend −0.12 per epoch); control: the matched shuffled control's fraction",
            "control_anticipating_fraction": control,
            "verdict": versus_control("fraction of intervals falling at the turn", falling, control, ".2f"),
        }
        self._plot_map(changes, schedule, columns, out)
        self._plot_onset(per_epoch, profile, out)
        return result

    @staticmethod
    def _columns(schedule, order):
        if order == "index":
            return np.arange(schedule.n_docs)
        first = list(dict.fromkeys(schedule.doc.tolist()))
        return np.array(first + [t for t in range(schedule.n_docs) if t not in first], dtype=int)

    @staticmethod
    def _plot_map(changes, schedule, columns, out):
        fig, (ax,) = new_figure(1, width=5.6, height=max(4.2, min(12.0, 0.08 * len(changes))))
        shown = changes[:, columns]
        finite = np.abs(shown[np.isfinite(shown)])
        scale = float(np.percentile(finite, 98)) if len(finite) else 1.0
        im = ax.imshow(
            shown,
            cmap="RdBu_r",
            vmin=-scale,
            vmax=scale,
            aspect="auto",
            interpolation="nearest",
            extent=(-0.5, len(columns) - 0.5, len(changes) + 0.5, 0.5),
        )
        position = np.argsort(columns)  # document -> its column
        k = np.arange(1, len(changes) + 1)
        ax.plot(position[schedule.doc], k, "k.", ms=3, label="document trained in the episode")
        fig.colorbar(im, ax=ax, label="loss change over the episode")
        mark_epochs(ax, schedule, 0.5, len(changes) + 0.5, axes="y")
        ax.set_xticks(np.arange(len(columns)), [str(c + 1) for c in columns], fontsize=7)
        ax.set_xlabel("document (in order of first training)")
        ax.set_title("Loss change of every document per episode")
        ax.legend(fontsize=7, loc="lower left")
        save_figure(fig, out / "recovery_map.png")

    @staticmethod
    def _plot_onset(per_epoch, profile, out):
        fig, (ax1, ax2) = new_figure(2, width=5.0)
        ax1.plot(np.arange(1, len(per_epoch) + 1), per_epoch, "o-")
        integer_axis(ax1, "after the document's n-th training (epoch n)")
        ax1.set_ylabel("episodes from the last peak to the next turn")
        ax1.set_title("When anticipation starts")
        for n, row in enumerate(profile):
            ax2.plot(-np.arange(1, len(row) + 1), row, "-", label=f"before training {n + 2}")
        ax2.axhline(0, color="0.7", lw=0.8)
        integer_axis(ax2, "episodes before the document's next turn")
        ax2.set_ylabel("mean loss change over the episode")
        ax2.set_title("Loss change before a document's turn (Fig. 1b per epoch)")
        if len(profile):
            ax2.legend(fontsize=7)
        save_figure(fig, out / "onset.png")


def _anticipating_fraction(lags: np.ndarray) -> float:
    """Fraction of intervals [n, T] whose loss was falling at the document's turn (lag >= 1)."""
    have = np.isfinite(lags)
    return float((lags[have] >= 1).mean()) if have.any() else float("nan")
