"""What is trained and how its loss is computed, behind one interface (``Task``).

The loop, the episode step, the store and the probes see only a Task; text language modelling
is one (``TextLM``), image tasks plug in beside it.
"""

from arprobe.tasks.base import Task
from arprobe.tasks.text import TextLM

__all__ = ["Task", "TextLM"]
