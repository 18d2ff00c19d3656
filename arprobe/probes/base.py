"""The extension point: a probe reads a run store and returns numbers, writing figures.

A probe is a small class::

    class MyProbe(Probe):
        name = "my_probe"
        description = "One line: the question it answers."
        requires = ["weights:{weights}"]          # what the run must hold (see below)
        options = {"weights": "unembed"}           # every option with its default
        headline_keys = ["answer"]                 # result keys worth printing

        def run(self, store, out, **options):      # store: arprobe.storage.RunStore, out: a folder
            episodes, values = store.weights(options["weights"])   # [S], [S, D]
            save_figure(fig, out / "my_probe.png")
            return {"answer": 42.0}                # JSON-serialisable numbers

``requires`` items are ``kind`` or ``kind:name``: ``eval``, ``train_loss``, ``checkpoints``,
``weights:<name>``, ``grads:<name>``, ``activations:<hook>``; ``*`` (or an empty name) means
"any recording of that kind", and ``{option}`` is filled from the probe's options. The report
checks them before ``run`` and skips the probe with a one-sentence reason when the run lacks one.
Raising ``arprobe.errors.MissingDataError`` inside ``run`` also counts as a skip.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from arprobe.errors import MissingDataError, UserError
from arprobe.jsonio import to_jsonable
from arprobe.report.figures import (
    bars_from_zero,
    episode_extent,
    epoch_extent,
    integer_axis,
    legend_below,
    mark_epochs,
    new_figure,
    save_data,
    save_figure,
    set_figure_subtitle,
    write_3d_view,
)
from arprobe.values import parse_bool

# The figure helpers live in arprobe.report.figures (sweep reports draw with them too); they are
# re-exported here because docs/probes.md documents them as ``from arprobe.probes.base import ...``.
__all__ = [
    "Probe",
    "bars_from_zero",
    "coerce_option",
    "describe_weights",
    "episode_extent",
    "epoch_extent",
    "integer_axis",
    "legend_below",
    "mark_epochs",
    "missing_requirement",
    "new_figure",
    "pick_recording",
    "save_data",
    "save_figure",
    "set_figure_subtitle",
    "to_jsonable",
    "write_3d_view",
]


class Probe:
    name: str = ""  # set from the entry-point name when registered
    description: str = ""  # one line: the question the probe answers
    requires: list[str] = []  # store items, see the module docstring
    options: dict[str, Any] = {}  # option -> default; the default's type is the option's type
    option_help: dict[str, str] = {}  # option -> one line, shown by `arprobe probes NAME`
    headline_keys: list[str] = []  # result keys printed by `arprobe analyze` and shown in the index
    needs_store: bool = True  # False: runs without a run (e.g. the toy model); a store is then optional
    multi_run: bool = False  # True: run() receives a list of stores (several runs compared at once)
    progress: bool = True  # the report sets this; long probes show a progress bar when True

    def run(self, store, out: Path, **options) -> dict:
        raise NotImplementedError

    def headline(self, result: dict) -> dict:
        """The few numbers worth printing: ``headline_keys`` of the result."""
        return {k: result[k] for k in self.headline_keys if k in result}

    # --- helpers used by the report ---------------------------------------------------------

    def resolve_options(self, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with ``given``; strings from the command line take the default's type."""
        resolved = dict(self.options)
        for key, value in (given or {}).items():
            if key not in self.options:
                close = difflib.get_close_matches(key, list(self.options), n=1, cutoff=0.5)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                have = ", ".join(self.options) or "none"
                raise UserError(f"Probe '{self.name}' has no option '{key}'.{hint} Its options: {have}.")
            resolved[key] = coerce_option(value, self.options[key], f"{self.name}.{key}")
        return resolved

    def requirements(self, options: dict[str, Any]) -> list[str]:
        """``requires`` with options filled in; an empty name becomes ``*`` (any recording)."""
        out = []
        for item in self.requires:
            kind, sep, name = item.format(**options).partition(":")
            out.append(f"{kind}:{name or '*'}" if sep else kind)
        return out

    def check_requirements(self, store, options: dict[str, Any]) -> None:
        """Raise MissingDataError (one sentence) if the run lacks something ``requires`` names."""
        for item in self.requirements(options):
            missing_requirement(store, item)


def missing_requirement(store, item: str) -> None:
    """Raise MissingDataError if ``store`` lacks ``item`` (``kind`` or ``kind:name``)."""
    from arprobe.storage.recordings import KINDS, snapshot_kinds  # the words and options of every kind

    kind, _, name = item.partition(":")
    run = store.path.parent.name
    if kind in snapshot_kinds():
        have = store.recorded(kind)
        if name in ("", "*"):
            if not have:
                raise MissingDataError(
                    f"Run '{run}' recorded no {kind}; record them with {KINDS[kind].option}."
                )
        elif name not in have:
            raise MissingDataError(
                f"Run '{run}' has no {KINDS[kind].words} '{name}' (recorded: {', '.join(have) or 'none'}); "
                f"record it with {KINDS[kind].option}."
            )
    elif kind == "checkpoints":
        try:
            episodes = store.checkpoint_episodes()
        except KeyError:  # a store written without the checkpoints group at all
            episodes = []
        if not len(episodes):
            raise MissingDataError(
                f"Run '{run}' has no checkpoints; record them with {KINDS['checkpoints'].option}."
            )
    elif kind in ("eval", "train_loss", "schedule"):
        if store.completed_episodes < 1:
            raise MissingDataError(f"Run '{run}' has no completed episode yet; let it train at least one.")
    else:  # a plugin author's mistake, so say what is allowed
        raise UserError(
            f"Unknown requirement '{item}'; a probe may require eval, train_loss, checkpoints, "
            "weights:<name>, grads:<name> or activations:<hook>."
        )


def pick_recording(store, kind: str, name: str, prefer: tuple[str, ...] = ()) -> str:
    """``name`` if given, else the first of ``prefer`` the run recorded, else its first recording
    of ``kind`` (raising the reader's error if it has none)."""
    if name:
        return name
    have = store.recorded(kind)
    if not have:
        missing_requirement(store, f"{kind}:*")
    return next((p for p in prefer if p in have), have[0])


def control_store(store):
    """The matched shuffled control of a run (``arprobe run --control shuffle`` writes it to
    ``<run folder>/control/run.h5``), opened read-only as a ``RunStore``; None if the run has none.
    The caller closes it (``with`` works)."""
    # lazy: pulls in h5py, which importing this module does not need
    from arprobe.storage import RunStore

    path = Path(store.path).parent / "control" / "run.h5"
    return RunStore(path) if path.is_file() else None


def describe_weights(store, name: str, paper_uses_all: bool = True) -> str:
    """One line saying which weights a result is about: all of them (sketched or not) or one group,
    and, where the paper measures all weights, that a group is not what it measured."""
    sketch = store.sketch_info("weights", name)
    how = (
        f"a count-sketch of {sketch['full_dim']:,} values into {sketch['dim']:,}"
        if sketch
        else "exact values"
    )
    if name == "all":
        return f"all weights (weights/all, {how})"
    if not paper_uses_all:
        return f"the '{name}' parameter group ({how})"
    return f"the '{name}' parameter group only ({how}); record weights/all to measure every weight"


def coerce_option(value: Any, default: Any, key: str) -> Any:
    """``value`` converted to the type of ``default`` (bool, int, float, str, list of str)."""
    if not isinstance(value, str) or isinstance(default, str):
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"Option '{key}' expects true or false, got {value!r}.")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(default, list) and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if default is not None and not isinstance(value, type(default)):
            raise UserError(f"Option '{key}' expects {type(default).__name__}, got {value!r}.")
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            return parse_bool(text)
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, list):
            return [v.strip() for v in text.split(",") if v.strip()]
    except ValueError:
        pass
    else:
        return text
    raise UserError(f"Option '{key}' expects {type(default).__name__}, got {value!r}.")
