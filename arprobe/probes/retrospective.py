"""retrospective: the trained model's loss on every document against how long ago it was last
trained — the training re-evaluation curve — and the anticipation bump before the next turn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, integer_axis, new_figure, save_figure
from arprobe.probes.nulls import control_value, versus_control
from arprobe.science.retrospective import retrospective

WINDOWS = ("last_epoch", "final")


class Retrospective(Probe):
    name = "retrospective"
    description = (
        "Loss of the final model(s) on every document against episodes since it was last trained "
        "(training re-evaluation curve), and the anticipation bump before the next turn."
    )
    title = "Re-evaluation curve"
    look_for = (
        "Plain forgetting rises with recency; anticipation bends the curve down again for the "
        "documents trained longest ago — next in a cyclic order — and the shuffled control does not."
    )
    requires = ["eval"]
    options = {"models": "last_epoch", "episode": -1, "bootstrap": 1000, "seed": 0}
    option_help = {
        "models": "last_epoch: average the models after every episode of the epoch ending at `episode`; "
        "final: only the model after `episode`",
        "episode": "the last model read (1-based episode; -1 = the run's last)",
        "bootstrap": "resamples of the models for the bump's 95% interval (0 = none)",
        "seed": "seed of the bootstrap",
    }
    headline_keys = ["bump", "bump_interval", "peak_recency", "control_bump", "verdict"]

    def run(
        self,
        store,
        out: Path,
        models: str = "last_epoch",
        episode: int = -1,
        bootstrap: int = 1000,
        seed: int = 0,
    ) -> dict:
        if models not in WINDOWS:
            raise UserError(f"retrospective.models must be one of {', '.join(WINDOWS)}, not {models!r}.")
        loss_eval, schedule = store.eval_matrix(), store.schedule()
        K = len(schedule.doc)
        last = K if episode == -1 else episode
        if not 1 <= last <= K:
            raise UserError(f"retrospective.episode must be between 1 and {K} (or -1), not {episode}.")
        if schedule.epoch[last - 1] < 2:
            raise MissingDataError(
                f"Run '{store.path.parent.name}' has not trained a document twice by episode {last}; "
                "the re-evaluation curve needs at least 2 epochs (schedule.epochs)."
            )
        episodes = self.window(schedule, last, models)
        curve = retrospective(loss_eval, schedule.doc, episodes)
        low, high = self.interval(loss_eval, schedule.doc, episodes, bootstrap, seed)
        control = control_value(store, lambda c: self.control_curve(c, last, models))
        control_bump = None if control is None else control.bump
        verdict = versus_control("bump", curve.bump, control_bump)
        self.draw(out, curve, control, models, last, store.config.get("schedule", {}).get("order", "?"))
        return {
            "episodes": episodes,
            "recency": curve.recency,
            "loss": curve.loss,
            "count": curve.count,
            "bump": curve.bump,
            "bump_interval": [low, high],
            "peak_recency": curve.peak_recency,
            "note": curve.note,
            "control_loss": None if control is None else control.loss,
            "control_bump": control_bump,
            "verdict": verdict,
        }

    @staticmethod
    def window(schedule, last: int, models: str) -> np.ndarray:
        """The 1-based episodes whose models are read: ``last`` alone, or every episode of its epoch
        up to it (from the epoch's first episode; always at least ``last``)."""
        if models == "final":
            return np.array([last])
        epoch = schedule.epoch[last - 1]
        first = int(np.flatnonzero(schedule.epoch == epoch)[0]) + 1
        return np.arange(first, last + 1)

    def control_curve(self, control, last: int, models: str):
        schedule = control.schedule()
        if len(schedule.doc) < last:
            return None
        return retrospective(control.eval_matrix(), schedule.doc, self.window(schedule, last, models))

    @staticmethod
    def interval(loss_eval, schedule_doc, episodes, n: int, seed: int) -> tuple[float | None, float | None]:
        """95% percentile interval of the bump over resamples of the models read (None with one model)."""
        if n <= 0 or len(episodes) < 2:
            return None, None
        rng = np.random.default_rng(seed)
        bumps = np.array(
            [
                retrospective(loss_eval, schedule_doc, rng.choice(episodes, size=len(episodes))).bump
                for _ in range(n)
            ]
        )
        bumps = bumps[np.isfinite(bumps)]
        if len(bumps) < n / 2:  # mostly undefined: no interval worth giving
            return None, None
        return float(np.quantile(bumps, 0.025)), float(np.quantile(bumps, 0.975))

    @staticmethod
    def draw(out: Path, curve, control, models: str, last: int, order: str) -> None:
        fig, (ax,) = new_figure(width=6.4)
        ax.plot(curve.recency, curve.loss, "o-", color="tab:blue", label=f"this run ({order})")
        data = {"recency": curve.recency, "loss": curve.loss}
        if control is not None:
            ax.plot(control.recency, control.loss, "s--", color="tab:gray", label="matched shuffled control")
            data["control_loss"] = control.loss
        ax.axvline(curve.peak_recency, color="tab:red", lw=0.8, ls=":", label="peak")
        integer_axis(ax, "episodes since the document was last trained")
        ax.set_ylabel("loss, mean over documents")
        which = f"the model after episode {last}" if models == "final" else f"its epoch up to {last}"
        ax.set_title(f"Re-evaluation curve ({which})")
        ax.legend(fontsize=8)
        save_figure(fig, out / "retrospective.png", data=data)
