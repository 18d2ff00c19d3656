"""Which probes exist: the ``arprobe.probes`` entry-point group, read by the generic registry
(``arprobe.registry``).

Built-in probes are declared in arprobe's own pyproject.toml exactly as a third-party package
declares its own, so there is one way in::

    [project.entry-points."arprobe.probes"]
    my_probe = "my_package.probes:MyProbe"

Only the names are read at start-up; a probe's module is imported the first time it is used,
and a plugin that fails to import or is not a ``Probe`` is reported by name without hiding
the others.
"""

from __future__ import annotations

import functools
import re

from arprobe import registry as generic
from arprobe.errors import UserError
from arprobe.probes.base import Probe
from arprobe.registry import Entry

GROUP = "arprobe.probes"

# A probe name becomes a folder of the report and a key of --option flags: no hyphens either.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
NAME_RULE = "lower-case letters, digits and underscores, starting with a letter"

__all__ = ["GROUP", "NAME_PATTERN", "Entry", "Registry", "check_name", "default_registry"]


def check_name(name: str, source: str) -> str:
    """The reason ``name`` is refused as a probe name, or ""."""
    return Registry(discover=False).check_name(name, source)


class Registry(generic.Registry):
    """Probe name -> class, loaded on first use.

    ``Registry()`` reads the entry-point group; ``Registry(discover=False)`` starts empty, for
    tests that register in-memory entries with ``register``.
    """

    def __init__(self, group: str = GROUP, *, discover: bool = True):
        super().__init__(
            group, base=Probe, kind="probe", pattern=NAME_PATTERN, rule=NAME_RULE, discover=discover
        )

    def check_class(self, cls: type) -> str:
        if not isinstance(cls.description, str):  # listed, wrapped and written into reports as text
            return f"its description is a {type(cls.description).__name__}, not a one-line string"
        return ""

    def get(self, name: str) -> Probe:
        """A fresh instance of the probe ``name``."""
        probe = self.load(name)()
        probe.name = name  # the entry-point name is what users type, whatever the class says
        return probe

    def describe(self) -> list[dict]:
        """Every probe as {"name", "description", "requires", "source", "error"}; a plugin that
        fails to load (or is refused for its name) gets its error and an empty description
        instead of stopping the list."""
        rows = [_broken_row(name, source, reason) for name, source, reason in self.refused_names()]
        for name in self.names():
            try:
                cls = self.load(name)
                rows.append(
                    {
                        "name": name,
                        "description": cls.description,
                        "requires": cls().requirements(cls.options),
                        "needs_store": cls.needs_store,
                        "source": self.source(name),
                        "error": "",
                    }
                )
            except Exception as exc:  # a plugin's constructor or bad requires must not hide the others
                if not isinstance(exc, UserError):
                    exc = UserError(
                        f"Could not load probe plugin '{name}' (from {self.source(name)}): "
                        f"{type(exc).__name__}: {exc}"
                    )
                rows.append(_broken_row(name, self.source(name), str(exc)))
        return rows


def _broken_row(name: str, source: str, error: str) -> dict:
    return {
        "name": name,
        "description": "",
        "requires": [],
        "needs_store": True,
        "source": source,
        "error": error,
    }


@functools.cache
def default_registry() -> Registry:
    """The registry of installed probes, built once per process."""
    return Registry()


def probes_enabled(recordings) -> dict[str, list[str]]:
    """{recording key: the built-in probes that read it with their default options}: what each
    recording policy buys (``arprobe run --dry-run``). Probes that need only the losses are not listed."""
    enabled: dict[str, list[str]] = {}
    for row in default_registry().describe():
        if row["source"] != "arprobe" or row["error"]:
            continue
        for item in row["requires"]:
            kind, _, name = item.partition(":")
            for r in recordings:
                if r.kind == kind and name in ("", "*", r.name):
                    enabled.setdefault(r.key, []).append(row["name"])
    return enabled
