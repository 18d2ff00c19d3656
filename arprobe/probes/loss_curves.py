"""loss_curves: does a document's loss recover before it comes back? (paper Fig. 1a, 1b)

Epochs are read from the run's stored schedule, so an order whose epochs differ in length
(insert, App. B.7) has its epoch lines where its epochs really end, and the shift-averaged
curve (App. A.4) averages the documents that repeat every epoch: one-off documents, trained
once, would otherwise cut it short.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.probes.base import Probe, integer_axis, new_figure, save_figure
from arprobe.probes.nulls import control_value, last_finite, versus_control
from arprobe.science.geometry import common_training_offsets, interval_peaks, intervals_between
from arprobe.science.recovery import shift_averaged_curve


class LossCurves(Probe):
    name = "loss_curves"
    description = (
        "Loss of one document through training (Fig. 1a) and the shift-averaged loss of the "
        "repeating documents ±1 std (Fig. 1b)."
    )
    requires = ["eval"]
    options = {"doc": 0}
    option_help = {"doc": "document whose curve is drawn, 0-based (the paper's x_1 is 0)"}
    headline_keys = [
        "doc_loss_before_training",
        "doc_recovered",
        "shift_avg_peak_position",
        "shift_avg_recovered",
    ]

    def run(self, store, out: Path, doc: int = 0) -> dict:
        loss_eval = store.eval_matrix()  # [K+1, T]
        schedule = store.schedule()
        T = store.n_docs
        if not 0 <= doc < T:
            raise UserError(
                f"loss_curves option doc={doc} is out of range: the run has documents 0..{T - 1}."
            )
        curve = loss_eval[:, doc].astype(np.float64)  # [K+1]
        trained = schedule.episodes_of(doc)  # 1-based episodes
        doc_intervals = intervals_between(curve, trained)
        docs = schedule.repeating_docs if len(schedule.repeating_docs) else None
        shifted = shift_averaged_curve(loss_eval, schedule.doc, docs=docs)
        offsets = common_training_offsets(schedule.doc, shifted.docs, len(shifted.mean))
        if offsets is not None:
            avg_intervals = interval_peaks(shifted.mean, offsets)
            avg_note = ""
        else:
            avg_intervals = {"peak_position": None, "recovered": None}
            avg_note = (
                "The documents return at different offsets in this order, so the shift-averaged curve "
                "has no common intervals to measure; see recovery_score and doc_recovered."
            )
        cycle = schedule.cycle_length
        boundaries = schedule.epoch_ends[:-1]  # episodes after which a new epoch starts

        control = control_value(store, lambda c: _doc_recovered(c, doc))
        self._plot_doc(curve, trained, doc, schedule, out)
        self._plot_shift_averaged(shifted, cycle, offsets, out)
        return {
            "doc": doc,
            "n_docs": T,
            "episodes": len(schedule),
            "epoch_boundaries_episodes": boundaries,
            "cycle_length": cycle,
            "doc_trained_at_episodes": trained,
            "doc_loss_initial": float(curve[0]),
            "doc_loss_before_training": curve[trained - 1],  # the markers of Fig. 1a
            "doc_loss_after_training": curve[trained],
            "doc_loss_final": float(curve[-1]),
            # per interval between the doc's trainings; peak_position in episodes since training
            "doc_peak_position": doc_intervals["peak_position"],
            "doc_recovered": doc_intervals["recovered"],
            # offset 0 = just before each document's first training, in episodes / the cycle length
            "shift_avg_offset_epochs": shifted.offset / cycle,
            "shift_avg_mean": shifted.mean,
            "shift_avg_std": shifted.std,
            "shift_avg_training_offsets": offsets,
            "shift_avg_peak_position": avg_intervals["peak_position"],
            "shift_avg_recovered": avg_intervals["recovered"],
            "shift_avg_note": avg_note,
            "shift_avg_docs": shifted.docs,
            "null": {
                "reads": "the recovered fraction (peak − before) / (peak − after) is >= 0 by construction, "
                "as RS is: the loss just before a training lies in the interval whose peak is taken, so "
                "noise alone reads above 0; the curve to compare with is the matched shuffled control's "
                "(control: the same document's recovered fraction per interval there)",
                "control": control,
                "verdict": versus_control(
                    f"document {doc + 1}'s last recovered fraction",
                    last_finite(doc_intervals["recovered"]),
                    last_finite(control) if control is not None else None,
                    ".2f",
                ),
            },
        }

    @staticmethod
    def _plot_doc(curve, trained, doc, schedule, out):
        fig, (ax,) = new_figure(width=7.5)
        x = schedule.episodes_in_epochs(np.arange(len(curve)))  # epoch e ends at e, whatever its length
        ax.plot(x, curve, color="tab:blue", lw=1.5, label=f"loss on document {doc + 1}")
        ax.plot(
            x[trained - 1],
            curve[trained - 1],
            "o",
            color="tab:red",
            ms=6,
            label="just before training on it",
        )
        for e in range(1, schedule.n_epochs):
            ax.axvline(e, color="0.85", lw=0.8, zorder=0)  # the end of epoch e, as stored
        integer_axis(ax, "epoch")
        ax.set_ylabel("loss (mean cross-entropy per token)")
        ax.set_title(f"Loss of document {doc + 1} through training (cf. paper Fig. 1a)")
        ax.legend(loc="best", fontsize=8)
        before = np.full(len(curve), np.nan)
        before[trained - 1] = curve[trained - 1]
        data = {"episode": np.arange(len(curve)), "epoch": x, f"loss_doc_{doc + 1}": curve}
        save_figure(fig, out / "doc_loss.png", data={**data, "loss_just_before_training": before})

    @staticmethod
    def _plot_shift_averaged(shifted, cycle, offsets, out):
        fig, (ax,) = new_figure(width=7.5)
        x = shifted.offset / cycle
        ax.fill_between(
            x,
            shifted.mean - shifted.std,
            shifted.mean + shifted.std,
            color="tab:blue",
            alpha=0.2,
            label="±1 std over documents",
        )
        ax.plot(x, shifted.mean, color="tab:blue", lw=1.5, label=f"mean over {len(shifted.docs)} documents")
        # Lines where the documents come back (common offsets), else every cycle length.
        returns = (offsets[1:] - 1) if offsets is not None else np.arange(1, int(x[-1]) + 1) * cycle
        for r in returns:
            ax.axvline(r / cycle, color="0.85", lw=0.8, zorder=0)
        integer_axis(ax, "epochs since just before each document's first training")
        ax.set_ylabel("loss")
        ax.set_title("Shift-averaged loss curve (cf. paper Fig. 1b, App. A.4)")
        ax.legend(loc="best", fontsize=8)
        save_figure(
            fig,
            out / "shift_averaged.png",
            data={
                "offset_episodes": shifted.offset,
                "offset_epochs": x,
                "mean_loss": shifted.mean,
                "std_over_documents": shifted.std,
            },
        )


def _doc_recovered(store, doc: int) -> np.ndarray:
    """[n] the recovered fraction of document ``doc`` in each interval between its trainings."""
    trained = store.schedule().episodes_of(doc)
    return intervals_between(store.eval_matrix()[:, doc], trained)["recovered"]
