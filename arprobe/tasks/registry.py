"""Which tasks exist: the ``arprobe.tasks`` entry-point group, read by the generic registry.

The built-ins (text-lm, image-lm, image-classification) are declared in arprobe's pyproject.toml
exactly as a third-party package declares its own::

    [project.entry-points."arprobe.tasks"]
    my-task = "my_package.tasks:MyTask"

A task's name is the config's ``task`` value; the loop, checkpoints, replays and probes look the
class up here and never test the name.
"""

from __future__ import annotations

import functools

import numpy as np

from arprobe.registry import Registry
from arprobe.tasks.base import Task

GROUP = "arprobe.tasks"


@functools.cache
def task_registry() -> Registry:
    """The registry of installed tasks, built once per process."""
    return Registry(GROUP, base=Task, kind="task")


def task_class(name: str) -> type[Task]:
    """The task class of ``name``; an unknown name is one sentence listing the installed tasks."""
    return task_registry().load(name)


def run_task_name(config: dict) -> str:
    """The task of a stored run's config (runs written before tasks existed trained text)."""
    return config.get("task") or "text-lm"


def document_masks(store, n_positions: int) -> np.ndarray:
    """bool [T, n_positions]: the real (non-pad) positions of each document's clean input in a
    stored run, as its task defines them — what probes pool activations over."""
    T = store.eval_matrix().shape[1]
    return task_class(run_task_name(store.config)).position_mask(store.doc_arrays(), T, n_positions)
