"""recovery_score: how much of the forgetting is recovered before a document returns? (Sec. 3.1)"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError
from arprobe.probes.base import Probe, bars_from_zero, integer_axis, new_figure, save_figure
from arprobe.probes.nulls import control_value, last_finite, versus_control
from arprobe.science.recovery import recovery_components, recovery_score_notes, recovery_scores

# What RS reads with no anticipation at all (issue 21): l_before lies inside the window where l_max
# is taken, so RS >= 0 by construction, and noise alone lifts it. Pure monotone forgetting plus
# Gaussian noise measured 0.07 / 0.21 / 0.38 / 0.59 at noise/forgetting 0.1 / 0.25 / 0.5 / 1.0, in a
# cyclic and a shuffled order alike.
RS_NULL = (
    "RS is >= 0 by construction (l_before lies in the window where l_max is taken) and noise lifts it: "
    "pure forgetting plus noise reads 0.07-0.59 (noise/forgetting 0.1-1.0) in any order, so only the "
    "difference from a matched shuffled control (same seed, documents, initialisation) is evidence"
)


class RecoveryScore(Probe):
    name = "recovery_score"
    description = "Recovery score RS(n) per epoch (Sec. 3.1) with its terms l_max, l_before, l_after."
    requires = ["eval"]
    headline_keys = ["recovery_score", "undefined", "control_recovery_score", "verdict"]

    def headline(self, result: dict) -> dict:
        """RS per epoch, and the sentence of every undefined one (only when there is one)."""
        head = super().headline(result)
        if not head.get("undefined"):
            head.pop("undefined", None)
        if head.get("control_recovery_score") is None:
            head.pop("control_recovery_score", None)
        return head

    def run(self, store, out: Path) -> dict:
        loss_eval = store.eval_matrix()
        schedule = store.schedule()
        schedule_doc = schedule.doc
        scores = recovery_scores(loss_eval, schedule_doc)  # [N], NaN where undefined
        notes = recovery_score_notes(loss_eval, schedule_doc)  # [N], "" where defined
        if not len(scores):
            raise MissingDataError(
                f"Run '{store.path.parent.name}' trained no document twice, and the recovery score compares "
                "two trainings; run at least 2 epochs (schedule.epochs)."
            )
        control = control_value(store, lambda c: recovery_scores(c.eval_matrix(), c.schedule().doc))
        last = len(scores)  # the same epoch in both: a control cut short has no RS(last)
        control_last = last_finite(control[last - 1 : last]) if control is not None else None
        verdict = versus_control(f"RS({last})", last_finite(scores[-1:]), control_last)
        c = recovery_components(loss_eval, schedule_doc)
        means = {k: np.nanmean(getattr(c, k), axis=1) for k in ("l_max", "l_before", "l_after")}
        n = np.arange(1, len(scores) + 1)
        order = store.config.get("schedule", {}).get("order", "?")

        self._plot(n, scores, means, order, out)
        return {
            "epoch": n,
            "recovery_score": scores,  # null where undefined
            "undefined": [note for note in notes if note],  # one sentence per undefined RS(n)
            "notes": notes,  # per epoch n, "" where RS(n) is defined
            "l_max": means["l_max"],
            "l_before": means["l_before"],
            "l_after": means["l_after"],
            "order": order,
            # the matched shuffled control's RS per epoch (None without one), and the sentence
            "control_recovery_score": control,
            "verdict": verdict,
            "null": {"reads": RS_NULL, "control": control, "verdict": verdict},
        }

    @staticmethod
    def _plot(n, scores, means, order, out: Path) -> None:
        """RS(n) per epoch beside its three terms, mean over documents."""
        fig, (ax, ax2) = new_figure(2, width=5.2)
        ax.plot(n, scores, "o-", color="tab:blue")
        for x, y in zip(n, scores):
            if np.isfinite(y):
                ax.annotate(
                    f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8
                )
            else:  # undefined: say so where the point would be (the sentence is in result.json)
                ax.annotate(
                    "undefined", (x, 0), xytext=(0, 7), textcoords="offset points", ha="center", fontsize=8
                )
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_xticks(n)
        integer_axis(ax, "epoch n (between the n-th and (n+1)-th training)")
        ax.set_ylabel("RS(n) = (l_max − l_before) / (l_max − l_after)")
        ax.set_title(f"Recovery score per epoch ({order} order)")
        width = 0.27
        for i, (key, label, color) in enumerate(
            (
                ("l_after", "l_after (just after training)", "tab:green"),
                ("l_max", "l_max (peak)", "tab:red"),
                ("l_before", "l_before (just before next)", "tab:orange"),
            )
        ):
            ax2.bar(n + (i - 1) * width, means[key], width, label=label, color=color)
        ax2.set_xticks(n)
        bars_from_zero(ax2)  # bar heights compare as ratios only from 0
        integer_axis(ax2, "epoch n")
        ax2.set_ylabel("loss, mean over documents")
        ax2.set_title("Terms of the recovery score")
        ax2.legend(fontsize=8)
        save_figure(
            fig,
            out / "recovery_score.png",
            data={
                "epoch": n,
                "recovery_score": scores,
                **{k: means[k] for k in ("l_after", "l_max", "l_before")},
            },
        )
