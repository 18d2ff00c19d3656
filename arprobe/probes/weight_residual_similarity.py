"""weight_residual_similarity: do the weights return to the same place each epoch? (paper Sec. 4.2, Fig. 8c)

Raw weight snapshots along one trajectory all have cosine ≈ 1, so the paper compares weight
*residuals*: each snapshot minus the mean of a centred window of T episodes around it
(``residual=window``, the default), which removes the slow drift and leaves the per-document
update. ``residual=initial`` subtracts the weights before training instead.

The stripe period alone does not tell cyclic from shuffled training: the centred-window
residual of any drifting trajectory has some structure at lag ≈ T. The similarity of
residuals one epoch apart (``similarity_at_lag_T``) does: 0.85 cyclic vs 0.16 shuffled on the
default run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, epoch_extent, new_figure, save_figure
from arprobe.science.geometry import diagonal_means, gram_matrix, residual_cosines, stripe_period

RESIDUALS = ("window", "initial")


def snapshot_spacing(episodes: np.ndarray) -> int:
    """Episodes between consecutive snapshots after episode 0; UserError if uneven."""
    steps = np.diff(episodes[episodes > 0]) if (episodes > 0).sum() > 1 else np.array([1])
    if not np.all(steps == steps[0]):
        raise UserError(
            "Weight snapshots are not evenly spaced; residual windows need record.weights_every fixed."
        )
    return int(steps[0])


class WeightResidualSimilarity(Probe):
    name = "weight_residual_similarity"
    description = (
        "Cosine similarity between weight residuals at every episode (Fig. 8c) and the period "
        "of its stripes in episodes (≈ T for a cyclic run)."
    )
    requires = ["weights:{weights}"]
    options = {"weights": "unembed", "residual": "window", "from_epoch": 2}
    option_help = {
        "weights": "recorded parameter group (TransformerLens name)",
        "residual": "window: minus the mean of a centred window of T episodes (paper); initial: minus the weights before training",
        "from_epoch": "first epoch shown (the paper shows epochs 2-4); earlier epochs still feed the windows",
    }
    headline_keys = [
        "residual",
        "stripe_period_episodes",
        "stripe_period_epochs",
        "similarity_at_lag_T",
        "similarity_at_lag_half_T",
    ]

    def run(
        self, store, out: Path, weights: str = "unembed", residual: str = "window", from_epoch: int = 2
    ) -> dict:
        if residual not in RESIDUALS:
            raise UserError(
                f"weight_residual_similarity option residual must be one of {', '.join(RESIDUALS)}, got '{residual}'."
            )
        episodes, values = store.weights(weights)  # [S], [S, D]
        T = store.n_docs
        schedule = store.schedule()
        _, schedule_epoch = schedule.doc, schedule.epoch
        every = snapshot_spacing(episodes)
        window = max(int(round(T / every)), 2)  # T episodes, in snapshots
        # Centring on the mean snapshot changes no residual (residual rows sum to zero) but keeps
        # the float64 Gram matrix accurate: the residuals are tiny next to the weights.
        gram = gram_matrix(values, center=values.mean(axis=0))
        cos, rows = residual_cosines(gram, residual, window)  # [m, m], snapshot index per row
        res_episodes = episodes[rows]
        n_epochs = int(schedule_epoch.max()) if len(schedule_epoch) else 0
        from_epoch = min(max(from_epoch, 1), max(n_epochs, 1))
        keep = res_episodes > (from_epoch - 1) * T
        if keep.sum() < 3:
            raise MissingDataError(
                f"Run '{store.path.parent.name}' has only {int(keep.sum())} '{weights}' residuals from epoch {from_epoch} on; "
                "record more snapshots (record.weights_every) or train longer (schedule.epochs)."
            )
        cos, res_episodes = cos[np.ix_(keep, keep)], res_episodes[keep]
        profile = diagonal_means(cos)  # [lag] in snapshots
        period = stripe_period(cos)
        lag_T = int(round(T / every))

        def at(lag: int):
            return float(profile[lag]) if 0 <= lag < len(profile) else None

        self._plot(cos, res_episodes, profile, every, T, weights, residual, period, out)
        return {
            "weights": weights,
            "residual": residual,
            "window_episodes": window * every if residual == "window" else None,
            "episodes": res_episodes,
            "similarity": cos,
            "lag_profile": profile,  # mean similarity at lag 0, 1, ... snapshots
            "snapshot_every": every,
            "stripe_period_episodes": period * every if period else None,
            "stripe_period_epochs": period * every / T if period else None,
            "similarity_at_lag_T": at(lag_T),
            "similarity_at_lag_half_T": at(lag_T // 2),
            "sketch": store.sketch_info("weights", weights),
        }

    @staticmethod
    def _plot(cos, episodes, profile, every, T, weights, residual, period, out):
        fig, (ax, ax2) = new_figure(2, width=5.6)
        lo, hi = epoch_extent(episodes, T)
        off = cos[~np.eye(len(cos), dtype=bool)]
        lim = float(np.nanmax(np.abs(off))) if np.isfinite(off).any() else 1.0
        im = ax.imshow(
            cos, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=(lo, hi, hi, lo), interpolation="nearest"
        )
        fig.colorbar(im, ax=ax, label="cosine similarity")
        what = "minus centred T-episode mean" if residual == "window" else "minus initial weights"
        ax.set_title(f"Weight residuals of {weights} ({what})\n(cf. paper Fig. 8c)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("epoch")
        lags = np.arange(len(profile)) * every
        ax2.plot(lags, profile, "-", color="tab:blue")
        for k in range(1, int(lags[-1] // T) + 1):
            ax2.axvline(k * T, color="0.8", lw=0.8, zorder=0)
        if period:
            ax2.axvline(
                period * every,
                color="tab:red",
                ls="--",
                label=f"stripe period {period * every} episodes (T = {T})",
            )
            ax2.legend(fontsize=8)
        ax2.set_xlabel("lag (episodes)")
        ax2.set_ylabel("mean cosine at that lag")
        ax2.set_title("Similarity along the diagonals")
        save_figure(fig, out / "weight_residual_similarity.png")
