"""pairwise_recovery: how much does training on x_i lower the loss on x_j? (paper Sec. 4.1, Fig. 8b, App. C.2)

From one checkpoint, for every document i: restore the checkpoint's weights (kept in memory,
so the store is read once), take M steps on x_i, evaluate every x_j. Recovery[i, j] is the
loss of x_j before minus after; positive means training on x_i helped x_j.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arprobe.errors import MissingDataError
from arprobe.probes.base import Probe, new_figure, save_figure
from arprobe.science.geometry import binned_means, mean_by_cyclic_distance, symmetry
from arprobe.science.retrospective import episodes_since_trained
from arprobe.trainer.memory import replays_that_fit


def replayed_rows(
    replay, before: np.ndarray, batch: int, *, progress: bool, desc: str
) -> tuple[np.ndarray, int]:
    """([T, T] recovery, replays trained at once): row i is ``before`` (every document's loss at the
    replay's checkpoint) minus the losses after M steps on x_i from there. ``batch`` < 0: as many
    replays at once as the device's free memory holds on a GPU (never all T blindly), one at a time
    on a CPU."""
    # lazy: tqdm takes seconds to import; only this path needs it
    from tqdm.auto import tqdm

    # lazy: pulls in torch, which importing this module does not need
    from arprobe.trainer.api import pairwise_rows

    T = len(before)
    if batch < 0:
        cuda = replay.device.type == "cuda"
        batch = replays_that_fit(replay.model, replay.cfg, T, replay.device) if cuda else 1
    chunk = max(batch, 1)
    recovery = np.zeros((T, T))  # [trained doc i, evaluated doc j]
    with tqdm(total=T, desc=desc, unit="doc", disable=not progress, leave=False) as bar:
        for lo in range(0, T, chunk):
            docs = list(range(lo, min(lo + chunk, T)))
            recovery[docs] = before - pairwise_rows(replay, docs, batch)
            bar.update(len(docs))
    return recovery, batch


def default_checkpoint(checkpoints: np.ndarray, last_episode: int) -> int:
    """The latest checkpoint before the last episode (the end of the second-to-last epoch when
    checkpoints are taken per epoch), or the last one if it is the only one."""
    earlier = checkpoints[(checkpoints < last_episode) & (checkpoints > 0)]
    return int(earlier.max()) if len(earlier) else int(checkpoints.max())


def neighbour_recovery(recovery: np.ndarray) -> np.ndarray:
    """[T]: for each target x_j, the mean recovery from training on its two cycle neighbours x_{j±1}."""
    T = recovery.shape[0]
    j = np.arange(T)
    return (recovery[(j - 1) % T, j] + recovery[(j + 1) % T, j]) / 2


class PairwiseRecovery(Probe):
    name = "pairwise_recovery"
    description = (
        "From a checkpoint, train M steps on each x_i and record the loss change on every x_j: "
        "T×T recovery matrix (Fig. 8b), its symmetry and the distance b where recovery peaks."
    )
    requires = ["checkpoints"]
    options = {"episode": -1, "steps": 0, "device": "auto", "seed": 0, "threads": 1, "batch": -1}
    option_help = {
        "episode": "checkpoint episode; -1: the latest before the last one (end of the next-to-last epoch)",
        "steps": "gradient steps on each x_i; 0: the run's M (steps_per_doc)",
        "device": "torch device for the training: auto, cpu, cuda, ...",
        "seed": "0: the run's RNG state at the checkpoint; else a seed for the data randomness (shift, mask)",
        "threads": "CPU threads for torch while this probe trains (restored after); 0: torch's default",
        "batch": "replays trained at once as one vmapped model (chunks of this many members); 0 or 1: one "
        "after another; -1: on a GPU as many as its free memory holds (at most T), on CPU one after "
        "another (where batching measured slower)",
    }
    headline_keys = [
        "checkpoint_episode",
        "symmetry",
        "neighbour_recovery_mean",
        "b_since_trained",
        "by_distance",
    ]

    def run(
        self,
        store,
        out: Path,
        episode: int = -1,
        steps: int = 0,
        device: str = "auto",
        seed: int = 0,
        threads: int = 1,
        batch: int = -1,
    ) -> dict:
        # lazy: torch takes seconds to import; only this path needs it
        import torch

        # Batch-size-1 steps gain little from intra-op threads, and when the cores are shared
        # torch's spinning thread pool makes them far slower: measured on 2 busy cores, one
        # thread took 0.5 s per document of the default run against 6.5 s with two.
        previous = torch.get_num_threads()
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            return self._run(store, out, episode, steps, device, seed, batch)
        finally:
            torch.set_num_threads(previous)

    def _run(self, store, out: Path, episode: int, steps: int, device: str, seed: int, batch: int) -> dict:
        schedule = store.schedule()
        episode, steps, before, recovery, batch = self.replayed_matrix(
            store, len(schedule.doc), episode, steps, device, seed, batch
        )
        T = len(before)
        off = ~np.eye(T, dtype=bool)
        since, cyclic, neighbour, by_since, by_distance = cycle_summary(recovery, schedule, episode)
        b_since = int(np.nanargmax(by_since)) if np.isfinite(by_since).any() else None
        self._plot(recovery, by_distance, by_since, episode, steps, out)
        return {
            "checkpoint_episode": episode,
            "checkpoint_epoch": int(schedule.epoch[episode - 1]) if episode >= 1 else 0,
            "steps": steps,
            "loss_before": before,
            "recovery": recovery,
            "diagonal_mean": float(np.mean(np.diag(recovery))),
            "offdiagonal_mean": float(recovery[off].mean()),
            "fraction_offdiagonal_positive": float(np.mean(recovery[off] > 0)),
            "symmetry": symmetry(recovery),  # correlation of off-diagonal A with Aᵀ
            "by_distance": by_distance[1:],  # mean off-diagonal recovery at cyclic distance d = 1..T//2
            "peak_distance": int(np.nanargmax(by_distance[1:]) + 1) if T > 2 and cyclic else None,
            "distance_note": ""
            if cyclic
            else "the run's epochs do not all train x_1..x_T in order, so distances along the cycle "
            "(by_distance, neighbour recovery, b) are not defined; the matrix itself is",
            "neighbour_recovery": neighbour,  # [j] mean recovery of x_j from x_{j-1} and x_{j+1}
            "neighbour_recovery_mean": float(neighbour.mean()),
            "null": {
                "reads": "without transfer between documents the off-diagonal recovery is about 0 and has no "
                "pattern by distance; training on any document lowers the loss of the others in the first "
                "epochs (shared structure), so compare by_distance at d = 1 with larger d, and with the "
                "gradient_similarity read at the same checkpoint",
            },
            "docs_since_trained": since,  # [j] episodes between x_j's last training and the checkpoint
            "neighbour_recovery_by_since": by_since,  # [s]
            # b: how many documents after its own training a document gains most from its neighbours
            "b_since_trained": b_since,
            "b_cyclic": int(min(b_since, T - b_since)) if b_since is not None else None,
            "replay": "the run's episode step from the checkpoint (its freezing, lr schedule, clipping, "
            "optimizer-state policy and RNG)",
            "batch": batch,  # replays trained at once (1: one after another)
        }

    def replayed_matrix(
        self, store, n_episodes: int, episode: int, steps: int, device: str, seed: int, batch: int
    ):
        """(checkpoint episode, M, losses at the checkpoint [T], recovery [T, T], replays at once): row i
        is the loss of every document before minus after M steps on x_i from the checkpoint (-1: the
        default checkpoint of a run of ``n_episodes``)."""
        # lazy: pulls in torch, which importing this module does not need
        from arprobe.trainer.api import Replay

        checkpoints = store.checkpoint_episodes()
        episode = default_checkpoint(checkpoints, n_episodes) if episode < 0 else episode
        if episode not in checkpoints:
            raise MissingDataError(
                f"Run '{store.path.parent.name}' has no checkpoint at episode {episode} "
                f"(have: {', '.join(map(str, checkpoints))}); pick one of those or set record.checkpoints."
            )
        # The run's own episode step from the checkpoint: its freezing, lr schedule, clipping,
        # optimizer-state policy and (unless a seed is given) its RNG state.
        replay = Replay(
            store, episode, device=device, steps_per_doc=steps or None, seed=seed if seed else None
        )
        before = replay.evaluate().astype(np.float64)  # [T]
        recovery, batch = replayed_rows(
            replay, before, batch, progress=self.progress, desc="pairwise recovery"
        )
        return episode, replay.rules.steps_per_doc, before, recovery, batch

    @staticmethod
    def _plot(recovery, by_distance, by_since, episode, steps, out):
        T = recovery.shape[0]
        fig, (ax, ax2) = new_figure(2, width=5.6)
        off = recovery[~np.eye(T, dtype=bool)]
        # The diagonal (training on x_j itself) dwarfs the rest; scale by the off-diagonal.
        lim = float(np.abs(off).max()) or 1.0
        im = ax.imshow(recovery, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=(0.5, T + 0.5, T + 0.5, 0.5))
        fig.colorbar(im, ax=ax, label="loss before − after on x_j (diagonal off the scale)")
        ax.set_xlabel("evaluated document j")
        ax.set_ylabel("trained document i")
        ax.set_title(
            f"Pairwise recovery from the checkpoint at episode {episode}, {steps} steps\n(cf. paper Fig. 8b)"
        )
        d = np.arange(1, len(by_distance))
        ax2.plot(d, by_distance[1:], "o-", label="all pairs at cyclic distance |i − j|")
        s = np.arange(T)
        ax2.plot(s, by_since, "s--", label="x_j from x_{j±1}, by episodes since x_j was trained")
        ax2.axhline(0, color="0.6", lw=0.8)
        ax2.set_xlabel("distance (documents)")
        ax2.set_ylabel("mean recovery (loss decrease)")
        ax2.set_title("Where recovery peaks")
        ax2.legend(fontsize=8)
        data = {
            "trained_document_i": np.arange(1, T + 1),
            "recovery_on_document_j": recovery,
            "distance": d,
            "mean_recovery_by_distance": by_distance[1:],
            "episodes_since_trained": s,
            "mean_recovery_from_neighbours": by_since,
        }
        save_figure(fig, out / "pairwise_recovery.png", data=data)


def cycle_summary(recovery: np.ndarray, schedule, episode: int):
    """Where the checkpoint is in the cycle and the recovery read along it: (episodes since each
    document was last trained [T], whether distances along the cycle exist, neighbour recovery [T],
    neighbour recovery by episodes since training [T], mean off-diagonal recovery by cyclic distance
    [T//2 + 1] (d = 0 NaN)); NaN where the order has no cycle."""
    T = recovery.shape[0]
    # Documents trained s episodes before the checkpoint: s = 0 is the document just trained. The
    # paper reads b from how far the strongest neighbour recovery sits from the checkpoint's position
    # ("b documents before or after x_j").
    since = episodes_since_trained(schedule.doc, episode, T)
    since = np.where(np.isnan(since), -1, since).astype(int)  # -1: not trained yet
    off = ~np.eye(T, dtype=bool)
    # Distances along the cycle exist only when every epoch trains x_1..x_T in that order.
    cyclic = schedule.is_cyclic and np.array_equal(schedule.doc[schedule.epoch == 1], np.arange(T))
    nan = np.full(T, np.nan)
    neighbour = neighbour_recovery(recovery) if cyclic else nan  # [T]
    by_since = binned_means(neighbour, since, T) if cyclic else nan  # [T], index s
    by_distance = (  # d = 0..T//2, d = 0 NaN
        mean_by_cyclic_distance(np.where(off, recovery, np.nan)) if cyclic else np.full(T // 2 + 1, np.nan)
    )
    return since, cyclic, neighbour, by_since, by_distance
