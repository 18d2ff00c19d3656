"""`arprobe run [CONFIG.toml] [--key value ...]`: train, record, write run.h5, print the headline numbers."""

from __future__ import annotations

import argparse
import sys

from arprobe.errors import UserError


def command_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run",
        usage="arprobe run [CONFIG.toml] [--key value ...] [--overwrite] [--dry-run] [--no-progress]\n"
        "       arprobe run [CONFIG.toml] [--key value ...] --dry-run [--plan-device NAME]\n"
        "       arprobe run --help-config\n"
        "       arprobe run --resume RUN [--trust-remote-code]",
        help="train on T documents in order, record into runs/<name>/run.h5",
        description="Train on T documents in a fixed (or shuffled) order, M steps each, for E epochs, "
        "recording the eval matrix and more into one HDF5 store. Any config key can be given as "
        "--key value (full dotted path like --optim.lr, or the leaf name like --lr when unique).",
        epilog="Run `arprobe run --help-config` for every configuration key with its default.",
    )
    # The optional CONFIG.toml is taken from the free arguments (see split_arguments): as an
    # argparse positional it would swallow the value of an unknown "--key value" pair.
    p.add_argument("--overwrite", action="store_true", help="replace an existing store of the same name")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run the model's own code (model.trust_remote_code); a store never turns "
        "this on, so --resume asks for it again",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an unfinished run (its folder or run.h5) from its newest resume checkpoint",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the run plan and the store-size estimate, train nothing"
    )
    p.add_argument(
        "--plan-device",
        default="",
        metavar="NAME",
        help="with --dry-run: plan memory and time for this GPU from its datasheet (h100, h200, a100-40, "
        "a100-80, l40s, v100, rtx4090) or cpu, instead of this machine's device (measured)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--help-config", action="store_true", help="list every configuration key and exit")
    p.set_defaults(func=run_command, accepts_extra=True)
    return p


def split_arguments(extra: list[str]) -> tuple[str | None, dict[str, str]]:
    """(config path or None, overrides) from the free arguments."""
    if extra and not extra[0].startswith("--"):
        return extra[0], parse_overrides(extra[1:])
    return None, parse_overrides(extra)


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """``--key value``, ``--key=value`` and bare ``--flag`` (true) into a dict, in order."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.trainer.config import all_keys, resolve_key

    overrides: dict[str, str] = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or token == "--":
            raise UserError(f"Unexpected argument '{token}'; options look like --key value.")
        key, eq, value = token[2:].partition("=")
        if not eq:
            path = resolve_key(key)
            if all_keys()[path] is bool and (i + 1 >= len(extra) or extra[i + 1].startswith("--")):
                value = "true"
            elif i + 1 >= len(extra):
                raise UserError(f"Option '--{key}' needs a value.")
            else:
                i += 1
                value = extra[i]
        overrides[key] = value
        i += 1
    return overrides


def print_finding(store_path) -> None:
    """The run's finding and key numbers with intervals, read back from its store, then a blank line."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.cli.analyze import print_finding as print_store_finding
    from arprobe.storage import RunStore

    with RunStore(store_path) as store:
        print_store_finding(store)
    print()


def run_command(args, extra: list[str]) -> int:
    # lazy: keeps `arprobe --help` fast
    from arprobe.trainer.config import describe_keys, load_config

    if args.help_config:
        print("Configuration keys (--key value, or in a TOML file by section):")
        print(describe_keys())
        return 0
    # lazy: keeps `arprobe --help` fast
    from arprobe.probes.registry import probes_enabled
    from arprobe.trainer.control import resume_with_control, run_with_control
    from arprobe.trainer.loop import format_summary
    from arprobe.trainer.plan import plan

    if args.resume:
        if extra:
            raise UserError(
                "--resume continues a run with its stored config; give no other options "
                "(only --trust-remote-code, which a store never grants)."
            )
        both = resume_with_control(
            args.resume, progress=not args.no_progress, trust_remote_code=args.trust_remote_code
        )
    else:
        config_path, overrides = split_arguments(extra)
        if args.trust_remote_code:
            overrides["model.trust_remote_code"] = "true"
        cfg = load_config(config_path, overrides)
        if args.dry_run:
            planned = plan(cfg, probes_enabled, plan_device=args.plan_device)
            print(planned.text)
            if cfg.control:
                print("control: the matched shuffled control is trained after the run, into <run>/control/ "
                      "(the same again: twice the time and the store size above)")  # fmt: skip
            if planned.refusal:  # the plan is printed, and the run it describes refused
                raise UserError(planned.refusal)
            return 0
        if args.plan_device:
            raise UserError("--plan-device plans for another device; use it with --dry-run.")
        both = run_with_control(cfg, progress=not args.no_progress, overwrite=args.overwrite)
    result = both.run
    if result.status == "complete":  # the finding first (report.summary.console_lines)
        print_finding(result.path)
    print(format_summary(result))
    if both.control is not None:
        print("\ncontrol (shuffled, same seed, documents and initialisation):")
        print(format_summary(both.control))
        if both.control.status != "complete":
            result = both.control  # its stop is the command's exit below
    if result.status == "diverged":
        print(f"arprobe run: error: the run diverged: {result.stop_reason}.", file=sys.stderr)
    if result.status == "failed":
        print(f"arprobe run: error: the run stopped: {result.stop_reason}.", file=sys.stderr)
    if result.status == "stopped" and result.signal is not None:
        print(f"arprobe run: {result.stop_reason}.", file=sys.stderr)
        args.exit_at_once = True  # the store and its lock are closed: skip the interpreter's teardown
        return 128 + int(result.signal)  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    return 0 if result.status == "complete" else 1
