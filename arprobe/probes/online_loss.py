"""online_loss: is structured (cyclic) training better in prequential evaluation? (Fig. 1c, Table 1)

Accepts several runs: runs whose configs differ only in the seed form one group, shown as
mean ± std over its runs; groups are labelled by their document order (cyclic, shuffle, ...)
and whatever else tells them apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.probes.base import Probe, bars_from_zero, integer_axis, new_figure, save_figure
from arprobe.probes.nulls import control_value, versus_control
from arprobe.report.grouping import group_runs
from arprobe.science.recovery import online_loss


def _mean_online_loss(store) -> float:
    """A run's mean online loss over epochs 2..E (the headline), read from its store."""
    schedule = store.schedule()
    return online_loss(store.eval_matrix(), schedule.doc, schedule.epoch).mean_after_first_epoch


def _std(values: np.ndarray, axis=None):
    """Sample standard deviation over runs; NaN for a single run (no spread to measure)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0] if axis == 0 else values.size
    if n < 2:
        return np.full(values.shape[1:], np.nan) if axis == 0 else float("nan")
    return values.std(axis=axis, ddof=1)


class OnlineLoss(Probe):
    name = "online_loss"
    description = (
        "Online (prequential) loss per episode and its mean over epochs 2..E (Fig. 1c, Table 1); "
        "several runs are overlaid, mean ± std over seeds per group."
    )
    requires = ["train_loss"]
    multi_run = True

    def run(self, store, out: Path) -> dict:
        stores = store if isinstance(store, (list, tuple)) else [store]
        configs = [s.config for s in stores]
        groups, labels = group_runs(configs)
        per_run = []
        for s in stores:
            schedule = s.schedule()
            ol = online_loss(s.eval_matrix(), schedule.doc, schedule.epoch)
            control = control_value(s, _mean_online_loss)  # None without a matched shuffled control
            run = {"run": str(s.path.parent), "seed": s.seed, "schedule": schedule, "online": ol}
            per_run.append({**run, "control": control})

        results = []
        for idx, label in zip(groups, labels):
            runs = [per_run[i] for i in idx]
            k = min(len(r["online"].per_episode) for r in runs)  # unfinished runs are cut to the shortest
            e = min(len(r["online"].per_epoch) for r in runs)
            # Episode k is the same point of training in every run only when their epochs have the
            # same lengths (cyclic, shuffle); insert-order seeds do not, so each keeps its own curve.
            aligned = all(
                np.array_equal(r["schedule"].epoch[:k], runs[0]["schedule"].epoch[:k]) for r in runs
            )
            episode = np.stack([r["online"].per_episode[:k] for r in runs])  # [run, episode]
            # episode k starts at (k − 1) episodes into training, read in epochs of the run's own lengths
            x_epochs = [r["schedule"].episodes_in_epochs(np.arange(k)) for r in runs]
            epoch = np.stack([r["online"].per_epoch[:e] for r in runs])  # [run, epoch]
            after_first = np.array([r["online"].mean_after_first_epoch for r in runs])
            controls = np.array([np.nan if r["control"] is None else r["control"] for r in runs])
            paired = np.isfinite(controls)
            control_mean = float(controls[paired].mean()) if paired.any() else None
            mean = float(after_first.mean())
            results.append(
                {
                    "label": label,
                    "runs": [r["run"] for r in runs],
                    "seeds": [r["seed"] for r in runs],
                    "per_episode_mean": episode.mean(axis=0) if aligned else None,
                    "per_episode_std": _std(episode, axis=0) if aligned else None,
                    "per_episode_per_run": episode,
                    "per_episode_epochs": x_epochs[0] if aligned else x_epochs,
                    "episodes_aligned": aligned,
                    "per_epoch_mean": epoch.mean(axis=0),
                    "per_epoch_std": _std(epoch, axis=0),
                    "mean_after_first_epoch": mean,
                    "mean_after_first_epoch_std": _std(after_first),
                    "mean_after_first_epoch_per_run": after_first,
                    "epochs": e,
                    # the matched shuffled controls of the runs that have one (same seeds)
                    "control_mean_after_first_epoch": control_mean,
                    "control_per_run": controls,
                    "null": {
                        "reads": "no analytic null: what the online loss reads without anticipation is the "
                        "matched shuffled control's (same seed, documents, initialisation; cyclic < shuffle "
                        "is the paper's Fig. 1c and Table 1)",
                        "control": control_mean,
                        "verdict": versus_control(
                            "online loss",
                            float(after_first[paired].mean()) if paired.any() else mean,
                            control_mean,
                        ),
                    },
                }
            )
        self._plot(results, out)
        return {"groups": results, "n_runs": len(stores)}

    def headline(self, result: dict) -> dict:
        head = {}
        for g in result["groups"]:
            n = len(g["runs"])
            head[f"{g['label']}: mean online loss, epochs 2..{g['epochs']}"] = g["mean_after_first_epoch"]
            if n > 1:
                head[f"{g['label']}: std over {n} runs"] = g["mean_after_first_epoch_std"]
            if g.get("control_mean_after_first_epoch") is not None:
                head[f"{g['label']}: matched shuffled control"] = g["control_mean_after_first_epoch"]
        return head

    @staticmethod
    def _plot(results: list[dict], out: Path) -> None:
        fig, (ax, ax2) = new_figure(2, width=6.0)
        colors = [f"C{i}" for i in range(10)]
        for i, g in enumerate(results):
            color = colors[i % 10]
            n = len(g["runs"])
            label = f"{g['label']} ({n} run{'s' if n > 1 else ''})"
            if g["episodes_aligned"]:
                mean, std = np.asarray(g["per_episode_mean"]), np.asarray(g["per_episode_std"])
                x = np.asarray(g["per_episode_epochs"])
                ax.plot(x, mean, color=color, lw=1.2, label=label)
                if n > 1:
                    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2)
            else:  # epochs of different lengths: one curve per run on its own epoch axis
                for j, (x, y) in enumerate(zip(g["per_episode_epochs"], g["per_episode_per_run"])):
                    ax.plot(x, y, color=color, lw=1.0, alpha=0.7, label=label if j == 0 else None)
            epochs = np.arange(1, len(g["per_epoch_mean"]) + 1)
            width = 0.8 / len(results)
            yerr = None if n < 2 else np.nan_to_num(np.asarray(g["per_epoch_std"], dtype=float))
            ax2.bar(
                epochs + (i - (len(results) - 1) / 2) * width,
                g["per_epoch_mean"],
                width,
                yerr=yerr,
                color=color,
                capsize=3,
                label=f"{g['label']}: epochs 2..{g['epochs']} mean {g['mean_after_first_epoch']:.3f}"
                + (f" ± {g['mean_after_first_epoch_std']:.3f}" if n > 1 else ""),
            )
        integer_axis(ax, "epoch")
        ax.set_ylabel("online loss (before the first step of each episode)")
        ax.set_title("Online (prequential) loss per episode (cf. paper Fig. 1c)")
        ax.legend(fontsize=8)
        bars_from_zero(ax2)  # bar heights compare as ratios only from 0
        integer_axis(ax2, "epoch")
        ax2.set_ylabel("mean online loss")
        ax2.set_title("Mean online loss per epoch (± std over runs)")
        ax2.legend(fontsize=8)
        data: dict = {}
        for g in results:
            if g["episodes_aligned"]:
                data[f"{g['label']}: epoch"] = g["per_episode_epochs"]
                data[f"{g['label']}: mean"] = g["per_episode_mean"]
                data[f"{g['label']}: std"] = g["per_episode_std"]
            else:
                for run, x, y in zip(g["runs"], g["per_episode_epochs"], g["per_episode_per_run"]):
                    data[f"{g['label']}: {run}: epoch"] = x
                    data[f"{g['label']}: {run}: online loss"] = y
            data[f"{g['label']}: per-epoch mean"] = g["per_epoch_mean"]
            data[f"{g['label']}: per-epoch std"] = g["per_epoch_std"]
        save_figure(fig, out / "online_loss.png", data=data)
