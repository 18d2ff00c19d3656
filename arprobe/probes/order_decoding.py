"""order_decoding: is the training order linearly decodable from the model? (Krasheninnikov et al.
2025, arXiv 2509.14223: ~90% accuracy for when a document was last trained.)

At every recorded episode, each document's activations (mean over its real tokens) are a sample
whose target is its age: episodes since it was last trained (0: trained in that episode). A ridge
regression predicts the age, cross-validated by document (every prediction is for a document the
probe was not fitted on, so it cannot recognise the document and recall its slot). Reported
against chance: the rank correlation of predicted and true ages (chance 0), the fraction of
document pairs at one episode put in the right order (chance 0.5), and how often the document
predicted youngest is the one trained last (chance 1 / documents with an age), overall and per
epoch. Needs scikit-learn (``pip install 'arprobe[probes]'``) and activations of all T documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, integer_axis, mark_epochs, new_figure, pick_recording, save_figure
from arprobe.science.geometry import binned_means
from arprobe.science.order_decoding import (
    ages_since_training,
    decode_ages,
    last_trained_hit,
    mean_pool,
    pairwise_order_accuracy,
    spearman,
)
from arprobe.tasks.registry import document_masks


def require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise MissingDataError(
            "order_decoding needs scikit-learn; install it with: pip install 'arprobe[probes]'."
        ) from None


class OrderDecoding(Probe):
    name = "order_decoding"
    description = (
        "Is the training order linearly decodable? A cross-validated linear probe predicts from each "
        "document's activations how many episodes ago it was trained (arXiv 2509.14223)."
    )
    requires = ["activations:{hook}"]
    options = {"hook": "", "folds": 5}
    option_help = {
        "hook": "recorded activation hook (TransformerLens name); empty: the first recorded",
        "folds": "cross-validation folds, split by document (at most one per document)",
    }
    headline_keys = [
        "rank_correlation",
        "pairwise_accuracy",
        "last_trained_accuracy",
        "last_trained_chance",
        "pairwise_accuracy_per_epoch",
        "last_trained_accuracy_per_epoch",
    ]

    def run(self, store, out: Path, hook: str = "", folds: int = 5) -> dict:
        if folds < 2:
            raise UserError(f"Option order_decoding.folds must be at least 2, got {folds}.")
        require_sklearn()
        hook = pick_recording(store, "activations", hook)
        episodes, docs, values = store.activations(hook)  # [A], [n], [A, n, C, d]
        n_docs = store.n_docs
        if sorted(docs) != list(range(n_docs)):
            raise MissingDataError(
                f"Run '{store.path.parent.name}' recorded activations of documents {docs} only, and "
                f"decoding the training order needs all {n_docs}; record them with record.activation_docs "
                f"(e.g. --activation_docs {','.join(map(str, range(n_docs)))})."
            )
        schedule = store.schedule()
        # Real positions as the run's task defines them (a prefix: text is right-padded, images are whole).
        real = document_masks(store, values.shape[2])  # [T, C]
        features = mean_pool(values, real[docs].sum(1))  # [A, n, d]
        ages = ages_since_training(schedule.doc, episodes, docs)  # [A, n], NaN before a first training
        have = np.isfinite(ages)
        groups = np.broadcast_to(np.asarray(docs), ages.shape)
        if len(np.unique(groups[have])) < 2:
            raise MissingDataError(
                f"Run '{store.path.parent.name}' has activations of fewer than two trained documents at its "
                "recorded episodes; record them after more episodes with record.activations_every."
            )
        predicted = np.full(ages.shape, np.nan)
        predicted[have] = decode_ages(features[have], ages[have], groups[have], n_splits=folds)
        per_row = {
            "pairwise": np.array([pairwise_order_accuracy(p, t) for p, t in zip(predicted, ages)]),
            "last": np.array([last_trained_hit(p, t) for p, t in zip(predicted, ages)]),
            "rank": np.array([spearman(p, t) for p, t in zip(predicted, ages)]),
            "chance": np.array([1 / h.sum() if h.any() else np.nan for h in have]),
        }
        epoch_of = schedule.epoch_of_rows(episodes)  # 0: the model before training
        n_epochs = schedule.n_epochs

        def per_epoch(values):
            return binned_means(values, epoch_of - 1, n_epochs)

        result = {
            "hook": hook,
            "episodes": episodes,
            "samples": int(have.sum()),
            "ages": ages,
            "predicted_ages": predicted,
            "rank_correlation": spearman(predicted[have], ages[have]),
            "pairwise_accuracy": float(np.nanmean(per_row["pairwise"])),
            "last_trained_accuracy": float(np.nanmean(per_row["last"])),
            "last_trained_chance": float(np.nanmean(per_row["chance"])),
            "pairwise_accuracy_chance": 0.5,
            "rank_correlation_chance": 0.0,
            "pairwise_accuracy_per_episode": per_row["pairwise"],
            "last_trained_per_episode": per_row["last"],
            "rank_correlation_per_episode": per_row["rank"],
            "pairwise_accuracy_per_epoch": per_epoch(per_row["pairwise"]),
            "last_trained_accuracy_per_epoch": per_epoch(per_row["last"]),
            "folds": min(folds, len(np.unique(groups[have]))),
            "null": {
                "reads": "chance: rank correlation 0, pairs in the right order 0.5, last-trained document "
                "found 1 / documents with an age (last_trained_chance); held-out folds on noise can land a "
                "little below chance. Recency is decodable in any order (the default run's shuffled control "
                "decodes it at least as well), so it is no evidence of anticipation by itself",
                "verdict": f"pairs in the right order {np.nanmean(per_row['pairwise']):.2f} vs chance 0.5",
            },
        }
        self._plot(result, ages[have], predicted[have], schedule, out)
        return result

    @staticmethod
    def _plot(r, ages, predicted, schedule, out):
        fig, (ax1, ax2) = new_figure(2, width=5.2)
        rng = np.random.default_rng(0)
        ax1.plot(ages + rng.uniform(-0.2, 0.2, len(ages)), predicted, ".", ms=3, alpha=0.5)
        top = float(np.nanmax(ages)) if len(ages) else 1.0
        ax1.plot([0, top], [0, top], "-", color="0.6", lw=0.8, label="perfect")
        integer_axis(ax1, "episodes since the document was last trained")
        ax1.set_ylabel("predicted (held-out documents)")
        ax1.set_title(f"Decoded age, rank correlation {r['rank_correlation']:.2f}")
        ax1.legend(fontsize=7)
        episodes = np.asarray(r["episodes"])
        ax2.plot(episodes, r["pairwise_accuracy_per_episode"], "o-", ms=3, label="pairs in the right order")
        ax2.plot(episodes, r["last_trained_per_episode"], ".", ms=4, label="last-trained document found")
        ax2.axhline(0.5, color="tab:blue", lw=0.8, ls=":", label="chance (pairs)")
        ax2.axhline(
            r["last_trained_chance"], color="tab:orange", lw=0.8, ls=":", label="chance (last trained)"
        )
        mark_epochs(ax2, schedule, 0, float(episodes.max()) if len(episodes) else 1.0)
        ax2.set_ylabel("accuracy at the model after the episode")
        ax2.set_title("Order decoding per recorded episode")
        ax2.legend(fontsize=7)
        save_figure(fig, out / "order_decoding.png")
