"""Model time: the update-norm clock (arXiv 2601.03938). Time passes as the weights move: the
clock after episode k is the summed length ‖θ_j − θ_{j−1}‖ of the weight trajectory up to k.

Does a document's forgetting and recovery follow model time better than the episode count? Each
interval between two trainings of a document gives a curve: loss change since the training,
against episodes since the training or model time since the training. If one clock is the right
one, the curves of all intervals (early epochs with large steps, late ones with small) fall on one
curve against it. ``collapse_error`` measures how far they do.
Episodes are 1-based, eval-matrix row k is after episode k, documents 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arprobe.science.geometry import step_norms


def model_time(snapshots: np.ndarray) -> np.ndarray:
    """[S] cumulative ‖θ_s − θ_{s−1}‖ along weight snapshots [S, D], starting at 0."""
    return np.concatenate([[0.0], np.cumsum(step_norms(snapshots))])


def clock_at(rows, snapshot_episodes, clock) -> np.ndarray:
    """Model time at eval-matrix rows (episodes), linear between snapshots; NaN outside them."""
    return np.interp(
        np.asarray(rows, dtype=np.float64),
        np.asarray(snapshot_episodes, dtype=np.float64),
        clock,
        left=np.nan,
        right=np.nan,
    )


@dataclass
class IntervalCurve:
    doc: int  # 0-based document
    n: int  # 1-based: the interval after the document's n-th training
    episodes: np.ndarray  # [L] episodes since the n-th training: 0, 1, ..., up to just before the next
    model_time: np.ndarray  # [L] model time since the n-th training
    loss_change: np.ndarray  # [L] loss minus the loss right after the n-th training


def interval_curves(loss_eval: np.ndarray, schedule_doc: np.ndarray, clock_rows: np.ndarray) -> list:
    """Every document's curve in every interval between consecutive trainings (any order).
    loss_eval: [K+1, T]; schedule_doc: [K]; clock_rows: [K+1] model time at each row."""
    loss_eval = np.asarray(loss_eval, dtype=np.float64)
    curves = []
    for doc in range(loss_eval.shape[1]):
        trained = np.flatnonzero(np.asarray(schedule_doc) == doc) + 1
        for n in range(len(trained) - 1):
            rows = np.arange(trained[n], trained[n + 1])  # after the n-th .. just before the (n+1)-th
            curves.append(
                IntervalCurve(
                    doc=doc,
                    n=n + 1,
                    episodes=(rows - rows[0]).astype(np.float64),
                    model_time=clock_rows[rows] - clock_rows[rows[0]],
                    loss_change=loss_eval[rows, doc] - loss_eval[rows[0], doc],
                )
            )
    return curves


def held_out_predictions(xs: list, ys: list) -> list:
    """For curves (x_i [L_i] increasing, y_i [L_i]): each point's prediction [L_i] from the mean of
    the other curves read (linearly) at its x, NaN where none reaches it. The start (index 0,
    y = 0 on every clock) is never predicted."""
    out = []
    for i, x in enumerate(xs):
        others = [
            np.interp(x, xo, yo, left=np.nan, right=np.nan)
            for j, (xo, yo) in enumerate(zip(xs, ys))
            if j != i
        ]
        predicted = np.full(len(x), np.nan)
        if others:
            others = np.stack(others)  # [curves - 1, L_i]
            reached = np.isfinite(others)
            count = reached.sum(axis=0)
            mean = np.where(reached, others, 0.0).sum(axis=0) / np.maximum(count, 1)
            predicted = np.where(count > 0, mean, np.nan)
        predicted[:1] = np.nan
        out.append(predicted)
    return out


def collapse_errors(clocks: list, ys: list) -> list[float]:
    """How far curves y_i [L_i] (y_i[0] = 0) are from one curve y = f(x) on each clock: for every
    clock (a list of x_i [L_i], increasing from 0), the mean squared miss of ``held_out_predictions``
    divided by the variance of the points' y. Every clock is scored on the same points, those that
    another curve reaches on every clock. 0: the curves coincide; 1: knowing x says nothing. NaN
    when fewer than two points are scored or their y do not vary."""
    predictions = [np.concatenate(held_out_predictions(xs, ys) or [np.zeros(0)]) for xs in clocks]
    y = np.concatenate([np.asarray(v, dtype=np.float64) for v in ys] or [np.zeros(0)])
    scored = np.isfinite(y) & np.all([np.isfinite(p) for p in predictions], axis=0)
    if scored.sum() < 2 or y[scored].var() == 0:
        return [float("nan")] * len(clocks)
    return [float(np.mean((y[scored] - p[scored]) ** 2) / y[scored].var()) for p in predictions]


def collapse_error(xs: list, ys: list) -> float:
    """``collapse_errors`` of one clock."""
    return collapse_errors([xs], ys)[0]
