"""gradient_similarity: are the gradients of nearby documents more alike? (paper Sec. 4.1, Fig. 8a)

Fig. 8a's finding is positional: the similarity is "highest near the center of the heat map rather
than peaking along the diagonal". A mean by cyclic distance mixes that with a distance pattern
(central pairs are also near pairs), so the matrix, with documents in the order of their last
training before the episode (the cycle order at the end of a cyclic epoch), is split into
μ + a_i + a_j and a residual: ``positional_effect`` (middle third against the outer thirds, from a)
and ``neighbour_effect`` (residual at cyclic distance 1 against further apart), each beside its null
(the same effect with the documents' places drawn at random) and the matched shuffled control's
value when the run has one.

The episode read by default is the checkpoint ``pairwise_recovery`` reads (the latest recorded
before the last episode: the end of the next-to-last epoch), so Fig. 8a and 8b are read at the same
point of training, as the paper does ("after 4 epochs" of its 5-epoch default).

"Nearby" is distance in the cycle, which exists only when every epoch trains the documents in
the same order (cyclic). For other orders (shuffle, partial-shuffle, insert) the probe gives
the T×T matrix and each document's mean similarity, and says in ``by_distance_note`` why
there are no distance summaries, rather than binning by document index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError
from arprobe.probes.base import Probe, control_store, new_figure, pick_recording, save_figure
from arprobe.probes.pairwise_recovery import default_checkpoint
from arprobe.science.geometry import (
    cosine_matrix,
    label_permutation_null,
    mean_by_cyclic_distance,
    mean_by_offset,
    position_and_distance_effects,
)


class GradientSimilarity(Probe):
    name = "gradient_similarity"
    description = (
        "Cosine similarity of the per-document gradients of one layer (T×T heat map, Fig. 8a) "
        "and its mean by distance in the cycle."
    )
    requires = ["grads:{layer}"]
    options = {"layer": "", "episode": -1}
    option_help = {
        "layer": "recorded layer (TransformerLens name, e.g. blocks.2.attn); empty: the first recorded",
        "episode": "recorded episode to show; -1: the latest before the last episode (the end of the "
        "next-to-last epoch, the checkpoint pairwise_recovery reads), else the last recorded",
    }
    headline_keys = [
        "layer",
        "episode",
        "mean_offdiagonal",
        "positional_effect",
        "neighbour_effect",
        "verdict",
        "by_distance",
        "last_trained_doc_mean",
    ]

    def run(self, store, out: Path, layer: str = "", episode: int = -1) -> dict:
        layer = pick_recording(store, "grads", layer)
        episodes, grads = store.grads(layer)  # [G], [G, T, D]
        g = recorded_row(store, layer, episodes, episode)
        T = grads.shape[1]
        schedule = store.schedule()
        schedule_doc, schedule_epoch = schedule.doc, schedule.epoch
        ep = int(episodes[g])
        cos = cosine_matrix(grads[g])  # [T, T]
        offdiag = cos[~np.eye(T, dtype=bool)]
        last_doc = int(schedule_doc[ep - 1]) if ep >= 1 else None
        row_mean = np.array([np.nanmean(np.delete(cos[i], i)) for i in range(T)])  # each doc vs all others
        cycle = cycle_order(schedule, T)  # documents in cycle order, or None

        by_distance, by_offset, over_time, note = distance_profiles(store, cos, grads, cycle)

        positions = recency_order(schedule_doc, ep, T)
        effects = position_and_distance_effects(cos[np.ix_(positions, positions)]) if T >= 3 else None
        null = self._null(store, layer, ep, cos, positions, effects)

        self._plot(cos, over_time, episodes, g, layer, T, schedule_epoch, out)
        sketch = store.sketch_info("grads", layer)
        return {
            "layer": layer,
            "episode": ep,
            "epoch": int(schedule_epoch[ep - 1]) if ep >= 1 else 0,
            "last_trained_doc": last_doc,
            "similarity": cos,
            "mean_offdiagonal": float(np.nanmean(offdiag)),
            "fraction_positive": float(np.mean(offdiag > 0)),
            # distance d = 1..T//2 in the cycle (min of forward and backward), index 0 is d = 1
            "by_distance": by_distance[1:] if cycle is not None else None,
            "most_similar_distance": int(np.nanargmax(by_distance[1:]) + 1)
            if cycle is not None and T > 2
            else None,
            # offset o = 1..T-1: the document at position p vs the one at p + o in the cycle
            "by_forward_offset": by_offset,
            "by_distance_note": note,
            "cycle_order": cycle,
            "doc_mean_similarity": row_mean,
            "last_trained_doc_mean": float(row_mean[last_doc]) if last_doc is not None else None,
            # documents by the order of their last training before the episode (oldest first)
            "position_order": positions,
            "positional_effect": effects["positional_effect"] if effects else None,
            "neighbour_effect": effects["neighbour_effect"] if effects else None,
            "position_profile": effects["position_profile"] if effects else None,
            "distance_profile": effects["distance_profile"] if effects else None,
            "centre_pairs_mean": effects["centre_pairs_mean"] if effects else None,
            "edge_pairs_mean": effects["edge_pairs_mean"] if effects else None,
            "verdict": null["verdict"],
            "null": null,
            "recorded_episodes": episodes,
            "by_distance_over_episodes": over_time[:, 1:] if over_time is not None else None,
            "dim": int(grads.shape[2]),
            "sketch": sketch,  # cosines of a sketch approximate those of the full gradients
        }

    @staticmethod
    def _null(store, layer: str, episode: int, cos, positions, effects) -> dict:
        """Each effect beside what it reads with the documents' places drawn at random, and the
        matched shuffled control's effects at the same episode when the run has a control."""
        if effects is None:
            return {"reads": "", "verdict": "undefined: the effects need 3 documents"}
        perm = label_permutation_null(cos[np.ix_(positions, positions)])
        control = _control_effects(store, layer, episode)
        words = {"positional_effect": "centre above edge", "neighbour_effect": "neighbours above the rest"}
        parts = []
        for key, claim in words.items():
            value, q = effects[key], perm[key]
            # Cosines of float32 gradients keep ~1e-7; a margin of 1e-6 keeps rounding from deciding a tie.
            seen = value > q["q975"] + 1e-6
            part = f"{key} {value:+.3f} ({claim}: {'above' if seen else 'not distinguishable from'} "
            part += f"random places, 97.5th percentile {q['q975']:+.3f}"
            if control is not None:
                part += f"; shuffled control {control[key]:+.3f}"
            parts.append(part + ")")
        return {
            "reads": "with no link between a document's place in the sequence and its gradient, both effects "
            "read about 0: label_permutation gives their mean and 2.5th/97.5th percentiles with the "
            "documents' places drawn at random (500 draws, seed 0)",
            "label_permutation": perm,
            "control": control,
            "verdict": "; ".join(parts),
        }

    @staticmethod
    def _plot(cos, over_time, episodes, g, layer, T, schedule_epoch, out):
        fig, axes = new_figure(2 if over_time is not None else 1, width=5.6)
        ax = axes[0]
        off = cos[~np.eye(T, dtype=bool)]
        # The diagonal is 1 by definition; scale colours by the off-diagonal entries to show structure.
        lim = float(np.nanmax(np.abs(off))) if np.isfinite(off).any() else 1.0
        im = ax.imshow(cos, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=(0.5, T + 0.5, T + 0.5, 0.5))
        fig.colorbar(im, ax=ax, label="cosine similarity (diagonal = 1, off the scale)")
        ax.set_xlabel("document j")
        ax.set_ylabel("document i")
        ep = int(episodes[g])
        ax.set_title(f"Gradient cosine, {layer}, after episode {ep}\n(cf. paper Fig. 8a)")
        data = {"document_i": np.arange(1, T + 1), "cosine_with_document_j": cos}
        if over_time is None:  # no cycle, so no distances to bin by
            save_figure(fig, out / "gradient_similarity.png", data=data)
            return
        ax2 = axes[1]
        d = np.arange(1, over_time.shape[1])
        for i, e in enumerate(episodes):
            epoch = int(schedule_epoch[e - 1]) if e >= 1 else 0
            ax2.plot(
                d,
                over_time[i, 1:],
                "o-",
                color=_shade(i, len(episodes)),
                ms=4,
                label=f"episode {int(e)} (end of epoch {epoch})" if e >= 1 else "before training",
            )
        ax2.axhline(0, color="0.6", lw=0.8)
        ax2.set_xticks(d)
        ax2.set_xlabel("distance in the cycle |i − j| (cyclic)")
        ax2.set_ylabel("mean cosine similarity")
        ax2.set_title("Gradient similarity by distance")
        ax2.legend(fontsize=7)
        data["distance"] = d
        for i, e in enumerate(episodes):
            data[f"mean_cosine_by_distance_episode_{int(e)}"] = over_time[i, 1:]
        save_figure(fig, out / "gradient_similarity.png", data=data)


def cycle_order(schedule, n_docs: int) -> np.ndarray | None:
    """The documents in the order every epoch trains them, if it is the same order each epoch and
    covers all ``n_docs`` documents; None otherwise (shuffled orders, insert)."""
    if not schedule.is_cyclic:
        return None
    first = schedule.doc[schedule.epoch == 1]
    if len(first) != n_docs or len(set(first.tolist())) != n_docs:
        return None
    return first.astype(int)


def recency_order(schedule_doc: np.ndarray, episode: int, n_docs: int) -> np.ndarray:
    """Documents [T] ordered by their last training at or before ``episode`` (oldest first, never
    trained ones before all others): the cycle order at the end of a cyclic epoch, the last epoch's
    order in a shuffled run."""
    last = np.full(n_docs, -1)
    for k, doc in enumerate(np.asarray(schedule_doc[:episode], dtype=int)):
        last[doc] = k
    return np.argsort(last, kind="stable")


def _control_effects(store, layer: str, episode: int) -> dict | None:
    """The two effects in the matched shuffled control's gradients at the same episode (None without
    a control or without those gradients)."""
    control = control_store(store)
    if control is None:
        return None
    with control:
        if layer not in control.recorded("grads"):
            return None
        episodes, grads = control.grads(layer)
        hits = np.flatnonzero(np.asarray(episodes) == episode)
        if not len(hits) or grads.shape[1] < 3:
            return None
        cos = cosine_matrix(grads[int(hits[-1])])
        positions = recency_order(control.schedule().doc, episode, cos.shape[0])
        effects = position_and_distance_effects(cos[np.ix_(positions, positions)])
    return {k: effects[k] for k in ("positional_effect", "neighbour_effect")}


def _shade(i: int, n: int):
    """Colour of the i-th of n ordered curves: light (early) to dark (late)."""
    # lazy: matplotlib takes seconds to import; only this path needs it
    from matplotlib import colormaps

    return colormaps["viridis"](0.15 + 0.75 * (i / max(n - 1, 1)))


def recorded_row(store, layer: str, episodes: np.ndarray, episode: int) -> int:
    """Index into the recorded gradients of ``layer``: ``episode``'s, or by default the same point of
    training as pairwise_recovery's checkpoint (Fig. 8a and 8b together)."""
    if episode < 0:
        chosen = default_checkpoint(np.asarray(episodes), store.completed_episodes)
        return int(np.flatnonzero(episodes == chosen)[-1])
    hits = np.flatnonzero(episodes == episode)
    if not len(hits):
        raise MissingDataError(
            f"Run '{store.path.parent.name}' has no gradients of '{layer}' at episode {episode} "
            f"(recorded at: {', '.join(map(str, episodes))}); pick one of those or set record.grads_at."
        )
    return int(hits[-1])


def distance_profiles(store, cos: np.ndarray, grads: np.ndarray, cycle):
    """(mean cosine by cyclic distance [T//2 + 1], by forward offset, the distance profile at every
    recorded episode [G, T//2 + 1], note): all None, and a note saying why, without a cycle."""
    if cycle is None:
        order = store.config.get("schedule", {}).get("order", "this")
        return (
            None,
            None,
            None,
            f"No distance summaries: in the {order} order the epochs do not all train the same documents "
            "in the same order, so two documents have no fixed distance in a cycle.",
        )
    # rows and columns in cycle order, so index distance is distance in the cycle
    in_cycle = np.ix_(cycle, cycle)
    by_distance = mean_by_cyclic_distance(cos[in_cycle])  # [T//2 + 1], index = distance
    by_offset = mean_by_offset(cos[in_cycle])[1:]
    # the same profile at every recorded episode: does the structure build up over epochs?
    over_time = np.stack([mean_by_cyclic_distance(cosine_matrix(g)[in_cycle]) for g in grads])
    return by_distance, by_offset, over_time, ""
