"""forgetting: the continual-learning metrics users of Avalanche expect, from the eval matrix.

Forgetting per document (Avalanche's final − best, and the largest rise over any running best),
backward transfer per epoch (GEM's BWT, in loss), plasticity (the loss drop of a document over its
own episode) and the anticipation ratio (the fraction of a document's forgetting undone before
its next turn). Epochs are the run's stored epochs, so every order works.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.probes.base import Probe, integer_axis, legend_below, new_figure, save_figure
from arprobe.probes.nulls import control_value, versus_control
from arprobe.science import forgetting as cl


def _nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def _nanmedian(values) -> float:
    # ratios over a small forgetting run large, so documents are summarised by their median
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")


class Forgetting(Probe):
    name = "forgetting"
    description = (
        "Continual-learning metrics from the eval matrix: forgetting per document, backward transfer "
        "per epoch, plasticity, and the fraction of forgetting undone before a document's next turn."
    )
    requires = ["eval"]
    options = {}
    headline_keys = [
        "forgetting_mean",
        "max_forgetting_mean",
        "bwt_mean",
        "bwt_per_epoch",
        "plasticity_mean",
        "plasticity_per_epoch",
        "anticipation_ratio_median",
        "anticipation_ratio_per_epoch",
    ]

    def run(self, store, out: Path) -> dict:
        loss_eval = store.eval_matrix()  # [K+1, T]
        schedule = store.schedule()
        doc, epoch = schedule.doc, schedule.epoch
        final = cl.final_forgetting(loss_eval, doc)  # [T]
        worst = cl.max_forgetting(loss_eval, doc)  # [T]
        bwt = cl.backward_transfer(loss_eval, doc, epoch)  # [E]
        drop = cl.plasticity(loss_eval, doc)  # [K]
        drop_per_epoch = cl.per_epoch_means(drop, epoch)  # [E]
        ratios = cl.anticipation_ratios(loss_eval, doc)  # [n, T]
        by_doc = cl.anticipation_by_document(loss_eval, doc)  # [T]
        per_interval = np.array([_nanmedian(row) for row in ratios])  # [n]
        result = {
            "forgetting": final,
            "forgetting_mean": _nanmean(final),
            "max_forgetting": worst,
            "max_forgetting_mean": _nanmean(worst),
            "bwt_per_epoch": bwt,
            # epochs 1..E−1: the last epoch of a cyclic run has no later training to compare with
            "bwt_mean": _nanmean(bwt),
            "plasticity": drop,
            "plasticity_per_epoch": drop_per_epoch,
            "plasticity_mean": _nanmean(drop),
            "anticipation_ratio": by_doc,
            "anticipation_ratio_median": _nanmedian(
                by_doc
            ),  # over documents; > 1: below where training left it
            # median over documents; index n − 1: after each one's n-th training (epoch n of a cyclic run)
            "anticipation_ratio_per_epoch": per_interval,
            "anticipation_ratio_intervals": ratios,
            "units": "loss (mean per-token cross-entropy); forgetting ≥ 0, BWT < 0 means forgetting",
        }
        control = control_value(
            store, lambda c: cl.anticipation_by_document(c.eval_matrix(), c.schedule().doc)
        )
        control_median = _nanmedian(control) if control is not None else None
        result["null"] = {
            "reads": "forgetting, BWT and plasticity have no anticipation in them; the anticipation ratio is "
            ">= 0 by construction (one document's recovery score) and noise alone lifts it, so read it "
            "against the matched shuffled control's (default run: median 0.24 cyclic vs 0.06 shuffled)",
            "control_anticipation_ratio_median": control_median,
            "verdict": versus_control(
                "median anticipation ratio", result["anticipation_ratio_median"], control_median, ".2f"
            ),
        }
        self._plot(result, schedule.n_docs, out)
        return result

    @staticmethod
    def _plot(r, n_docs, out):
        """Losses on the left axis of each panel, the anticipation ratio (a fraction) on its own right
        axis from 0; one legend per panel, under it. Documents are numbered 1..T (the paper's x_1..x_T)."""
        fig, (ax1, ax2) = new_figure(2, width=5.4, height=4.6)
        x = np.arange(1, n_docs + 1)
        ax1.bar(x - 0.2, r["forgetting"], 0.4, label="forgetting: final − best loss (Avalanche)")
        ax1.bar(x + 0.2, r["max_forgetting"], 0.4, label="largest rise over best loss")
        ax1b = ax1.twinx()
        ax1b.plot(x, r["anticipation_ratio"], "o", color="tab:red", label="anticipation ratio (right axis)")
        integer_axis(ax1, "document (1..T)")
        ax1.set_ylabel("forgetting (loss, nats)")
        ax1.set_title("Per document")
        epochs = np.arange(1, len(r["bwt_per_epoch"]) + 1)
        ax2.plot(epochs, r["bwt_per_epoch"], "o-", label="BWT (loss; < 0: forgetting)")
        ax2.plot(epochs, r["plasticity_per_epoch"], "s-", label="plasticity (loss drop in own episode)")
        ax2.axhline(0, color="0.7", lw=0.8)
        ax2b = ax2.twinx()
        n = np.arange(1, len(r["anticipation_ratio_per_epoch"]) + 1)
        ax2b.plot(n, r["anticipation_ratio_per_epoch"], "^--", color="tab:red",
                  label="anticipation ratio after the n-th training (right axis)")  # fmt: skip
        integer_axis(ax2, "epoch")
        ax2.set_ylabel("loss (nats)")
        ax2.set_title("Per epoch")
        for twin, values in ((ax1b, r["anticipation_ratio"]), (ax2b, r["anticipation_ratio_per_epoch"])):
            finite = np.asarray(values, dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            low = min(0.0, float(finite.min())) if len(finite) else 0.0
            high = max(1.0, float(finite.max()) * 1.05) if len(finite) else 1.0
            twin.set_ylim(low, high)  # a fraction: 0 to 1, wider only where a value lies outside
            twin.set_ylabel("anticipation ratio (fraction of forgetting undone)", color="tab:red")
            twin.tick_params(axis="y", colors="tab:red")
        legend_below(ax1, ax1b, ncol=1)
        legend_below(ax2, ax2b, ncol=1)
        save_figure(fig, out / "forgetting.png")
