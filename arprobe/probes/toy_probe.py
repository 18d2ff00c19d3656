"""toy_model: the paper's computational toy model (Sec. 4.4, App. A.5), number for number beside a run.

Runs both task maps, f_i(w) = w (N = M = 1000) and f_i(w) = y_i − w (N = M = 100), with the
initialisations of App. A.5. Without a run: T = 25 tasks in cyclic order for ``epochs`` epochs.
Given a run: the toy is trained on the run's own schedule, document t being task t, so it has
the run's T, E and order (cyclic, shuffled, partial-shuffle, insert), and the probe reports
side by side the recovery score per epoch of both, the Pearson correlation of their
shift-averaged curves, and the PCA winding per epoch of both trajectories (the run's weights,
``weights/all`` when recorded; the toy's fast weights w, which after each task sit on that
task's embedding, so their trajectory is the ring of Fig. 11 walked in training order).

Which of those separate a cyclic from a shuffled order? Measured on the default run's schedule
(T = 10, E = 4, 3 seeds): the curve correlation barely does (0.925 cyclic vs 0.902 shuffled), and
the winding not at all (a random walk winds about once per epoch after the detrend). The headline
is ``helix_cosine`` of both trajectories (the residual one cycle later, see pca_weights): the toy
reads 0.92-0.96 on a cyclic schedule and -0.19..0.22 on a shuffled one. Each is reported beside its
nulls: Gaussian random walks of the trajectory's shape, the toy trained on the run's documents
shuffled within each epoch (``toy_shuffled``), and the run's matched shuffled control when it has one.

Beside each toy, its closed-form baseline (arprobe.science.toy_closed_form): the same model, start and
schedule with Eq. 2 left out, i.e. linear regression on the fixed targets f_i(w_0) (Evron et al., COLT
2022), whose every loss is a product of (T+1) × (T+1) matrices — drawn with the toy's task-1 loss and RS and
compared number for number (``closed_form_*``). The toy itself is also reproduced in closed form
(``closed_form_toy_error``, rounding only).

The learning rate of f_i(w) = w is 0.001, not the paper's 0.01: with N = 1000 the paper's value
makes Eq. 1 diverge (see arprobe.science.toy.DEFAULT_LR).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import UserError
from arprobe.probes.base import (
    Probe,
    bars_from_zero,
    describe_weights,
    integer_axis,
    new_figure,
    pick_recording,
    save_figure,
)
from arprobe.probes.pca_weights import control_helix_cosine
from arprobe.probes.weight_residual_similarity import snapshot_spacing
from arprobe.science.comparison import curve_correlation, revolutions_per_epoch, ring_order
from arprobe.science.geometry import (
    factor_from_gram,
    gram_matrix,
    pearson,
    random_walk_null,
    residual_lag_cosine,
    step_permutation_null,
)
from arprobe.science.recovery import recovery_score_notes, recovery_scores
from arprobe.science.schedule import Schedule
from arprobe.science.toy import (
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    KINDS,
    circularity,
    pca_2d,
    shuffle_within_epochs,
    simulate_toy_model,
)
from arprobe.science.toy_closed_form import baseline_for_toy, draw_toy_model

TITLES = {"identity": "f_i(w) = w", "target": "f_i(w) = y_i − w"}


class ToyModel(Probe):
    name = "toy_model"
    description = (
        "The paper's toy model (Sec. 4.4, App. A.5): task-1 loss (Fig. 10), recovery scores, the "
        "embeddings forming a ring (Fig. 11); given a run, trained on its schedule and compared number "
        "for number."
    )
    requires: list[str] = []
    needs_store = False
    options = {
        "epochs": DEFAULT_EPOCHS,
        "n_tasks": 25,
        "seed": 0,
        "lr_identity": DEFAULT_LR["identity"],
        "lr_target": DEFAULT_LR["target"],
        "weights": "",
        "closed_form_steps": 1,
    }
    option_help = {
        "epochs": "training epochs of the toy model without a run (given a run, the run's E)",
        "n_tasks": "T, tasks in the cycle without a run (paper: 25; given a run, the run's T)",
        "seed": "seed of P, x_i, w and y_i",
        "lr_identity": "learning rate for f_i(w) = w (paper: 0.01, which diverges at N = 1000; 0.001 here)",
        "lr_target": "learning rate for f_i(w) = y_i − w (paper: 0.01)",
        "weights": "the run's recorded weights whose winding is compared; empty: all if recorded, else "
        "unembed, else the first recorded",
        "closed_form_steps": "gradient steps per episode of the closed-form linear-regression baseline (w "
        "frozen); 0: trained to convergence, Evron et al.'s setting (the toy takes 1; more change "
        "nothing in it)",
    }
    headline_keys = [
        "toy_schedule",
        "identity_rs_first",
        "identity_rs_last",
        "target_rs_first",
        "target_rs_last",
        "target_circle_order_before",
        "target_circle_order_after",
        "run_rs",
        "run_helix_cosine",
        "toy_helix_cosine",
        "helix_verdict",
        "curve_correlation",
        "closed_form_task1_max_abs_diff",
        "closed_form_curve_correlation",
        "closed_form_rs_last",
        "closed_form_toy_error",
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
        weights: str = "",
        closed_form_steps: int = 1,
    ) -> dict:
        if store is None:
            doc = np.tile(np.arange(n_tasks), epochs)
            schedule = Schedule(doc, np.repeat(np.arange(1, epochs + 1), n_tasks), n_tasks)
            where = f"cyclic, T = {n_tasks}, E = {epochs} (no run given)"
        else:
            schedule = store.schedule()
            order = store.config.get("schedule", {}).get("order", "?")
            where = (
                f"the run's schedule: {order}, T = {store.n_docs}, E = {schedule.n_epochs}, "
                f"K = {len(schedule)} episodes"
            )
        T = schedule.n_docs
        ring_docs = schedule.repeating_docs  # in the order of their first training
        lrs = {"identity": lr_identity, "target": lr_target}
        result: dict = {
            "toy_schedule": where,
            "n_tasks": T,
            "epochs": schedule.n_epochs,
            "seed": seed,
            "lr": lrs,
        }
        if store is not None:  # the run's T and E replace these options: the report shows what was used
            result["options_from_run"] = {"epochs": schedule.n_epochs, "n_tasks": T}
        toys = {}
        for kind in KINDS:
            toy = simulate_toy_model(
                kind, n_tasks=T, lr=lrs[kind], seed=seed, schedule=schedule.doc, epoch=schedule.epoch
            )
            rs = recovery_scores(toy.loss, toy.schedule)  # [N]
            ring = len(ring_docs) > 2  # a ring needs 3 tasks
            before = ring_order(toy.embeddings[0], ring_docs) if ring else None
            after = ring_order(toy.embeddings[-1], ring_docs) if ring else None
            ratio = pca_2d(toy.embeddings[-1][ring_docs])[1] if len(ring_docs) > 1 else None
            toys[kind] = toy
            result[kind] = {
                "dim": int(toy.embeddings.shape[2]),
                "recovery_score": rs,
                "recovery_score_notes": recovery_score_notes(toy.loss, toy.schedule),
                "task1_loss": toy.loss[:, 0],
                # PCA of the embeddings f_i^{-1}(P x_i) of the repeating tasks, read in the order of
                # their first training (0..T-1 when cyclic; a shuffled order changes it every epoch)
                "circle_before": before,
                "circle_after": after,  # ... after the last epoch
                "pca_explained_after": ratio,
            }
            result[f"{kind}_rs_first"] = float(rs[0]) if len(rs) else None
            result[f"{kind}_rs_last"] = float(rs[-1]) if len(rs) else None
            result[f"{kind}_circle_order_before"] = before["order_agreement"] if before else None
            result[f"{kind}_circle_order_after"] = after["order_agreement"] if after else None

        closed, error = self._closed_form(toys, schedule, lrs, seed, closed_form_steps)
        result.update(self._compare_closed_form(toys, closed, error, schedule, closed_form_steps))
        self._plot_loss(toys, schedule, result, out, closed)
        self._plot_circles(toys, ring_docs, out)
        if store is not None:
            result.update(self._compare(store, schedule, toys, weights))
            result["closed_form_run_curve_correlation"] = {
                kind: curve_correlation(store.eval_matrix(), loss, schedule)["correlation"]
                for kind, loss in closed.items()
            }
            result.update(self._helix_against_nulls(store, schedule, toys, lrs, seed, result))
            self._plot_side_by_side(result, out)
        return result

    @staticmethod
    def _closed_form(toys, schedule, lrs, seed, steps) -> tuple[dict, dict]:
        """({kind: baseline eval matrix [K+1, T]}, {kind: error}): each toy's model, start and schedule with
        its fast weights frozen at w_0, trained by ``steps`` steps per episode (0: to convergence), in
        closed form; and the largest difference between the toy's own closed form and the trained toy."""
        if steps < 0:
            raise UserError(f"Option closed_form_steps must be 0 (to convergence) or more, got {steps}.")
        closed, error = {}, {}
        for kind, toy in toys.items():
            P, X, w, Y = draw_toy_model(kind, schedule.n_docs, toy.embeddings.shape[2], seed)
            baseline, exact = baseline_for_toy(kind, P, X, w, Y, toy.schedule, lrs[kind], steps or None)
            closed[kind] = baseline
            error[kind] = float(np.max(np.abs(exact - toy.loss)))
        return closed, error

    @staticmethod
    def _compare_closed_form(toys, closed, error, schedule, steps) -> dict:
        """Each toy beside its closed-form baseline: task-1 loss, shift-averaged curves, recovery scores."""
        diff, corr, task1_corr, rs, rs_last = {}, {}, {}, {}, {}
        for kind, toy in toys.items():
            baseline = closed[kind]
            diff[kind] = float(np.max(np.abs(toy.loss[:, 0] - baseline[:, 0])))
            task1_corr[kind] = pearson(toy.loss[1:, 0], baseline[1:, 0])
            corr[kind] = curve_correlation(toy.loss, baseline, schedule)["correlation"]
            rs[kind] = recovery_scores(baseline, toy.schedule)
            rs_last[kind] = float(rs[kind][-1]) if len(rs[kind]) else None
        return {
            "closed_form": {
                "reads": "linear regression with the toy's own P_0, x_i, lr and schedule and its targets "
                "frozen at f_i(w_0) (Eq. 2 left out: Evron et al. 2022's setting), every loss a product of "
                f"(T+1) x (T+1) matrices; {'trained to convergence' if not steps else f'{steps} step(s)'} "
                "per episode. It forgets (other tasks' steps move the shared P) but its targets do not "
                "move, so nothing in it anticipates the next task",
                "steps": steps or None,
                "recovery_score": rs,
                "recovery_score_notes": {
                    kind: recovery_score_notes(closed[kind], toys[kind].schedule) for kind in toys
                },
                "task1_loss": {kind: loss[:, 0] for kind, loss in closed.items()},
                "task1_correlation": task1_corr,
            },
            "closed_form_task1_max_abs_diff": diff,
            "closed_form_curve_correlation": corr,
            "closed_form_rs_last": rs_last,
            "closed_form_toy_error": error,
        }

    @staticmethod
    def _compare(store, schedule, toys, weights) -> dict:
        """The run's numbers next to each toy's, all on the run's schedule."""
        loss_eval = store.eval_matrix()
        out: dict = {
            "run": str(store.path.parent),
            "run_n_docs": store.n_docs,
            "run_rs": recovery_scores(loss_eval, schedule.doc),
            "run_rs_notes": recovery_score_notes(loss_eval, schedule.doc),
            "toy_rs": {kind: recovery_scores(toy.loss, toy.schedule) for kind, toy in toys.items()},
        }
        curves = {kind: curve_correlation(loss_eval, toy.loss, schedule) for kind, toy in toys.items()}
        out["curves"] = curves
        out["curve_correlation"] = {kind: c["correlation"] for kind, c in curves.items()}
        out["curve_correlation_all_offsets"] = {
            kind: c["correlation_all_offsets"] for kind, c in curves.items()
        }

        toy_wind = {
            kind: revolutions_per_epoch(toy.fast_weights, np.arange(len(toy.fast_weights)), schedule)
            for kind, toy in toys.items()
        }
        out["toy_winding"] = toy_wind
        out["toy_winding_revolutions"] = {k: w["revolutions"][w["complete"]] for k, w in toy_wind.items()}
        out["run_winding"] = None
        out["run_winding_revolutions"] = None
        out["run_winding_of"] = "no weights recorded (record.weights)"
        if store.recorded("weights"):
            name = pick_recording(store, "weights", weights, ("all", "unembed"))
            episodes, values = store.weights(name)
            snapshot_spacing(episodes)  # one sentence if uneven
            if len(episodes) >= 4:
                wind = revolutions_per_epoch(values, episodes, schedule)
                out["run_winding"] = wind
                out["run_winding_revolutions"] = wind["revolutions"][wind["complete"]]
                out["run_winding_of"] = describe_weights(store, name)
                out["run_weights"] = name
            else:
                out["run_winding_of"] = f"only {len(episodes)} snapshots of '{name}'; the winding needs 4"
        return out

    @staticmethod
    def _helix_against_nulls(store, schedule, toys, lrs, seed, result) -> dict:
        """helix_cosine of the run's weights and of each toy's w (lag and window one cycle), beside
        random walks of their shapes, the toy on the run's documents shuffled within epochs, and the
        run's matched shuffled control."""
        cycle = max(int(round(schedule.cycle_length)), 2)
        toy_helix, toy_null, toy_steps, toy_shuffled = {}, {}, {}, {}
        shuffled = shuffle_within_epochs(schedule.doc, schedule.epoch, seed=seed)
        for kind, toy in toys.items():
            toy_helix[kind] = residual_lag_cosine(toy.fast_weights, cycle, cycle)
            n, dim = toy.fast_weights.shape
            toy_null[kind] = random_walk_null(n, dim, cycle, cycle, walks=200, seed=0)
            toy_steps[kind] = step_permutation_null(toy.fast_weights, cycle, cycle, walks=200, seed=0)
            other = simulate_toy_model(
                kind,
                n_tasks=schedule.n_docs,
                lr=lrs[kind],
                seed=seed,
                schedule=shuffled,
                epoch=schedule.epoch,
            )
            rs = recovery_scores(other.loss, other.schedule)
            toy_shuffled[kind] = {
                "helix_cosine": residual_lag_cosine(other.fast_weights, cycle, cycle),
                "recovery_score": rs,
            }
        run_helix, run_null, run_steps, of = None, None, None, result.get("run_winding_of")
        if result.get("run_winding") is not None:
            name = result["run_weights"]
            episodes, values = store.weights(name)
            every = int(np.diff(episodes[episodes > 0])[0]) if (episodes > 0).sum() > 1 else 1
            window = max(int(round(schedule.cycle_length / every)), 2)
            rows = factor_from_gram(gram_matrix(values, center=values.mean(axis=0, dtype=np.float64)))
            run_helix = residual_lag_cosine(rows, window, window)
            run_null = random_walk_null(len(episodes), values.shape[1], window, window, walks=200, seed=0)
            run_steps = step_permutation_null(rows, window, window, walks=200, seed=0)
            control = control_helix_cosine(store, name)
        else:
            control = None
        parts = []
        if run_helix is not None:
            parts.append(_helix_words("run", run_helix, (run_null, run_steps), control))
        for kind in toys:
            nulls = (toy_null[kind], toy_steps[kind])
            words = _helix_words(f"toy {TITLES[kind]}", toy_helix[kind], nulls, None)
            parts.append(f"{words}, {toy_shuffled[kind]['helix_cosine']:.2f} with each epoch shuffled")
        return {
            "run_helix_cosine": run_helix,
            "toy_helix_cosine": toy_helix,
            "helix_verdict": "; ".join(parts),
            "null": {
                "reads": "without a repeating order neither trajectory comes back one cycle later: "
                "helix_cosine ≈ 0 for random walks of each trajectory's shape (random_walk: mean, 97.5th "
                "percentile, 200 walks, seed 0) and for its own steps in random orders (step_permutation), "
                "for the toy trained on the run's documents shuffled within each epoch (toy_shuffled, which "
                "also gives the toy's RS without a cyclic order), and for the run's matched shuffled control "
                "(control)",
                "run_weights": of,
                "random_walk": {"run": run_null, **toy_null},
                "step_permutation": {"run": run_steps, **toy_steps},
                "toy_shuffled": toy_shuffled,
                "control": control,
            },
        }

    @staticmethod
    def _plot_loss(toys, schedule, result, out, closed):
        fig, axes = new_figure(3, width=4.8)
        x = schedule.episodes_in_epochs(np.arange(len(schedule) + 1))
        first_end = int(schedule.epoch_ends[0]) if len(schedule) else 0
        for ax, kind in zip(axes[:2], KINDS):
            loss = toys[kind].loss[:, 0]
            ax.plot(x, loss, lw=1.0, label="toy")
            ax.plot(x, closed[kind][:, 0], "--", lw=1.0, label="closed form: linear regression, w frozen")
            _clip_first_epoch(ax, np.maximum(loss, closed[kind][:, 0]), first_end)
            ax.legend(fontsize=7, loc="upper right")
            integer_axis(ax, "epoch")
            ax.set_ylabel("loss on task 1")
            ax.set_title(f"Toy model, {TITLES[kind]}: task-1 loss (cf. Fig. 10)", fontsize=10)
        ax = axes[2]
        for kind in KINDS:
            rs = np.asarray(result[kind]["recovery_score"], dtype=float)
            line = ax.plot(np.arange(1, len(rs) + 1), rs, "o-", ms=3, label=TITLES[kind])[0]
            rs = np.asarray(result["closed_form"]["recovery_score"][kind], dtype=float)
            label = f"{TITLES[kind]}, closed form"
            ax.plot(np.arange(1, len(rs) + 1), rs, "s--", ms=3, lw=1, color=line.get_color(), label=label)
        integer_axis(ax, "epoch n")
        ax.set_ylabel("recovery score RS(n)")
        ax.set_title("Toy model recovery score per epoch", fontsize=10)
        ax.legend(fontsize=8)
        data: dict = {"epoch": x}
        for kind in KINDS:
            data[f"{kind}: task-1 loss"] = toys[kind].loss[:, 0]
            data[f"{kind}: closed-form task-1 loss"] = closed[kind][:, 0]
        for kind in KINDS:
            data[f"{kind}: RS(n)"] = np.asarray(result[kind]["recovery_score"], dtype=float)
            data[f"{kind}: closed-form RS(n)"] = np.asarray(result["closed_form"]["recovery_score"][kind])
        save_figure(fig, out / "toy_loss.png", data=data)

    @staticmethod
    def _plot_circles(toys, ring_docs, out):
        # lazy: matplotlib takes seconds to import; only this path needs it
        from matplotlib import colormaps

        if len(ring_docs) < 3:
            return
        for kind, toy in toys.items():
            n_epochs = toy.embeddings.shape[0] - 1
            shown = sorted({0, 1, max(n_epochs // 6, 1), n_epochs // 3, 2 * n_epochs // 3, n_epochs})
            fig, axes = new_figure(len(shown), width=3.2, height=3.4)
            colors = colormaps["hsv"](np.arange(len(ring_docs)) / len(ring_docs))
            data: dict = {"task": np.asarray(ring_docs) + 1}
            for ax, e in zip(axes, shown):
                coords, _ = pca_2d(toy.embeddings[e][ring_docs])
                data[f"epoch {e}: PC1"], data[f"epoch {e}: PC2"] = coords[:, 0], coords[:, 1]
                closed = np.vstack([coords, coords[:1]])
                ax.plot(closed[:, 0], closed[:, 1], "-", color="0.75", lw=0.8)
                ax.scatter(coords[:, 0], coords[:, 1], c=colors, s=18, zorder=3)
                c = circularity(coords)
                ax.set_title(f"epoch {e}: order {c['order_agreement']:.2f}", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_aspect("equal", adjustable="datalim")
            fig.suptitle(
                f"Toy model, {TITLES[kind]}: PCA of f_i^-1(P x_i), "
                "tasks coloured in training order (cf. Fig. 11)"
            )
            save_figure(fig, out / f"toy_circle_{kind}.png", data=data)

    @staticmethod
    def _plot_side_by_side(result, out):
        fig, axes = new_figure(3, width=4.8)
        ax = axes[0]
        curves = result["curves"]
        first = next(iter(curves.values()))
        x = np.asarray(first["offset_epochs"])[1:]
        ax.plot(x, _standardise(first["run"]), lw=1.5, label="this run")
        for kind, c in curves.items():
            label = f"toy {TITLES[kind]}: r = {c['correlation']:.2f}"
            ax.plot(x, _standardise(c["toy"]), lw=1.0, label=label)
        integer_axis(ax, "epochs since just before first training")
        ax.set_ylabel("shift-averaged loss, standardised")
        ax.set_title("Shift-averaged loss: run vs toy model", fontsize=10)
        ax.legend(fontsize=8)

        ax = axes[1]
        run_rs = np.asarray(result["run_rs"], dtype=float)
        ax.plot(np.arange(1, len(run_rs) + 1), run_rs, "o-", label="this run")
        for kind, rs in result["toy_rs"].items():
            rs = np.asarray(rs, dtype=float)
            ax.plot(np.arange(1, len(rs) + 1), rs, "s--", ms=4, lw=1, label=f"toy {TITLES[kind]}")
        integer_axis(ax, "epoch n")
        ax.set_ylabel("RS(n)")
        ax.set_title("Recovery score: run vs toy model (same schedule)", fontsize=10)
        ax.legend(fontsize=8)

        ax = axes[2]
        series = {"this run": result["run_winding"]} if result["run_winding"] else {}
        series.update({f"toy {TITLES[k]}": w for k, w in result["toy_winding"].items()})
        width = 0.8 / max(len(series), 1)
        for i, (label, w) in enumerate(series.items()):
            keep = np.asarray(w["complete"], dtype=bool)
            epochs = np.asarray(w["epoch"])[keep]
            ax.bar(
                epochs + (i - (len(series) - 1) / 2) * width,
                np.asarray(w["revolutions"])[keep],
                width,
                label=label,
            )
        ax.axhline(0, color="0.6", lw=0.8)
        integer_axis(ax, "epoch (complete in the detrending window)")
        ax.set_ylabel("winding (revolutions; sign is arbitrary)")
        ax.set_title("PCA winding per epoch: run weights vs toy w", fontsize=10)
        ax.legend(fontsize=8)
        bars_from_zero(ax)
        data = {"offset_epochs": x, "run: standardised loss": _standardise(first["run"])}
        for kind, c in curves.items():
            data[f"toy {kind}: standardised loss"] = _standardise(c["toy"])
        data["run: RS(n)"] = run_rs
        for kind, rs in result["toy_rs"].items():
            data[f"toy {kind}: RS(n)"] = np.asarray(rs, dtype=float)
        for label, w in series.items():
            keep = np.asarray(w["complete"], dtype=bool)
            data[f"{label}: epoch"] = np.asarray(w["epoch"])[keep]
            data[f"{label}: revolutions"] = np.asarray(w["revolutions"])[keep]
        save_figure(fig, out / "toy_vs_run.png", data=data)


def _helix_words(who: str, value: float, nulls: tuple[dict, ...], control: float | None) -> str:
    """One phrase, e.g. 'run 0.93 (helix-like: random walks ≤ 0.06 at 97.5%)': the bound is the highest
    97.5th percentile of ``nulls`` (as in pca_weights' verdict); the control's value when given."""
    if not np.isfinite(value):
        return f"{who} undefined (shorter than two cycles)"
    bound = max(null["q975"] for null in nulls)
    like = value > bound
    text = f"{who} {value:.2f} ({'helix-like' if like else 'not distinguishable from a random walk'}"
    text += f": random walks ≤ {bound:.2f} at 97.5%"
    if control is not None:
        text += f", shuffled control {control:.2f}"
    return text + ")"


def _standardise(curve) -> np.ndarray:
    """A shift-averaged curve after the first training (offset ≥ 1), as z-scores: run and toy losses
    have different scales, and the correlation reported beside them ignores scale."""
    y = np.asarray(curve, dtype=float)[1:]
    return (y - y.mean()) / (y.std() or 1.0)


def _clip_first_epoch(ax, loss: np.ndarray, first_epoch_end: int) -> None:
    """Linear y-axis up to the highest loss after the first epoch: the untrained start can be
    100x larger and would flatten every later cycle (a log axis instead turns the exact
    solves of Eq. 2, loss ~1e-30, into spikes)."""
    later = loss[first_epoch_end + 1 :]
    if len(later) and later.max() > 0:
        top = float(later.max()) * 1.1
        ax.set_ylim(0, top)
        if loss.max() > top:
            ax.text(
                0.01, 0.98, "first epoch clipped", transform=ax.transAxes, va="top", fontsize=7, color="0.4"
            )
