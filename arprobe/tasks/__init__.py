"""What is trained and how its loss is computed, behind one interface (``Task``).

The loop, the episode step, the store and the probes see only a Task, found by name in the
``arprobe.tasks`` entry points (``arprobe.tasks.registry``); text language modelling
(``text.TextLM``) and the image tasks (``image``) are registered there like any other task.
"""

from arprobe.tasks.base import Prepared, Task

__all__ = ["Prepared", "Task"]
