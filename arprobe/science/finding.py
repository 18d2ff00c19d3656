"""The one-sentence finding of a run: its recovery and online loss against its matched control.

RS ≥ 0 by construction (l_before lies inside the window where l_max is taken), and monotone
forgetting plus noise already gives RS ≈ 0.07–0.59 in any order, so a run's RS is evidence of
anticipation only beside the RS of its matched shuffled control (same seed, documents and
initialisation). One run and one control are one seed: the sentence gives the two numbers and no
verdict; a verdict needs seeds and an interval (a sweep with ``control = "shuffle"``).
"""

from __future__ import annotations

import math

NO_CONTROL = (
    "RS alone is not evidence of anticipation (it is >= 0 by construction and forgetting plus noise "
    "gives RS of 0.07-0.59 in a shuffled order too): train the matched shuffled control with "
    "`--control shuffle` and compare."
)
ONE_SEED = 'one seed, no interval: for a verdict, sweep seeds with control = "shuffle"'


def _last_defined(scores) -> tuple[int, float] | None:
    """(epoch n, RS(n)) of the last defined recovery score, or None."""
    for n in range(len(scores), 0, -1):
        value = float(scores[n - 1])
        if not math.isnan(value):
            return n, value
    return None


def control_finding(
    run_rs, run_online: float, control_rs, control_online: float, order: str = "cyclic"
) -> str:
    """ "RS(4) 0.41 cyclic vs 0.06 shuffled control, online loss 3.50 vs 4.06 (one seed, ...)".

    ``run_rs``/``control_rs``: RS(n) per epoch n = 1..E-1 (NaN where undefined); the online losses
    are the means over epochs 2..E. The epoch compared is the last one both define.
    """
    n_both = min(len(run_rs), len(control_rs))
    both = [
        (n, float(run_rs[n - 1]), float(control_rs[n - 1]))
        for n in range(1, n_both + 1)
        if not (math.isnan(float(run_rs[n - 1])) or math.isnan(float(control_rs[n - 1])))
    ]
    parts = []
    if both:
        n, rs, ctrl = both[-1]
        parts.append(f"RS({n}) {rs:.2f} {order} vs {ctrl:.2f} shuffled control")
    else:
        parts.append("RS undefined in the run or its control (too little forgetting to score)")
    if not (math.isnan(run_online) or math.isnan(control_online)):
        parts.append(f"online loss {run_online:.2f} vs {control_online:.2f}")
    return f"{', '.join(parts)} ({ONE_SEED})"
