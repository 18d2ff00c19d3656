"""Probes: read a run store, write numbers and figures. Third-party probes subclass ``Probe``
and register under the entry-point group ``arprobe.probes``."""

from arprobe.probes.base import Probe, new_figure, save_figure

__all__ = ["Probe", "new_figure", "save_figure"]
