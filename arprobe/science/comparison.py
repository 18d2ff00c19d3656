"""The toy model beside a run, number for number (paper Sec. 4.4 against Sec. 3 and 4.2).

Both are trained on the same sequence of documents (tasks), so their recovery scores, their
shift-averaged curves and the winding of their trajectories are computed the same way on the
same schedule and can be read side by side. Pure numpy: arrays in, numbers out.
"""

from __future__ import annotations

import numpy as np

from arprobe.science.geometry import (
    gram_matrix,
    pearson,
    snapshot_epochs,
    trajectory_winding,
)
from arprobe.science.recovery import shift_averaged_curve
from arprobe.science.schedule import Schedule
from arprobe.science.toy import circularity, pca_2d


def curve_correlation(run_loss: np.ndarray, toy_loss: np.ndarray, schedule: Schedule) -> dict:
    """Shift-averaged curves (App. A.4) of a run and a toy over the schedule's repeating documents,
    and their Pearson correlation over the offsets both have.

    run_loss [K+1, T], toy_loss [K'+1, T']: eval matrices trained on the same schedule (the toy
    may stop earlier). "correlation" leaves out offset 0, the untrained loss, which is far above
    everything after it in both and would decide the correlation on its own;
    "correlation_all_offsets" keeps it.
    """
    docs = schedule.repeating_docs
    run = shift_averaged_curve(run_loss, schedule.doc, docs=docs)
    toy = shift_averaged_curve(toy_loss, schedule.doc[: toy_loss.shape[0] - 1], docs=docs)
    n = min(len(run.mean), len(toy.mean))
    return {
        "offset": np.arange(n),
        "offset_epochs": np.arange(n) / schedule.cycle_length,
        "run": run.mean[:n],
        "toy": toy.mean[:n],
        "correlation": pearson(run.mean[1:n], toy.mean[1:n]),
        "correlation_all_offsets": pearson(run.mean[:n], toy.mean[:n]),
        "docs": run.docs,
    }


def revolutions_per_epoch(
    snapshots: np.ndarray, episodes: np.ndarray, schedule: Schedule, *, detrend: str = "window"
) -> dict:
    """Winding of a weight trajectory per epoch, in revolutions, as pca_weights measures it.

    snapshots [S, D] taken after ``episodes`` [S] (0: before training), evenly spaced; with
    detrend "window" the drift is removed with a centred window of one cycle (the schedule's
    mean epoch length, in snapshots). Returns {"epoch", "revolutions", "complete"} per epoch.
    """
    episodes = np.asarray(episodes, dtype=int)
    every = int(np.diff(episodes[episodes > 0])[0]) if (episodes > 0).sum() > 1 else 1
    gram = gram_matrix(snapshots, center=np.asarray(snapshots, dtype=np.float64).mean(axis=0))
    window = max(int(round(schedule.cycle_length / every)), 2)
    helix = trajectory_winding(
        gram, snapshot_epochs(episodes, schedule.epoch), detrend=detrend, window=window
    )
    return {"epoch": helix["epoch"], "revolutions": helix["revolutions"], "complete": helix["complete"]}


def ring_order(embeddings: np.ndarray, order: np.ndarray) -> dict:
    """How well task embeddings [T, M], taken in ``order`` (e.g. the run's repeating documents in
    the order they are trained), lie on a ring in that order (``toy.circularity`` of their top-2
    PCA plane: order_agreement, winding in revolutions, radius_cv)."""
    coords, _ = pca_2d(np.asarray(embeddings)[np.asarray(order, dtype=int)])
    return circularity(coords)
