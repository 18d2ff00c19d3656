"""pca_weights: does the weight trajectory wind once round a helix per epoch? (paper Sec. 4.2, Fig. 9)

The top-3 principal components of the flattened weight snapshots are drawn as in Fig. 9. A
helix is a slow drift along its axis plus a rotation; when the drift dominates (it does for
small random-init models), the top two PCs describe the drift and the rotation shows up in
lower PCs. So the winding is measured in the PC1–PC2 plane of the *detrended* trajectory
(``detrend=window``: each snapshot minus the mean of a centred window of one cycle, the
residual of Sec. 4.2; a cycle is the run's mean epoch length, T for the cyclic and shuffled
orders), where the rotation is the largest variance left. ``detrend=none``
measures it in the raw PC1–PC2 plane. The period of every raw PC says which ones rotate.

The winding alone cannot tell a helix from a random walk: PCA of a high-dimensional random walk
is close to sinusoids by itself, and after the one-cycle detrend a Gaussian walk winds about once
per epoch too. The headline that separates them is ``helix_cosine``: the residual of each snapshot
(minus its centred one-cycle mean) against the residual one cycle later, mean cosine over all
pairs. A helix comes back to the same point of its turn (1 for an ideal one), a walk does not (its
residuals one cycle apart are made of disjoint steps: 0). It is reported beside its nulls — Gaussian
random walks of the run's shape, the run's own steps in a random order — and the matched shuffled
control's value when the run has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.probes.base import (
    Probe,
    control_store,
    describe_weights,
    integer_axis,
    new_figure,
    pick_recording,
    save_figure,
    write_3d_view,
)
from arprobe.probes.weight_residual_similarity import snapshot_spacing
from arprobe.science.geometry import (
    dominant_period,
    factor_from_gram,
    gram_matrix,
    helix_per_epoch,
    pca_from_gram,
    random_walk_null,
    residual_lag_cosine,
    residual_operator,
    snapshot_epochs,
    step_permutation_null,
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
    options = {"weights": "", "detrend": "window", "null_walks": 200}
    option_help = {
        "weights": "recorded weights (TransformerLens name, or all); empty: unembed as in the paper's "
        "Fig. 9, else all, else the first recorded",
        "detrend": "window: measure the winding after removing the drift (centred one-cycle mean); "
        "none: raw PCs",
        "null_walks": "random walks (and step permutations) simulated for the helix_cosine nulls, seed 0",
    }
    headline_keys = [
        "weights",
        "helix_cosine",
        "helix_verdict",
        "explained_variance",
        "pc_period_episodes",
        "winding_epochs",
        "winding_revolutions",
        "radius_per_epoch",
        "radius_last_over_first",
    ]

    def run(
        self, store, out: Path, weights: str = "", detrend: str = "window", null_walks: int = 200
    ) -> dict:
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
        helix_test = helix_statistic(gram, window, walks=null_walks, dim=values.shape[1])
        helix_test["control"] = control_helix_cosine(store, weights)
        helix_test["verdict"] = helix_verdict(helix_test)

        self._plot_3d(scores, ratio, epoch_of, weights, helix, episodes, schedule, detrend, window, out)
        self._plot_plane(helix, scores, ratio, episodes, schedule, detrend, out)
        return {
            "weights": weights,
            "weights_are": describe_weights(store, weights, paper_uses_all=False),  # Fig. 9: unembed
            # residual at k vs residual one cycle later, mean cosine: 1 helix, 0 random walk
            "helix_cosine": helix_test["value"],
            "helix_verdict": helix_test["verdict"],
            "null": helix_test,
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

    def headline(self, result: dict) -> dict:
        head = super().headline(result)
        null = result.get("null") or {}
        head["helix_cosine_random_walk_q975"] = (null.get("random_walk") or {}).get("q975")
        if null.get("control") is not None:
            head["helix_cosine_control"] = null["control"]
        return head

    @staticmethod
    def _plot_3d(scores, ratio, epoch_of, weights, helix, episodes, schedule, detrend, window, out):
        """The helix in 3-D, as a figure and as an interactive page. Detrended (the default), the
        drift that dominates the raw top PCs is gone: PC1-PC2 of the residuals against training
        time, one turn per epoch. Raw: the top-3 PCs, as the paper draws Fig. 9."""
        # lazy: matplotlib takes seconds to import; only this path needs it
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

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
        # lazy: matplotlib takes seconds to import; only this path needs it
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
        integer_axis(ax2, "epoch")
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


def helix_statistic(gram: np.ndarray, window: int, *, walks: int, dim: int) -> dict:
    """``helix_cosine`` of the snapshots whose (centred) Gram matrix is ``gram`` [S, S], with a lag
    and window of one cycle (``window`` snapshots), and its two nulls (``walks`` draws, seed 0):
    Gaussian random walks of S snapshots in ``dim`` dimensions, and the run's own steps in a
    random order. Returns {"value", "lag_snapshots", "random_walk", "step_permutation", "reads"}."""
    rows = factor_from_gram(gram)  # [S, r]: the snapshots' inner products in r ≤ S dimensions
    lag = window
    return {
        "value": residual_lag_cosine(rows, lag, window),
        "lag_snapshots": lag,
        "random_walk": {**random_walk_null(len(gram), dim, lag, window, walks=walks), "dim": dim},
        "step_permutation": step_permutation_null(rows, lag, window, walks=walks),
        "reads": "without a helix the residuals one cycle apart are unrelated: helix_cosine ≈ 0 for a "
        "random walk (Gaussian walks of the run's shape, and the run's own steps in a random order, "
        "give the mean and 97.5th percentile here); a shuffled control reads a little above 0",
    }


def helix_verdict(test: dict) -> str:
    """The verdict: helix-like when helix_cosine is above the 97.5th percentile of both random-walk nulls,
    else "not distinguishable from a random walk"; the control's value, when there is one, after."""
    value = test["value"]
    bound = max(test["random_walk"]["q975"], test["step_permutation"]["q975"])
    if not np.isfinite(value):
        verdict = "undefined: the run is shorter than two cycles of snapshots"
    elif np.isfinite(bound) and value > bound:
        verdict = f"helix-like ({value:.2f} > {bound:.2f}, the 97.5th percentile of the random-walk nulls)"
    else:
        verdict = f"not distinguishable from a random walk ({value:.2f} ≤ {bound:.2f}, 97.5th percentile)"
    if test.get("control") is not None:
        verdict += f"; matched shuffled control {test['control']:.2f}"
    return verdict


def control_helix_cosine(store, weights: str) -> float | None:
    """helix_cosine of the same weights in the run's matched shuffled control (None without one)."""
    control = control_store(store)
    if control is None:
        return None
    with control:
        if weights not in control.recorded("weights"):
            return None
        episodes, values = control.weights(weights)
        if len(episodes) < 4:
            return None
        window = max(int(round(control.schedule().cycle_length / snapshot_spacing(episodes))), 2)
        gram = gram_matrix(values, center=values.mean(axis=0, dtype=np.float64))
        return residual_lag_cosine(factor_from_gram(gram), window, window)
