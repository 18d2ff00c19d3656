"""toy_model: the paper's computational toy model (Sec. 4.4, App. A.5), beside a run if one is given.

Runs both task maps, f_i(w) = w (N = M = 1000) and f_i(w) = y_i − w (N = M = 100), T = 25,
with the initialisations of App. A.5. The learning rate of f_i(w) = w is 0.001, not the
paper's 0.01: with N = 1000 the paper's value makes Eq. 1 diverge (see
arprobe.science.toy.DEFAULT_LR).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.probes.base import Probe, new_figure, save_figure
from arprobe.science.toy import DEFAULT_EPOCHS, DEFAULT_LR, KINDS, circularity, pca_2d, simulate_toy_model

TITLES = {"identity": "f_i(w) = w", "target": "f_i(w) = y_i − w"}


class ToyModel(Probe):
    name = "toy_model"
    description = (
        "The paper's toy model (Sec. 4.4, App. A.5): task-1 loss (Fig. 10), recovery scores, and the "
        "embeddings forming a circle (Fig. 11); beside the run's curve when given one."
    )
    requires: list[str] = []
    needs_store = False
    options = {
        "epochs": DEFAULT_EPOCHS,
        "n_tasks": 25,
        "seed": 0,
        "lr_identity": DEFAULT_LR["identity"],
        "lr_target": DEFAULT_LR["target"],
    }
    option_help = {
        "epochs": "training epochs of the toy model",
        "n_tasks": "T, tasks in the cycle (paper: 25)",
        "seed": "seed of P, x_i, w and y_i",
        "lr_identity": "learning rate for f_i(w) = w (paper: 0.01, which diverges at N = 1000; 0.001 here)",
        "lr_target": "learning rate for f_i(w) = y_i − w (paper: 0.01)",
    }
    headline_keys = [
        "identity_rs_first",
        "identity_rs_last",
        "target_rs_first",
        "target_rs_last",
        "target_circle_order_before",
        "target_circle_order_after",
        "run_rs",
    ]

    def run(
        self,
        store,
        out: Path,
        epochs: int = DEFAULT_EPOCHS,
        n_tasks: int = 25,
        seed: int = 0,
        lr_identity: float = DEFAULT_LR["identity"],
        lr_target: float = DEFAULT_LR["target"],
    ) -> dict:
        from arprobe.science.recovery import recovery_scores, shift_averaged_curve

        lrs = {"identity": lr_identity, "target": lr_target}
        result: dict = {"epochs": epochs, "n_tasks": n_tasks, "seed": seed, "lr": lrs}
        toys = {}
        for kind in KINDS:
            toy = simulate_toy_model(kind, n_tasks=n_tasks, epochs=epochs, lr=lrs[kind], seed=seed)
            rs = recovery_scores(toy.loss, toy.schedule)  # [E − 1]
            before = circularity(pca_2d(toy.embeddings[0])[0])
            after_coords, ratio = pca_2d(toy.embeddings[-1])
            after = circularity(after_coords)
            toys[kind] = toy
            result[kind] = {
                "dim": int(toy.embeddings.shape[2]),
                "recovery_score": rs,
                "task1_loss": toy.loss[:, 0],
                "circle_before": before,  # PCA of the embeddings f_i^{-1}(P x_i) before training
                "circle_after": after,  # ... and after the last epoch
                "pca_explained_after": ratio,
            }
            result[f"{kind}_rs_first"] = float(rs[0]) if len(rs) else None
            result[f"{kind}_rs_last"] = float(rs[-1]) if len(rs) else None
            result[f"{kind}_circle_order_before"] = before["order_agreement"]
            result[f"{kind}_circle_order_after"] = after["order_agreement"]

        run_curve = None
        if store is not None:
            loss_eval = store.eval_matrix()
            schedule = store.schedule()
            schedule_doc, _ = schedule.doc, schedule.epoch
            run_curve = shift_averaged_curve(loss_eval, schedule_doc)
            run_rs = recovery_scores(loss_eval, schedule_doc)
            result["run"] = str(store.path.parent)
            result["run_rs"] = run_rs
            result["run_n_docs"] = store.n_docs

        self._plot_loss(toys, n_tasks, result, out)
        self._plot_circles(toys, out)
        if run_curve is not None:
            self._plot_side_by_side(toys, n_tasks, run_curve, store.n_docs, result, out)
        return result

    @staticmethod
    def _plot_loss(toys, T, result, out):
        fig, axes = new_figure(3, width=4.8)
        for ax, kind in zip(axes[:2], KINDS):
            loss = toys[kind].loss[:, 0]
            ax.plot(np.arange(len(loss)) / T, loss, lw=1.0)
            _clip_first_epoch(ax, loss, T)
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss on task 1")
            ax.set_title(f"Toy model, {TITLES[kind]}: task-1 loss (cf. Fig. 10)", fontsize=10)
        ax = axes[2]
        for kind in KINDS:
            rs = np.asarray(result[kind]["recovery_score"], dtype=float)
            ax.plot(np.arange(1, len(rs) + 1), rs, "o-", ms=3, label=TITLES[kind])
        ax.set_xlabel("epoch n")
        ax.set_ylabel("recovery score RS(n)")
        ax.set_title("Toy model recovery score per epoch", fontsize=10)
        ax.legend(fontsize=8)
        save_figure(fig, out / "toy_loss.png")

    @staticmethod
    def _plot_circles(toys, out):
        from matplotlib import colormaps

        for kind, toy in toys.items():
            n_epochs = toy.embeddings.shape[0] - 1
            shown = sorted({0, 1, max(n_epochs // 6, 1), n_epochs // 3, 2 * n_epochs // 3, n_epochs})
            fig, axes = new_figure(len(shown), width=3.2, height=3.4)
            T = toy.embeddings.shape[1]
            colors = colormaps["hsv"](np.arange(T) / T)
            for ax, e in zip(axes, shown):
                coords, _ = pca_2d(toy.embeddings[e])
                closed = np.vstack([coords, coords[:1]])
                ax.plot(closed[:, 0], closed[:, 1], "-", color="0.75", lw=0.8)
                ax.scatter(coords[:, 0], coords[:, 1], c=colors, s=18, zorder=3)
                c = circularity(coords)
                ax.set_title(f"epoch {e}: order {c['order_agreement']:.2f}", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_aspect("equal", adjustable="datalim")
            fig.suptitle(
                f"Toy model, {TITLES[kind]}: PCA of f_i^-1(P x_i), tasks coloured in order (cf. Fig. 11)"
            )
            save_figure(fig, out / f"toy_circle_{kind}.png")

    @staticmethod
    def _plot_side_by_side(toys, T, run_curve, run_T, result, out):
        from arprobe.science.recovery import shift_averaged_curve

        fig, axes = new_figure(3, width=4.8)
        axes[0].plot(run_curve.offset / run_T, run_curve.mean, color="tab:blue")
        axes[0].fill_between(
            run_curve.offset / run_T,
            run_curve.mean - run_curve.std,
            run_curve.mean + run_curve.std,
            color="tab:blue",
            alpha=0.2,
        )
        axes[0].set_title("This run: shift-averaged loss", fontsize=10)
        axes[0].set_ylabel("loss")
        target = toys["target"]
        toy_curve = shift_averaged_curve(target.loss, target.schedule)
        axes[1].plot(toy_curve.offset / T, toy_curve.mean, color="tab:orange")
        _clip_first_epoch(axes[1], toy_curve.mean, T)
        axes[1].set_title(f"Toy model {TITLES['target']}: shift-averaged loss", fontsize=10)
        axes[1].set_ylabel("loss")
        for ax in axes[:2]:
            ax.set_xlabel("epochs since just before first training")
        run_rs = np.asarray(result["run_rs"], dtype=float)
        axes[2].plot(np.arange(1, len(run_rs) + 1), run_rs, "o-", label="this run")
        for kind in KINDS:
            rs = np.asarray(result[kind]["recovery_score"], dtype=float)
            axes[2].plot(np.arange(1, len(rs) + 1), rs, "-", lw=1, label=f"toy {TITLES[kind]}")
        axes[2].set_xlabel("epoch n")
        axes[2].set_ylabel("RS(n)")
        axes[2].set_title("Recovery score: run vs toy model", fontsize=10)
        axes[2].legend(fontsize=8)
        save_figure(fig, out / "toy_vs_run.png")


def _clip_first_epoch(ax, loss: np.ndarray, T: int) -> None:
    """Linear y-axis up to the highest loss after the first epoch: the untrained start can be
    100x larger and would flatten every later cycle (a log axis instead turns the exact
    solves of Eq. 2, loss ~1e-30, into spikes)."""
    later = loss[T + 1 :]
    if len(later) and later.max() > 0:
        top = float(later.max()) * 1.1
        ax.set_ylim(0, top)
        if loss.max() > top:
            ax.text(
                0.01, 0.98, "first epoch clipped", transform=ax.transAxes, va="top", fontsize=7, color="0.4"
            )
