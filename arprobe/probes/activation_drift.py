"""activation_drift: how does one document's representation move through training? (paper Sec. 4.3,
Fig. 8d; App. C.1, Fig. 22)

Cosine similarity between the final-layer activations of one document at every recorded
episode (the blocked pattern of Fig. 8d: similarity within an epoch rises epoch after
epoch), the size of the activation change between consecutive recordings (stepwise,
Fig. 22a), and the size of the weight change between consecutive snapshots (Fig. 22b). The
paper's weight change is over all weights: by default the probe reads ``weights/all`` (a
count-sketch of every parameter; the norm of a sketched difference estimates the full one) and
says which weights it used in ``weights_are``. Epochs are the run's stored epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError
from arprobe.probes.base import (
    Probe,
    describe_weights,
    episode_extent,
    integer_axis,
    mark_epochs,
    new_figure,
    pick_recording,
    save_figure,
)
from arprobe.science.geometry import binned_means, cosine_matrix, snapshot_epochs, step_norms, trend
from arprobe.tasks.registry import document_masks


def within_epoch_means(similarity: np.ndarray, epoch_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(epochs [E], mean off-diagonal similarity among the snapshots of each epoch [E])."""
    epochs = np.array(sorted(set(int(e) for e in epoch_of if e > 0)), dtype=int)
    means = []
    for e in epochs:
        idx = np.flatnonzero(epoch_of == e)
        block = similarity[np.ix_(idx, idx)]
        off = block[~np.eye(len(idx), dtype=bool)]
        means.append(np.nanmean(off) if len(off) else np.nan)
    return epochs, np.array(means)


class ActivationDrift(Probe):
    name = "activation_drift"
    description = (
        "Cosine similarity of one document's final-layer activations across episodes (Fig. 8d), "
        "and the size of activation and weight changes per episode (Fig. 22)."
    )
    requires = ["activations:{hook}"]
    options = {"hook": "", "doc": -1, "weights": ""}
    option_help = {
        "hook": "recorded activation hook (TransformerLens name); empty: the first recorded "
        "(default ln_final.hook_normalized)",
        "doc": "document, 0-based, among those recorded (record.activation_docs); -1: the first recorded",
        "weights": "recorded weights whose change per episode is measured (Fig. 22b); empty: all if "
        "recorded (the paper's), else the first recorded group",
    }
    headline_keys = [
        "hook",
        "doc",
        "within_epoch_similarity",
        "activation_change_per_epoch",
        "doc_training_change_ratio",
        "weights",
        "weight_change_per_epoch",
    ]

    def run(self, store, out: Path, hook: str = "", doc: int = -1, weights: str = "") -> dict:
        hook = pick_recording(store, "activations", hook)
        episodes, docs, values = store.activations(hook)  # [A], [n], [A, n, C, d]
        doc = docs[0] if doc < 0 else doc
        if doc not in docs:
            raise MissingDataError(
                f"Run '{store.path.parent.name}' recorded activations of documents {docs}, not {doc}; "
                f"record it with record.activation_docs."
            )
        real = document_masks(store, values.shape[2])  # [T, C]: the task's real (non-pad) positions
        schedule = store.schedule()
        schedule_doc, schedule_epoch = schedule.doc, schedule.epoch
        # Pad positions carry no text, so only the document's real tokens are compared.
        n_real = int(real[doc].sum())
        acts = values[:, docs.index(doc)][:, real[doc], :].reshape(len(episodes), -1)  # [A, n_real * d]
        epoch_of = snapshot_epochs(episodes, schedule_epoch)
        cos = cosine_matrix(acts)  # [A, A]
        epochs, within = within_epoch_means(cos, epoch_of)
        change = step_norms(acts)  # [A - 1]: between recording a-1 and a
        change_episode = episodes[1:]
        change_epoch = epoch_of[1:]
        # the change from recording a−1 to a includes training on doc (episodes after a−1 up to a)
        on_doc = np.array(
            [bool((schedule_doc[a:b] == doc).any()) for a, b in zip(episodes[:-1], episodes[1:])], dtype=bool
        )
        n_epochs = int(epochs.max()) if len(epochs) else 0
        act_per_epoch = binned_means(change, change_epoch - 1, n_epochs)
        ratio = (
            float(change[on_doc].mean() / np.median(change[~on_doc]))
            if on_doc.any() and (~on_doc).any()
            else None
        )

        result = {
            "hook": hook,
            "doc": int(doc),
            "tokens_compared": n_real,
            "episodes": episodes,
            "similarity": cos,
            "within_epoch_similarity": within,  # [epoch], the blocks of Fig. 8d
            "within_epoch_similarity_trend": trend(within),
            "activation_change": change,  # ‖a_k − a_{k−1}‖
            "activation_change_episodes": change_episode,
            "activation_change_per_epoch": act_per_epoch,
            # a change that includes training on the document itself, relative to a typical one
            "doc_training_change_ratio": ratio,
            "weights": None,
            "weight_change": None,
            "weight_change_per_epoch": None,
        }
        weight_data = None
        if store.recorded("weights"):
            weights = pick_recording(store, "weights", weights, ("all",))
            weight_keys = weight_changes(store, weights, schedule_epoch, n_epochs)
            result.update(weight_keys)
            weight_data = (weight_keys["weight_change_episodes"], weight_keys["weight_change"], weights)
        else:
            result["weights_are"] = "no weights recorded (record.weights)"

        result["null"] = {
            "reads": "the blocks of Fig. 8d (similarity rising within each epoch) appear in any run that "
            "converges, cyclic or shuffled, and a document's own training moves its activations most in any "
            "order; no analytic null — compare doc_training_change_ratio and within_epoch_similarity with "
            "the matched shuffled control's report (arprobe run --control shuffle)",
        }
        self._plot_similarity(cos, episodes, schedule, hook, doc, out)
        self._plot_changes(change_episode, change, on_doc, weight_data, schedule, doc, out)
        return result

    @staticmethod
    def _plot_similarity(cos, episodes, schedule, hook, doc, out):
        fig, (ax,) = new_figure(1, width=6.2, height=5.0)
        lo, hi = episode_extent(episodes)
        im = ax.imshow(cos, cmap="viridis", extent=(lo, hi, hi, lo), interpolation="nearest")
        fig.colorbar(im, ax=ax, label="cosine similarity")
        mark_epochs(ax, schedule, lo, hi, axes="xy", lines=False)
        ax.set_title(f"Activations of document {doc + 1} at {hook}\nacross training (cf. paper Fig. 8d)")
        save_figure(
            fig,
            out / "activation_similarity.png",
            data={"episode": episodes, "cosine_with_episode_index": cos},
        )

    @staticmethod
    def _plot_changes(episodes, change, on_doc, weight_data, schedule, doc, out):
        n = 2 if weight_data else 1
        fig, axes = new_figure(n, width=5.6)
        ax = axes[0]
        x = schedule.episodes_in_epochs(episodes)  # epoch e ends at e, whatever its length
        ax.plot(x, change, "-", color="tab:blue", lw=1.2)
        ax.plot(
            x[on_doc],
            change[on_doc],
            "o",
            color="tab:red",
            ms=5,
            label=f"episodes training document {doc + 1}",
        )
        for e in range(1, schedule.n_epochs):
            ax.axvline(e, color="0.85", lw=0.8, zorder=0)
        integer_axis(ax, "epoch")
        ax.set_ylabel("‖a_k − a_(k−1)‖")
        ax.set_title(f"Activation change of document {doc + 1} per episode (cf. Fig. 22a)")
        ax.legend(fontsize=8)
        if weight_data:
            w_ep, w_change, weight_name = weight_data
            ax2 = axes[1]
            ax2.plot(schedule.episodes_in_epochs(w_ep), w_change, "-", color="tab:purple", lw=1.2)
            for e in range(1, schedule.n_epochs):
                ax2.axvline(e, color="0.85", lw=0.8, zorder=0)
            integer_axis(ax2, "epoch")
            ax2.set_ylabel("‖w_k − w_(k−1)‖")
            what = "all weights" if weight_name == "all" else weight_name
            ax2.set_title(f"Weight change of {what} per episode (cf. Fig. 22b)")
        data = {
            "episode": episodes,
            "epoch": x,
            "activation_change": change,
            "trains_document": np.isin(np.arange(len(episodes)), np.flatnonzero(on_doc)).astype(int)
            if np.asarray(on_doc).dtype != bool
            else np.asarray(on_doc).astype(int),
        }
        if weight_data:
            data.update({"weight_episode": w_ep, "weight_change": w_change})
        save_figure(fig, out / "activation_change.png", data=data)


def weight_changes(store, weights: str, schedule_epoch, n_epochs: int) -> dict:
    """‖w_k − w_{k−1}‖ between the recorded snapshots of ``weights`` (Fig. 22b), per epoch and its trend."""
    w_episodes, w_values = store.weights(weights)  # [S], [S, D]
    w_change = step_norms(w_values)  # [S-1]
    w_epoch = snapshot_epochs(w_episodes, schedule_epoch)[1:]
    return {
        "weights": weights,
        "weight_change": w_change,
        "weight_change_episodes": w_episodes[1:],
        "weight_change_per_epoch": binned_means(w_change, w_epoch - 1, n_epochs),
        "weight_change_trend": trend(w_change),
        # the paper's Fig. 22b decreases monotonically: fraction of steps that shrink
        "weight_change_fraction_decreasing": float(np.mean(np.diff(w_change) < 0))
        if len(w_change) > 1
        else None,
        "weights_sketch": store.sketch_info("weights", weights),
        "weights_are": describe_weights(store, weights),
    }
