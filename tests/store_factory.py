"""Hand-made run stores for probe tests: the public factory ``arprobe.testing`` (for plugin authors too)."""

from arprobe.testing import cyclic, helix, make_store

__all__ = ["cyclic", "helix", "make_store"]
