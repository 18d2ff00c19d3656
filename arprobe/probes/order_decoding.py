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

Beside it, the paper's own protocol (the ``heldout_*`` keys): at ONE model (the last recorded, or
``episode``) the documents are cut into S training stages by the order of their last training, and a
logistic-regression probe trained on some documents' activations (W token windows each, one sample a
window) names the stage of documents it never saw, in folds stratified by stage. Reported: the S-way
accuracy against chance with a 95% Wilson interval over documents and a label-permutation null; the
binary accuracy for every pair of stages (chance 0.5; the paper's ~90% is its early-vs-late
figure); and the same numbers on the matched shuffled control when the run has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError, UserError
from arprobe.probes.base import Probe, integer_axis, mark_epochs, new_figure, pick_recording, save_figure
from arprobe.probes.nulls import control_value, versus_control
from arprobe.science.geometry import binned_means
from arprobe.science.order_decoding import (
    accuracy_by_distance,
    ages_since_training,
    decode_ages,
    default_stages,
    heldout_verdict,
    last_trained_hit,
    mean_off_diagonal,
    mean_pool,
    pairwise_order_accuracy,
    pairwise_stage_accuracy,
    permutation_null,
    spearman,
    stage_accuracy,
    stages_by_last_training,
    stratified_folds,
    wilson_interval,
    window_means,
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
    options = {
        "hook": "",
        "folds": 5,
        "episode": -1,
        "stages": 0,
        "windows": 4,
        "permutations": 200,
        "inverse_l2": 1.0,
        "seed": 0,
    }
    option_help = {
        "hook": "recorded activation hook (TransformerLens name); empty: the first recorded",
        "folds": "cross-validation folds, split by document (at most one per document; the held-out "
        "stage probe also at most the documents of its smallest stage)",
        "episode": "held-out stage probe: the model read (1-based episode with recorded activations; "
        "-1 = the last recorded)",
        "stages": "held-out stage probe: training stages S, consecutive groups of documents by their last "
        "training (0 = min(5, T // 2); every stage needs at least 2 documents)",
        "windows": "held-out stage probe: samples per document, consecutive token windows of its real "
        "tokens, each a mean (split by document, never across the probe's train and test sets)",
        "permutations": "held-out stage probe: label permutations for the null (0 = none)",
        "inverse_l2": "held-out stage probe: scikit-learn's C of the logistic regression (inverse L2 "
        "strength, on standardised activations)",
        "seed": "held-out stage probe: seed of the folds and the permutations",
    }
    headline_keys = [
        "rank_correlation",
        "pairwise_accuracy",
        "last_trained_accuracy",
        "last_trained_chance",
        "pairwise_accuracy_per_epoch",
        "last_trained_accuracy_per_epoch",
        "heldout_stage_accuracy",
        "heldout_stage_chance",
        "heldout_stage_interval",
        "heldout_stage_null_q975",
        "heldout_pairwise_accuracy",
        "heldout_first_last_accuracy",
        "control_heldout_stage_accuracy",
        "heldout_verdict",
    ]

    def run(
        self,
        store,
        out: Path,
        hook: str = "",
        folds: int = 5,
        episode: int = -1,
        stages: int = 0,
        windows: int = 4,
        permutations: int = 200,
        inverse_l2: float = 1.0,
        seed: int = 0,
    ) -> dict:
        check_options(folds, stages, windows, permutations, inverse_l2)
        require_sklearn()
        hook = pick_recording(store, "activations", hook)
        episodes, docs, values = activations_of_every_document(store, hook, "decoding the training order")
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
        heldout = self.heldout_with_control(
            store,
            hook,
            (episodes, docs, values),
            episode,
            stages,
            windows,
            folds,
            permutations,
            inverse_l2,
            seed,
        )
        result.update(heldout)
        if heldout["heldout_stage_accuracy"] is not None:
            self._plot_heldout(heldout, out)
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

    def heldout_with_control(
        self, store, hook, recorded, episode, stages, windows, folds, permutations, inverse_l2, seed
    ) -> dict:
        """The held-out stage probe's keys on this run (``recorded``: its activations of ``hook``, as
        ``activations_of_every_document`` read them) and, at the same episode and stages, its matched
        shuffled control's. With the defaults, a run it cannot read (fewer than 4 documents, a
        document not yet trained at the last recorded model) gets a note instead of an error."""
        try:
            r = heldout_stage_decoding(
                store, recorded, episode, stages, windows, folds, permutations, inverse_l2, seed
            )
        except MissingDataError as missing:
            if episode != -1 or stages != 0:
                raise
            return {key: None for key in HELDOUT_KEYS} | {"heldout_note": str(missing)}
        control = control_value(
            store,
            lambda c: heldout_stage_decoding(
                c,
                activations_of_every_document(c, hook, "the held-out stage probe"),
                r["heldout_episode"],
                r["heldout_stages"],
                windows,
                folds,
                0,
                inverse_l2,
                seed,
            ),
        )
        for key in ("heldout_stage_accuracy", "heldout_pairwise_accuracy", "heldout_first_last_accuracy"):
            r[f"control_{key}"] = None if control is None else control[key]
        r["heldout_control_verdict"] = versus_control(
            "held-out stage accuracy", r["heldout_stage_accuracy"], r["control_heldout_stage_accuracy"]
        )
        return r

    @staticmethod
    def _plot_heldout(r, out):
        fig, (ax1, ax2) = new_figure(2, width=5.2)
        pairs = np.asarray(r["heldout_pairwise_matrix"], dtype=np.float64)
        n_stages = len(pairs)
        image = ax1.imshow(pairs, vmin=0, vmax=1, cmap="viridis")
        for a in range(n_stages):
            for b in range(n_stages):
                if a != b:
                    ax1.text(b, a, f"{pairs[a, b]:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax1.set_xticks(range(n_stages))
        ax1.set_yticks(range(n_stages))
        ax1.set_xlabel("stage (0: trained longest ago)")
        ax1.set_ylabel("stage")
        ax1.set_title(
            f"Pairs of stages, held-out documents: {r['heldout_pairwise_accuracy']:.2f} (chance 0.5)",
            fontsize=9,
        )
        fig.colorbar(image, ax=ax1, shrink=0.8, label="binary probe accuracy")
        null = np.asarray(r["heldout_stage_null"], dtype=np.float64)
        if len(null):
            ax2.hist(null, bins=20, color="0.75", label=f"permuted stages ({len(null)})")
        low, high = r["heldout_stage_interval"]
        ax2.axvspan(low, high, color="tab:blue", alpha=0.15, label="95% interval (documents)")
        ax2.axvline(r["heldout_stage_accuracy"], color="tab:blue", lw=2, label="this run")
        ax2.axvline(r["heldout_stage_chance"], color="k", lw=0.8, ls=":", label="chance")
        if r.get("control_heldout_stage_accuracy") is not None:
            ax2.axvline(
                r["control_heldout_stage_accuracy"], color="tab:gray", lw=1.5, ls="--", label="control"
            )
        ax2.set_xlim(0, 1)
        ax2.set_xlabel(f"{n_stages}-way stage accuracy on held-out documents")
        ax2.set_ylabel("permutations")
        ax2.set_title(
            f"Stage of unseen documents at the model after episode {r['heldout_episode']}", fontsize=9
        )
        ax2.legend(fontsize=7)
        data = {
            "stage_pair_accuracy": pairs,
            "stage_null_accuracy": null,
            "stage_accuracy": [r["heldout_stage_accuracy"]],
        }
        save_figure(fig, out / "order_decoding_heldout.png", data=data)


HELDOUT_KEYS = (
    "heldout_episode",
    "heldout_stages",
    "heldout_windows",
    "heldout_folds",
    "heldout_stage_of_doc",
    "heldout_stage_accuracy",
    "heldout_stage_chance",
    "heldout_stage_interval",
    "heldout_stage_null",
    "heldout_stage_null_q975",
    "heldout_stage_p_value",
    "heldout_stage_accuracy_per_doc",
    "heldout_confusion",
    "heldout_pairwise_accuracy",
    "heldout_pairwise_null_q975",
    "heldout_pairwise_matrix",
    "heldout_pairwise_by_distance",
    "heldout_first_last_accuracy",
    "heldout_first_last_interval",
    "heldout_verdict",
    "control_heldout_stage_accuracy",
    "control_heldout_pairwise_accuracy",
    "control_heldout_first_last_accuracy",
    "heldout_control_verdict",
    "heldout_note",
)


def check_options(folds: int, stages: int, windows: int, permutations: int, inverse_l2: float) -> None:
    """One sentence for each option out of range."""
    if folds < 2:
        raise UserError(f"Option order_decoding.folds must be at least 2, got {folds}.")
    if stages == 1 or stages < 0:
        raise UserError(f"Option order_decoding.stages must be at least 2 (0: automatic), got {stages}.")
    if windows < 1 or permutations < 0 or inverse_l2 <= 0:
        raise UserError(
            "Options order_decoding.windows must be at least 1, permutations at least 0 and inverse_l2 "
            f"above 0; got {windows}, {permutations} and {inverse_l2}."
        )


def activations_of_every_document(store, hook: str, purpose: str):
    """(episodes [A], docs [T], values [A, T, C, d]) of ``hook``; MissingDataError unless all T documents
    were recorded (``purpose`` names what needs them)."""
    episodes, docs, values = store.activations(hook)
    n_docs = store.n_docs
    if sorted(docs) != list(range(n_docs)):
        raise MissingDataError(
            f"Run '{store.path.parent.name}' recorded activations of documents {docs} only, and {purpose} "
            f"needs all {n_docs}; record them with record.activation_docs "
            f"(e.g. --activation_docs {','.join(map(str, range(n_docs)))})."
        )
    return episodes, docs, values


def heldout_stage_decoding(
    store, recorded, episode: int, stages: int, windows: int, folds: int, permutations: int, inverse_l2, seed
) -> dict:
    """The paper's protocol on one run store: the ``heldout_*`` keys (see the module docstring).
    ``recorded``: (episodes, docs, values) of every document (``activations_of_every_document``)."""
    read, n_stages, stage_of, features = heldout_features(store, recorded, episode, stages, windows)
    n_docs, n_windows = features.shape[:2]
    n_folds = int(min(folds, np.bincount(stage_of).min()))
    fold_of = stratified_folds(stage_of, n_folds, seed)
    accuracy, per_doc, predicted = stage_accuracy(features, stage_of, fold_of, inverse_l2)
    pairs = pairwise_stage_accuracy(features, stage_of, fold_of, inverse_l2)
    stage_null, pair_null = permutation_null(features, stage_of, n_folds, permutations, seed + 1, inverse_l2)
    # 1/S when the stages are equal in size; else what always guessing the largest stage scores
    chance = float(np.bincount(stage_of).max() / n_docs)
    interval = wilson_interval(accuracy, n_docs)
    ends = (stage_of == 0) | (stage_of == n_stages - 1)
    first_last = float(pairs[0, -1])
    q975 = float(np.quantile(stage_null, 0.975)) if permutations else None
    confusion = np.zeros((n_stages, n_stages), dtype=int)  # [true stage, predicted stage], samples
    np.add.at(confusion, (np.repeat(stage_of, n_windows), predicted.reshape(-1)), 1)
    return {
        "heldout_episode": read,
        "heldout_stages": n_stages,
        "heldout_windows": n_windows,
        "heldout_folds": n_folds,
        "heldout_stage_of_doc": stage_of,
        "heldout_stage_accuracy": accuracy,
        "heldout_stage_chance": chance,
        "heldout_stage_interval": list(interval),
        "heldout_stage_null": stage_null,
        "heldout_stage_null_q975": q975,
        "heldout_stage_p_value": float((1 + np.sum(stage_null >= accuracy)) / (1 + permutations))
        if permutations
        else None,
        "heldout_stage_accuracy_per_doc": per_doc,
        "heldout_confusion": confusion,
        "heldout_pairwise_accuracy": mean_off_diagonal(pairs),
        "heldout_pairwise_null_q975": float(np.quantile(pair_null, 0.975)) if permutations else None,
        "heldout_pairwise_matrix": pairs,
        "heldout_pairwise_by_distance": accuracy_by_distance(pairs),
        "heldout_first_last_accuracy": first_last,
        "heldout_first_last_interval": list(wilson_interval(first_last, int(ends.sum()))),
        "heldout_verdict": heldout_verdict_text(
            n_stages, accuracy, interval, n_docs, chance, q975, permutations, pairs
        ),
        "heldout_note": (
            "Krasheninnikov et al. report ~90% for early vs late stages of six at ~thousands of held-out "
            "entities; compare heldout_first_last_accuracy and heldout_pairwise_by_distance, not the S-way "
            "accuracy. Intervals count documents, not windows (windows of one document are not independent)."
        ),
    }


def heldout_verdict_text(n_stages, accuracy, interval, n_docs, chance, q975, permutations, pairs) -> str:
    """The held-out protocol's verdict in one sentence, with its numbers."""
    word = heldout_verdict(accuracy, interval, chance, q975)
    null_words = (
        f"; the permuted stages reach {q975:.2f} (97.5% quantile of {permutations})"
        if q975 is not None
        else ""
    )
    return (
        f"{word}: {n_stages}-way stage accuracy {accuracy:.2f} on held-out documents (95% interval "
        f"{interval[0]:.2f}-{interval[1]:.2f} over {n_docs} documents) vs chance {chance:.2f}{null_words}; "
        f"pairs of stages {mean_off_diagonal(pairs):.2f}, first vs last stage {float(pairs[0, -1]):.2f} "
        "(chance 0.5)."
    )


def heldout_features(store, recorded, episode: int, stages: int, windows: int):
    """(episode read, S, stage of each document [T], window-mean features [T, W, d]) for the held-out
    protocol, with one sentence for each way the run cannot support it."""
    run = store.path.parent.name
    episodes, docs, values = recorded
    n_docs = store.n_docs
    read = int(episodes[-1]) if episode == -1 else episode
    rows = np.flatnonzero(np.asarray(episodes) == read)
    if not len(rows):
        raise MissingDataError(
            f"Run '{run}' has no activations recorded after episode {read} (recorded: "
            f"{', '.join(map(str, episodes))}); pick one with order_decoding.episode or record more with "
            "record.activations_every."
        )
    schedule = store.schedule()
    trained = set(schedule.doc[:read].tolist())
    untrained = [d for d in range(n_docs) if d not in trained]
    if untrained:
        raise MissingDataError(
            f"Run '{run}' had not trained documents {untrained} by episode {read}, so they have no training "
            "stage; read a later model with order_decoding.episode."
        )
    n_stages = default_stages(n_docs) if stages == 0 else stages
    if n_stages < 2 or n_docs // n_stages < 2:
        most = n_docs // 2
        fix = f"use at most {most} stages" if most >= 2 else "train at least 4 documents"
        raise (MissingDataError if stages == 0 else UserError)(
            f"The held-out stage probe needs at least 2 documents in each of at least 2 stages, and "
            f"{n_stages} stages of run '{run}'s {n_docs} documents leave fewer; {fix}."
        )
    stage_of = stages_by_last_training(schedule.doc, read, n_docs, n_stages)  # [T]
    order = np.argsort(docs)
    activations = values[rows[-1]][order]  # [T, C, d], document j in row j
    lengths = document_masks(store, activations.shape[1]).sum(1)  # [T] real positions (a prefix)
    n_windows = int(min(windows, max(1, lengths.min())))
    features = window_means(activations, lengths, n_windows)  # [T, W, d]
    return read, n_stages, stage_of, features
