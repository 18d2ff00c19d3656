"""Which probes exist: a lazy registry fed by the ``arprobe.probes`` entry-point group.

Built-in probes are declared in arprobe's own pyproject.toml exactly as a third-party package
declares its own, so there is one way in::

    [project.entry-points."arprobe.probes"]
    my_probe = "my_package.probes:MyProbe"

Only the names are read at start-up; a probe's module is imported the first time it is used,
and a plugin that fails to import or is not a ``Probe`` is reported by name without hiding
the others.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from importlib.metadata import entry_points

from arprobe.errors import UserError
from arprobe.probes.base import Probe

GROUP = "arprobe.probes"

# A probe name becomes a folder of the report: nothing that could climb out of it.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


def check_name(name: str, source: str) -> str:
    """The reason ``name`` is refused as a probe name, or ""."""
    if NAME_PATTERN.match(name):
        return ""
    return (
        f"Probe name {name!r} (from {source}) is refused: probe names must be lower-case letters, digits "
        "and underscores, starting with a letter."
    )


@dataclass
class Entry:
    name: str
    target: str | type  # "module:Class", or the class itself for in-memory registration
    source: str  # who declared it: the distribution name, or "in-memory"


class Registry:
    """Probe name -> class, loaded on first use.

    ``Registry()`` reads the entry-point group; ``Registry(discover=False)`` starts empty, for
    tests that register in-memory entries with ``register``.
    """

    def __init__(self, group: str = GROUP, *, discover: bool = True):
        self.group = group
        self._discover = discover
        self._entries: dict[str, Entry] | None = None
        self._extra: dict[str, Entry] = {}
        self._loaded: dict[str, type[Probe]] = {}
        self.conflicts: list[str] = []  # one line per name declared twice
        self.refused: dict[str, tuple[str, str]] = {}  # unsafe entry-point name -> (source, reason)

    # --- declaring ----------------------------------------------------------------------------

    def register(self, name: str, target: str | type, source: str = "in-memory") -> None:
        """Add a probe by "module:Class" string or by class; replaces an entry of the same name."""
        reason = check_name(name, source)
        if reason:
            raise UserError(reason)
        self._extra[name] = Entry(name, target, source)
        self._loaded.pop(name, None)

    def _all_entries(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = {}
            if self._discover:
                for ep in entry_points(group=self.group):
                    dist = getattr(ep, "dist", None)
                    source = dist.name if dist is not None else "unknown distribution"
                    reason = check_name(ep.name, source)
                    if reason:
                        self.refused[ep.name] = (source, reason)
                        continue
                    if ep.name in self._entries and self._entries[ep.name].target != ep.value:
                        self.conflicts.append(
                            f"Probe '{ep.name}' is declared by both {self._entries[ep.name].source} and "
                            f"{source}; using {self._entries[ep.name].source}'s."
                        )
                        continue
                    self._entries.setdefault(ep.name, Entry(ep.name, ep.value, source))
        return {**self._entries, **self._extra}

    # --- reading ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._all_entries())

    def __contains__(self, name: str) -> bool:
        return name in self._all_entries()

    def source(self, name: str) -> str:
        return self._entries_or_error(name).source

    def _entries_or_error(self, name: str) -> Entry:
        entries = self._all_entries()
        if name not in entries:
            close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            available = ", ".join(sorted(entries)) or "none"
            raise UserError(f"Unknown probe '{name}'.{hint} Available: {available}.")
        return entries[name]

    def load(self, name: str) -> type[Probe]:
        """The probe class registered as ``name``; imports its module on first use."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries_or_error(name)
        target = entry.target if isinstance(entry.target, str) else entry.target.__qualname__
        where = f"probe plugin '{name}' ({target}, from {entry.source})"
        if isinstance(entry.target, str):
            module_name, _, attr = entry.target.partition(":")
            try:
                obj = importlib.import_module(module_name.strip())
                for part in attr.strip().split("."):
                    obj = getattr(obj, part)
            except Exception as exc:  # a third-party import can fail in any way
                raise UserError(
                    f"Could not load {where}: {type(exc).__name__}: {exc}".rstrip(": ") + "."
                ) from exc
        else:
            obj = entry.target
        if not (isinstance(obj, type) and issubclass(obj, Probe)):
            raise UserError(f"Could not load {where}: it is not a subclass of arprobe.probes.base.Probe.")
        if not isinstance(obj.description, str):  # listed, wrapped and written into reports as text
            raise UserError(
                f"Could not load {where}: its description is a {type(obj.description).__name__}, "
                "not a one-line string."
            )
        self._loaded[name] = obj
        return obj

    def get(self, name: str) -> Probe:
        """A fresh instance of the probe ``name``."""
        probe = self.load(name)()
        probe.name = name  # the entry-point name is what users type, whatever the class says
        return probe

    def refused_names(self) -> list[tuple[str, str, str]]:
        """(name, source, reason) of every entry point refused for its name: broken plugins that no
        probe name reaches, listed so that they are never skipped silently."""
        self._all_entries()
        return [(name, source, reason) for name, (source, reason) in sorted(self.refused.items())]

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


_default: Registry | None = None


def default_registry() -> Registry:
    """The registry of installed probes, built once per process."""
    global _default
    if _default is None:
        _default = Registry()
    return _default
