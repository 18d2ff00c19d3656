"""Which runs belong together: runs whose configs differ only in the seed (and bookkeeping keys) are
replicates of one setting. The run report's multi-run probes and ``arprobe analyze RUN RUN ...``
over loose runs group them the same way.
"""

from __future__ import annotations

import json

# Config keys that do not change what is trained, so runs differing only in them are replicates.
_NOT_TRAINING = ("seed", "name", "out", "eval_batch_size", "threads", "model.device")
_NOT_TRAINING_SECTIONS = ("record.",)


def training_config(config: dict) -> dict:
    """The run config, flattened to dotted keys, without seed and bookkeeping keys."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return {
        k: v for k, v in flat.items() if k not in _NOT_TRAINING and not k.startswith(_NOT_TRAINING_SECTIONS)
    }


def group_runs(configs: list[dict]) -> tuple[list[list[int]], list[str]]:
    """Indices of runs grouped by training config (first-seen order), and a label per group.

    A label is the group's schedule order, followed by ``key=value`` for every other key
    whose value differs between groups.
    """
    flats = [training_config(c) for c in configs]
    keys: dict[str, list[int]] = {}
    for i, flat in enumerate(flats):
        keys.setdefault(json.dumps(flat, sort_keys=True, default=str), []).append(i)
    groups = list(keys.values())
    firsts = [flats[g[0]] for g in groups]
    all_keys = sorted(set().union(*firsts)) if firsts else []
    differing = [k for k in all_keys if len({json.dumps(f.get(k), default=str) for f in firsts}) > 1]
    labels = []
    for f in firsts:
        parts = [str(f.get("schedule.order", "?"))]
        parts += [f"{k.split('.')[-1]}={f.get(k)}" for k in differing if k != "schedule.order"]
        labels.append(" ".join(parts))
    # Two groups could still print alike (e.g. differing only in a list); keep them apart.
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} ({seen[label]})"
    return groups, labels
