"""One registry for every kind of plugin: probes, tasks and sweep backends.

A plugin is a class declared in an entry-point group, by arprobe's own pyproject.toml exactly as
by a third-party package's::

    [project.entry-points."arprobe.tasks"]
    my-task = "my_package.tasks:MyTask"

Only the names are read at start-up; a plugin's module is imported the first time it is used.
A plugin that fails to import, is not a subclass of the group's base class, or is declared under
a name the group refuses is reported by name, without hiding the others. Errors a user causes
(an unknown name) list the alternatives with the closest one:
``Unknown task 'text_lm'. Did you mean 'text-lm'? Available: image-lm, text-lm.``
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from importlib.metadata import entry_points

from arprobe.errors import UserError

# Names users type on the command line and that may name a folder: nothing that could climb out of it.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*$")
NAME_RULE = "lower-case letters, digits, underscores and hyphens, starting with a letter"


@dataclass
class Entry:
    name: str
    target: str | type  # "module:Class", or the class itself for in-memory registration
    source: str  # who declared it: the distribution name, or "in-memory"


class Registry:
    """Plugin name -> class of one entry-point ``group``, loaded on first use.

    ``kind`` names the plugins in messages ("probe", "task", "sweep backend"); ``base`` is the
    class every plugin must subclass; ``pattern``/``rule`` say which names are accepted.
    ``discover=False`` starts empty, for tests that ``register`` in-memory entries.
    """

    def __init__(
        self,
        group: str,
        *,
        base: type,
        kind: str = "plugin",
        pattern: re.Pattern = NAME_PATTERN,
        rule: str = NAME_RULE,
        discover: bool = True,
    ):
        self.group, self.base, self.kind = group, base, kind
        self.pattern, self.rule = pattern, rule
        self._discover = discover
        self._entries: dict[str, Entry] | None = None
        self._extra: dict[str, Entry] = {}
        self._loaded: dict[str, type] = {}
        self.conflicts: list[str] = []  # one line per name declared twice
        self.refused: dict[str, tuple[str, str]] = {}  # refused entry-point name -> (source, reason)

    # --- declaring ----------------------------------------------------------------------------

    def check_name(self, name: str, source: str) -> str:
        """The reason ``name`` is refused, or ""."""
        if self.pattern.match(name):
            return ""
        return (
            f"{self.kind.capitalize()} name {name!r} (from {source}) is refused: {self.kind} names must be "
            f"{self.rule}."
        )

    def register(self, name: str, target: str | type, source: str = "in-memory") -> None:
        """Add a plugin by "module:Class" string or by class; replaces an entry of the same name."""
        reason = self.check_name(name, source)
        if reason:
            raise UserError(reason)
        self._extra[name] = Entry(name, target, source)
        self._loaded.pop(name, None)

    def _all_entries(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = {}
            if self._discover:
                for ep in entry_points(group=self.group):
                    self._add_entry_point(ep)
        return {**self._entries, **self._extra}

    def _add_entry_point(self, ep) -> None:
        dist = getattr(ep, "dist", None)
        source = dist.name if dist is not None else "unknown distribution"
        reason = self.check_name(ep.name, source)
        if reason:
            self.refused[ep.name] = (source, reason)
            return
        known = self._entries.get(ep.name)
        if known is not None:
            if known.target != ep.value:
                self.conflicts.append(
                    f"{self.kind.capitalize()} '{ep.name}' is declared by both {known.source} and "
                    f"{source}; using {known.source}'s."
                )
            return
        self._entries[ep.name] = Entry(ep.name, ep.value, source)

    # --- reading ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._all_entries())

    def __contains__(self, name: str) -> bool:
        return name in self._all_entries()

    def source(self, name: str) -> str:
        return self.entry(name).source

    def entry(self, name: str) -> Entry:
        """The declared entry of ``name``; an unknown name is a one-sentence error listing the others."""
        entries = self._all_entries()
        if name not in entries:
            close = difflib.get_close_matches(name, list(entries), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            available = ", ".join(sorted(entries)) or "none"
            raise UserError(f"Unknown {self.kind} '{name}'.{hint} Available: {available}.")
        return entries[name]

    def load(self, name: str) -> type:
        """The class registered as ``name``; imports its module on first use."""
        if name in self._loaded:
            return self._loaded[name]
        entry = self.entry(name)
        target = entry.target if isinstance(entry.target, str) else entry.target.__qualname__
        where = f"{self.kind} plugin '{name}' ({target}, from {entry.source})"
        obj = _import_target(entry.target, where)
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            base = f"{self.base.__module__}.{self.base.__qualname__}"
            raise UserError(f"Could not load {where}: it is not a subclass of {base}.")
        reason = self.check_class(obj)
        if reason:
            raise UserError(f"Could not load {where}: {reason}.")
        self._loaded[name] = obj
        return obj

    def check_class(self, cls: type) -> str:
        """Why a loaded class is refused beyond the base-class check (a subclass's rule), or ""."""
        return ""

    def refused_names(self) -> list[tuple[str, str, str]]:
        """(name, source, reason) of every entry point refused for its name: broken plugins that no
        name reaches, listed so that they are never skipped silently."""
        self._all_entries()
        return [(name, source, reason) for name, (source, reason) in sorted(self.refused.items())]


def _import_target(target: str | type, where: str):
    """The object a "module:attr.attr" string names (or ``target`` itself when it is a class)."""
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
    except Exception as exc:  # a third-party import can fail in any way
        raise UserError(f"Could not load {where}: {type(exc).__name__}: {exc}".rstrip(": ") + ".") from exc
    return obj
