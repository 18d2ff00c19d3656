"""What a probe's headline reads without anticipation, and the matched control's headline beside it.

Every built-in probe returns a ``null`` entry: a short dict naming the null (``reads``: what the
headline would read if nothing anticipated the next document), the control's value when the run has
a matched shuffled control (``arprobe run --control shuffle`` writes it to ``<run>/control/run.h5``)
and a one-sentence ``verdict``. These helpers keep the wording the same across probes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from arprobe.errors import MissingDataError
from arprobe.probes.base import control_store

NO_CONTROL = (
    "no matched shuffled control in this run (arprobe run --control shuffle trains one: same seed, "
    "documents and initialisation)"
)


def control_value(store, compute: Callable[[Any], Any]) -> Any:
    """``compute(control)`` on the run's matched shuffled control, or None if it has none.

    A control that lacks what ``compute`` reads (an older or stopped control) counts as none."""
    control = control_store(store)
    if control is None:
        return None
    with control:
        try:
            return compute(control)
        except (MissingDataError, KeyError, ValueError, IndexError):
            return None


def versus_control(name: str, value: float | None, control: float | None, fmt: str = ".3f") -> str:
    """One sentence: the run's ``name`` beside its control's, or that there is no control."""
    if value is None or not np.isfinite(value):
        return f"{name} is undefined in this run."
    if control is None or not np.isfinite(control):
        return f"{name} {value:{fmt}}; {NO_CONTROL}."
    diff = value - control
    return f"{name} {value:{fmt}} vs {control:{fmt}} in the matched shuffled control ({diff:+{fmt}})."


def last_finite(values) -> float | None:
    """The last finite entry of a sequence of numbers (None if there is none)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else None
