"""loss_curves: does a document's loss recover before it comes back? (paper Fig. 1a, 1b)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.probes.base import Probe, new_figure, save_figure
from arprobe.science.geometry import interval_peaks, intervals_between


class LossCurves(Probe):
    name = "loss_curves"
    description = "Loss of one document through training (Fig. 1a) and the shift-averaged loss of all documents ±1 std (Fig. 1b)."
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
        from arprobe.science.recovery import shift_averaged_curve, training_episodes

        loss_eval = store.eval_matrix()  # [K+1, T]
        schedule = store.schedule()
        schedule_doc, _ = schedule.doc, schedule.epoch
        T = store.n_docs
        if not 0 <= doc < T:
            raise UserError(
                f"loss_curves option doc={doc} is out of range: the run has documents 0..{T - 1}."
            )
        curve = loss_eval[:, doc].astype(np.float64)  # [K+1]
        trained = training_episodes(schedule_doc, doc)  # 1-based episodes
        doc_intervals = intervals_between(curve, trained)
        shifted = shift_averaged_curve(loss_eval, schedule_doc)
        avg_intervals = interval_peaks(shifted.mean, T)

        self._plot_doc(curve, trained, doc, T, out)
        self._plot_shift_averaged(shifted, T, out)
        return {
            "doc": doc,
            "n_docs": T,
            "episodes": int(len(schedule_doc)),
            "doc_trained_at_episodes": trained,
            "doc_loss_initial": float(curve[0]),
            "doc_loss_before_training": curve[trained - 1],  # the markers of Fig. 1a
            "doc_loss_after_training": curve[trained],
            "doc_loss_final": float(curve[-1]),
            # per interval between the doc's trainings; peak_position in documents since training
            "doc_peak_position": doc_intervals["peak_position"],
            "doc_recovered": doc_intervals["recovered"],
            "shift_avg_offset_epochs": shifted.offset / T,
            "shift_avg_mean": shifted.mean,
            "shift_avg_std": shifted.std,
            "shift_avg_peak_position": avg_intervals["peak_position"],
            "shift_avg_recovered": avg_intervals["recovered"],
            "shift_avg_docs": int(len(shifted.docs)),
        }

    @staticmethod
    def _plot_doc(curve, trained, doc, T, out):
        fig, (ax,) = new_figure(width=7.5)
        x = np.arange(len(curve)) / T
        ax.plot(x, curve, color="tab:blue", lw=1.5, label=f"loss on document {doc + 1}")
        ax.plot(
            (trained - 1) / T,
            curve[trained - 1],
            "o",
            color="tab:red",
            ms=6,
            label="just before training on it",
        )
        for e in range(1, int(np.ceil((len(curve) - 1) / T))):
            ax.axvline(e, color="0.85", lw=0.8, zorder=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean cross-entropy per token)")
        ax.set_title(f"Loss of document {doc + 1} through cyclic training (cf. paper Fig. 1a)")
        ax.legend(loc="best", fontsize=8)
        save_figure(fig, out / "doc_loss.png")

    @staticmethod
    def _plot_shift_averaged(shifted, T, out):
        fig, (ax,) = new_figure(width=7.5)
        x = shifted.offset / T
        ax.fill_between(
            x,
            shifted.mean - shifted.std,
            shifted.mean + shifted.std,
            color="tab:blue",
            alpha=0.2,
            label="±1 std over documents",
        )
        ax.plot(x, shifted.mean, color="tab:blue", lw=1.5, label=f"mean over {len(shifted.docs)} documents")
        for e in range(1, int(np.floor(x[-1])) + 1):
            ax.axvline(e, color="0.85", lw=0.8, zorder=0)
        ax.set_xlabel("epochs since just before each document's first training")
        ax.set_ylabel("loss")
        ax.set_title("Shift-averaged loss curve (cf. paper Fig. 1b, App. A.4)")
        ax.legend(loc="best", fontsize=8)
        save_figure(fig, out / "shift_averaged.png")
