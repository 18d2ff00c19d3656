"""Document orders: which document each episode trains, for every epoch, fixed by the seed.

Every generator returns ``(doc, epoch)``: int arrays [K] with 0-based documents and 1-based
epochs. The whole schedule is drawn up front so that a resumed run replays it exactly.
"""

from __future__ import annotations

import numpy as np

from arprobe.errors import UserError
from arprobe.science.schedule import Schedule


def cyclic(n_docs: int, epochs: int) -> list[np.ndarray]:
    """The same order x_1..x_T every epoch (paper Sec. 3.1)."""
    return [np.arange(n_docs) for _ in range(epochs)]


def shuffle(n_docs: int, epochs: int, rng: np.random.Generator) -> list[np.ndarray]:
    """x_1 first, the rest re-shuffled every epoch (the paper's shuffled baseline)."""
    return partial_shuffle(n_docs, epochs, n_docs, rng)


def partial_shuffle(
    n_docs: int, epochs: int, shuffle_until: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Documents x_2..x_N re-shuffled every epoch, the others in place (App. B.1)."""
    if not 2 <= shuffle_until <= n_docs:
        raise UserError(f"schedule.shuffle_until (N) must be in [2, T={n_docs}], got {shuffle_until}.")
    orders = []
    for _ in range(epochs):
        order = np.arange(n_docs)
        order[1:shuffle_until] = rng.permutation(order[1:shuffle_until])
        orders.append(order)
    return orders


def insert(
    n_docs: int, epochs: int, repeat_docs: int, insert_min: int, insert_max: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """A repeating block x_1..x_R, then a random number of one-off documents (App. B.7).

    The one-off documents are drawn without replacement from x_{R+1}..x_T, so each appears once
    in the whole run; epochs have different lengths.
    """
    if not 1 <= repeat_docs < n_docs:
        raise UserError(f"schedule.repeat_docs (R) must be in [1, T-1={n_docs - 1}], got {repeat_docs}.")
    counts = rng.integers(insert_min, insert_max + 1, size=epochs)
    pool = rng.permutation(np.arange(repeat_docs, n_docs))
    if counts.sum() > len(pool):
        raise UserError(
            f"The insert order needs {int(counts.sum())} one-off documents for {epochs} epochs but "
            f"T - R = {len(pool)}; raise data.n_docs (T) to at least {repeat_docs + epochs * insert_max} "
            "or lower schedule.insert_max."
        )
    orders, used = [], 0
    for c in counts:
        orders.append(np.concatenate([np.arange(repeat_docs), pool[used : used + c]]))
        used += c
    return orders


def make_schedule(
    order: str,
    n_docs: int,
    epochs: int,
    seed: int,
    *,
    shuffle_until: int = 0,
    repeat_docs: int = 0,
    insert_min: int = 1,
    insert_max: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """(doc int32 [K], epoch int32 [K]) for the named order."""
    rng = np.random.default_rng([seed, 0x5C4ED])  # its own stream: the order never shifts document sampling
    if order == "cyclic":
        orders = cyclic(n_docs, epochs)
    elif order == "shuffle":
        orders = shuffle(n_docs, epochs, rng)
    elif order == "partial-shuffle":
        orders = partial_shuffle(n_docs, epochs, shuffle_until or n_docs, rng)
    elif order == "insert":
        orders = insert(n_docs, epochs, repeat_docs or n_docs // 2, insert_min, insert_max, rng)
    else:
        raise UserError(f"Unknown schedule.order '{order}'; use cyclic, shuffle, partial-shuffle or insert.")
    doc = np.concatenate(orders).astype(np.int32)
    epoch = np.concatenate([np.full(len(o), e + 1) for e, o in enumerate(orders)]).astype(np.int32)
    return doc, epoch


def schedule_from_config(cfg, n_docs: int):
    """The run's whole schedule (``arprobe.science.schedule.Schedule``) from its config."""
    sched = cfg.schedule
    doc, epoch = make_schedule(
        sched.order,
        n_docs,
        sched.epochs,
        cfg.seed,
        shuffle_until=sched.shuffle_until,
        repeat_docs=sched.repeat_docs,
        insert_min=sched.insert_min,
        insert_max=sched.insert_max,
    )
    return Schedule(doc, epoch, n_docs)
