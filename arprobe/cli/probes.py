"""`arprobe probes [NAME]`: list the installed probes (built-in and plugins), or one probe's options."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap

BUILT_IN = "arprobe"  # the distribution that declares the built-in probes


def command_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "probes",
        help="list probes: name, description, what they need from a run",
        description="List every installed probe (entry-point group arprobe.probes), "
        "or show one probe's options with their defaults.",
    )
    p.add_argument("name", nargs="?", help="show this probe's options")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=probes_command)
    return p


def probes_command(args, extra) -> int:
    # lazy: keeps `arprobe --help` fast
    from arprobe.probes.registry import default_registry

    registry = default_registry()
    if args.name:
        return _show_one(registry, args.name)
    rows = registry.describe()
    for line in registry.conflicts:  # refused names are broken rows, warned about below
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = shutil.get_terminal_size((120, 20)).columns
    name_w = max([len(r["name"]) for r in rows] + [4])
    req_w = max([len(_requires(r)) for r in rows] + [8])
    desc_w = max(30, width - name_w - req_w - 6)
    print(f"{'name':<{name_w}}  {'requires':<{req_w}}  description")
    for r in rows:
        text = r["description"] if not r["error"] else f"BROKEN: {r['error']}"
        if r["source"] != BUILT_IN:  # a user should see at a glance which probes are not arprobe's own
            text = f"{text} [third-party: {r['source']}]"
        lines = textwrap.wrap(text, desc_w) or [""]
        print(f"{r['name']:<{name_w}}  {_requires(r):<{req_w}}  {lines[0]}")
        for more in lines[1:]:
            print(f"{'':<{name_w}}  {'':<{req_w}}  {more}")
    broken = [r for r in rows if r["error"]]
    for r in broken:
        print(f"warning: {r['error']}", file=sys.stderr)
    # A broken third-party plugin is listed as broken; the others still work, so this is not a failure.
    note = f", {len(broken)} broken (listed above)" if broken else ""
    print(f"\n{len(rows) - len(broken)} probe(s){note}; `arprobe probes NAME` shows one probe's options.")
    return 0


def _requires(row: dict) -> str:
    if row["error"]:
        return "?"
    if not row["requires"]:
        return "nothing (no run needed)" if not row["needs_store"] else "a run"
    return ", ".join(row["requires"])


def _show_one(registry, name: str) -> int:
    probe = registry.get(name)
    print(f"{name}: {probe.description}")
    print(f"  from:     {registry.source(name)}")
    print(f"  requires: {', '.join(probe.requires) or ('nothing' if not probe.needs_store else 'a run')}")
    if probe.multi_run:
        print("  accepts several runs at once (arprobe analyze RUN1 RUN2 ...)")
    if not probe.options:
        print("  options:  none")
        return 0
    print(f"  options (--option {name}.KEY=VALUE, or a [{name}] section in --config):")
    key_w = max(len(k) for k in probe.options)
    for key, default in probe.options.items():
        help_text = probe.option_help.get(key, "")
        print(f"    {key:<{key_w}}  = {default!r:<10}  {help_text}")
    return 0
