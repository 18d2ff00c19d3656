"""pca_weights: does the weight trajectory wind once round a helix per epoch? (paper Sec. 4.2, Fig. 9)

The top-3 principal components of the flattened weight snapshots are drawn as in Fig. 9. A
helix is a slow drift along its axis plus a rotation; when the drift dominates (it does for
small random-init models), the top two PCs describe the drift and the rotation shows up in
lower PCs. So the winding is measured in the PC1–PC2 plane of the *detrended* trajectory
(``detrend=window``: each snapshot minus the mean of a centred window of one cycle, the
residual of Sec. 4.2; a cycle is the run's mean epoch length, T for the cyclic and shuffled
orders), where the rotation is the largest variance left. ``detrend=none``
measures it in the raw PC1–PC2 plane. The period of every raw PC says which ones rotate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.probes.base import (
    Probe,
    describe_weights,
    new_figure,
    pick_recording,
    save_figure,
    write_3d_view,
)
from arprobe.probes.weight_residual_similarity import snapshot_spacing
from arprobe.science.geometry import (
    dominant_period,
    gram_matrix,
    helix_per_epoch,
    pca_from_gram,
    snapshot_epochs,
    trajectory_winding,
    trend,
)

DETRENDS = ("window", "none")
PLANES = ((0, 1), (0, 2), (1, 2))
# Fig. 9 is drawn from the output-embedding weights; all weights next, then whatever was recorded.
PREFERRED = ("unembed", "all")


class PcaWeights(Probe):
    name = "pca_weights"
    description = (
        "Top-3 PCs of the weight trajectory (Fig. 9): explained variance, winding angle per epoch "
        "(≈ 2π for one revolution) and radius per epoch (shrinking as it converges)."
    )
    requires = ["weights:{weights}"]
    options = {"weights": "", "detrend": "window"}
    option_help = {
        "weights": "recorded weights (TransformerLens name, or all); empty: unembed as in the paper's "
        "Fig. 9, else all, else the first recorded",
        "detrend": "window: measure the winding after removing the drift (centred one-cycle mean); "
        "none: raw PCs",
    }
    headline_keys = [
        "weights",
        "explained_variance",
        "pc_period_episodes",
        "winding_epochs",
        "winding_revolutions",
        "radius_per_epoch",
        "radius_last_over_first",
    ]

    def run(self, store, out: Path, weights: str = "", detrend: str = "window") -> dict:
        if detrend not in DETRENDS:
            raise UserError(
                f"pca_weights option detrend must be one of {', '.join(DETRENDS)}, got '{detrend}'."
            )
        weights = pick_recording(store, "weights", weights, PREFERRED)
        episodes, values = store.weights(weights)  # [S], [S, D]
        schedule = store.schedule()
        if len(episodes) < 4:
            raise UserError(
                f"pca_weights needs at least 4 snapshots of '{weights}', the run has {len(episodes)}."
            )
        every = snapshot_spacing(episodes)
        epoch_of = snapshot_epochs(episodes, schedule.epoch)
        gram = gram_matrix(values, center=values.mean(axis=0, dtype=np.float64))  # [S, S]
        scores, ratio = pca_from_gram(gram, 4)  # [S, 4]
        periods = [dominant_period(scores[:, k]) for k in range(scores.shape[1])]
        raw_planes = {f"PC{a + 1}-PC{b + 1}": helix_per_epoch(scores[:, [a, b]], epoch_of) for a, b in PLANES}
        # The residual window is one cycle: the run's mean epoch length (T for cyclic and shuffled
        # orders), in snapshots.
        window = max(int(round(schedule.cycle_length / every)), 2)
        helix = trajectory_winding(gram, epoch_of, detrend=detrend, window=window)
        # Only epochs with every snapshot count: the window leaves the first and last half-cycle out.
        complete = helix["complete"]
        radius = helix["radius"][complete]

        self._plot_3d(scores, ratio, epoch_of, weights, helix, episodes, schedule, detrend, window, out)
        self._plot_plane(helix, scores, ratio, episodes, schedule, detrend, out)
        return {
            "weights": weights,
            "weights_are": describe_weights(store, weights, paper_uses_all=False),  # Fig. 9: unembed
            "snapshots": int(len(episodes)),
            "snapshot_every": every,
            "explained_variance": ratio[:3],
            "scores": scores[:, :3],
            "episodes": episodes,
            "snapshot_epoch": epoch_of,
            # dominant Fourier period of each raw PC over the trajectory, in episodes (≈ T: it rotates)
            "pc_period_episodes": [p * every if p else None for p in periods[:3]],
            "pc4_period_episodes": periods[3] * every if len(periods) > 3 and periods[3] else None,
            "detrend": detrend,
            "window_episodes": window * every if detrend == "window" else None,
            "plane": "PC1-PC2 of the detrended trajectory" if detrend == "window" else "PC1-PC2",
            "plane_explained_variance": helix["plane_explained_variance"],
            "epoch": helix["epoch"],
            "epoch_complete": complete,
            # radians per epoch; sign = direction, which PCA leaves arbitrary
            "winding_angle": helix["winding"],
            "winding_epochs": helix["epoch"][complete],
            "winding_revolutions": helix["revolutions"][complete],
            "radius_per_epoch": radius,
            "radius_last_over_first": float(radius[-1] / radius[0]) if len(radius) > 1 else None,
            "radius_trend_per_epoch": trend(radius),
            "raw_planes": {
                name: {"winding_revolutions": h["winding"] / (2 * np.pi), "radius": h["radius"]}
                for name, h in raw_planes.items()
            },
            "sketch": store.sketch_info("weights", weights),
        }

    @staticmethod
    def _plot_3d(scores, ratio, epoch_of, weights, helix, episodes, schedule, detrend, window, out):
        """The helix in 3-D, as a figure and as an interactive page. Detrended (the default), the
        drift that dominates the raw top PCs is gone: PC1-PC2 of the residuals against training
        time, one turn per epoch. Raw: the top-3 PCs, as the paper draws Fig. 9."""
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        from arprobe.science.geometry import residual_operator

        if detrend == "window":
            _, rows = residual_operator(len(epoch_of), "window", window)
            time = schedule.episodes_in_epochs(np.asarray(episodes)[rows])
            points = np.column_stack([helix["plane"][:, 0], helix["plane"][:, 1], time])  # [m, 3]
            point_epoch = helix["plane_epoch"]
            pr = helix["plane_explained_variance"]
            labels = (f"detrended PC1 ({pr[0]:.0%})", f"detrended PC2 ({pr[1]:.0%})", "epoch")
            title = f"Detrended trajectory of the {weights} weights: a helix along training time (cf. Fig. 9)"
        else:
            rows = np.arange(len(epoch_of))
            points, point_epoch = scores[:, :3], epoch_of
            labels = tuple(f"PC{k + 1} ({ratio[k]:.0%})" for k in range(3))
            title = f"Top-3 PCs of the {weights} weights through training (cf. paper Fig. 9)"
        fig, (ax,) = new_figure(1, width=6.5, height=5.5, projection=["3d"])
        cmap = colormaps["viridis"]
        n_epochs = max(int(point_epoch.max()), 1)
        series = []
        for e in sorted(set(point_epoch.tolist())):
            idx = np.flatnonzero(point_epoch == e)
            idx = np.concatenate([[idx[0] - 1], idx]) if idx[0] > 0 else idx
            color = "black" if e == 0 else cmap((e - 1) / max(n_epochs - 1, 1))
            name = "before training" if e == 0 else f"epoch {e}"
            ax.plot(points[idx, 0], points[idx, 1], points[idx, 2], "-o", ms=2.5, color=color, label=name)
            series.append({"name": name, "color": to_hex(color), "points": points[idx]})
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_zlabel(labels[2])
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
        data = {
            "episode": np.asarray(episodes)[rows],
            "epoch_of_snapshot": point_epoch,
            labels[0]: points[:, 0],
            labels[1]: points[:, 1],
            labels[2]: points[:, 2],
        }
        save_figure(fig, out / "pca_3d.png", data=data)
        write_3d_view(out / "pca_3d.html", series, title=title, axes=labels)

    @staticmethod
    def _plot_plane(helix, scores, ratio, episodes, schedule, detrend, out):
        from matplotlib import colormaps

        plane, plane_ratio, plane_epochs = (
            helix["plane"],
            helix["plane_explained_variance"],
            helix["plane_epoch"],
        )
        fig, (ax, ax2) = new_figure(2, width=5.6)
        cmap = colormaps["viridis"]
        n_epochs = max(int(plane_epochs.max()), 1)
        for e in sorted(set(plane_epochs.tolist()) - {0}):
            idx = np.flatnonzero(plane_epochs == e)
            idx = np.concatenate([[idx[0] - 1], idx]) if idx[0] > 0 else idx
            k = list(helix["epoch"]).index(e)
            ax.plot(
                plane[idx, 0],
                plane[idx, 1],
                "-o",
                ms=3,
                color=cmap((e - 1) / max(n_epochs - 1, 1)),
                label=f"epoch {e}: {helix['revolutions'][k]:+.2f} rev"
                + ("" if helix["complete"][k] else " (partial)"),
            )
        ax.set_aspect("equal", adjustable="datalim")
        what = "detrended (minus centred one-cycle mean)" if detrend == "window" else "raw"
        ax.set_xlabel(f"PC1 ({plane_ratio[0]:.0%})")
        ax.set_ylabel(f"PC2 ({plane_ratio[1]:.0%})")
        ax.set_title(f"PC1–PC2 of the {what} trajectory")
        ax.legend(fontsize=7)
        x = schedule.episodes_in_epochs(episodes)  # epoch e ends at e, whatever its length
        for k in range(min(4, scores.shape[1])):
            ax2.plot(x, scores[:, k] / (np.abs(scores[:, k]).max() or 1), label=f"PC{k + 1} ({ratio[k]:.1%})")
        for e in range(1, schedule.n_epochs):
            ax2.axvline(e, color="0.85", lw=0.8, zorder=0)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("PC score (scaled to ±1)")
        ax2.set_title("Raw PCs over training: which ones rotate once per epoch")
        ax2.legend(fontsize=8)
        data = {
            "plane_epoch": plane_epochs,
            "plane_PC1": plane[:, 0],
            "plane_PC2": plane[:, 1],
            "episode": episodes,
            "epoch": x,
            **{f"raw_PC{k + 1}": scores[:, k] for k in range(min(4, scores.shape[1]))},
        }
        save_figure(fig, out / "pca_winding.png", data=data)
