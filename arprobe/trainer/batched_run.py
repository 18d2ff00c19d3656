"""S runs trained as one stacked model, each writing its own ordinary store: ``loop.run_many``.

Kept for its callers (``arprobe sweep --batch-seeds``, the benchmarks): what may be batched and
why is ``trainer.members``' docstring; the training is the loop's.
"""

from __future__ import annotations

from arprobe.trainer.config import RunConfig
from arprobe.trainer.loop import RunResult, run_many
from arprobe.trainer.members import BATCHABLE, batch_key, check_batchable

__all__ = ["BATCHABLE", "batch_key", "check_batchable", "run_batched"]


def run_batched(cfgs: list[RunConfig], *, progress: bool = True, overwrite: bool = False) -> list[RunResult]:
    """Train every config of ``cfgs`` as one member of a stacked model (``loop.run_many``)."""
    return run_many(cfgs, progress=progress, overwrite=overwrite)
