"""`arprobe` entry point: builds the parser from one module per subcommand and dispatches.

Shared here for every command: a did-you-mean for a mistyped flag (``--dryrun``), ``--quiet`` /
``--verbose`` for run, analyze and sweep, and the re-run hint after Ctrl-C stops a sweep.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import logging
import os
import shlex
import sys

from arprobe import __version__
from arprobe.errors import UserError

SUBCOMMANDS = ("run", "info", "analyze", "probes", "sweep", "pretrain")
VOLUME_COMMANDS = ("run", "analyze", "sweep")  # the commands with --quiet / --verbose


def build_parser() -> argparse.ArgumentParser:
    # lazy: keeps `arprobe --help` fast
    import importlib

    parser = argparse.ArgumentParser(
        prog="arprobe", description="Cyclic fine-tuning, recorded and probed (anticipatory recovery)."
    )
    parser.add_argument("--version", action="version", version=f"arprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"arprobe.cli.{name}")
        command = module.command_parser(sub)
        if name in VOLUME_COMMANDS:
            add_volume_flags(command)
        if name == "run":
            command.add_argument(
                "--config",
                metavar="FILE.toml",
                help="the config file (as the first argument): e.g. a run's config.toml, to train it again "
                "with another --name",
            )
    return parser


def add_volume_flags(p: argparse.ArgumentParser) -> None:
    volume = p.add_mutually_exclusive_group()
    volume.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only errors and the final result line; no progress bars",
    )
    volume.add_argument(
        "-v", "--verbose", action="store_true", help="more detail: the library's informational messages too"
    )


def command_flags(parser: argparse.ArgumentParser, command: str) -> list[str]:
    """The long flags of a subcommand (for did-you-mean)."""
    for action in parser._subparsers._group_actions:  # argparse keeps subparsers only here
        sub = action.choices.get(command)
        if sub is not None:
            return [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    return []


def suggest_flag(token: str, flags: list[str]) -> str:
    """The flag ``token`` (``--dryrun``, ``--dry_run=x``) most likely meant, or ""."""
    if not token.startswith("--"):
        return ""
    bare = token.split("=", 1)[0]

    def squash(s: str) -> str:
        return s.lstrip("-").replace("-", "").replace("_", "").lower()

    same = [f for f in flags if squash(f) == squash(bare)]
    if same:
        return same[0]
    close = difflib.get_close_matches(bare, flags, n=1, cutoff=0.7)
    return close[0] if close else ""


def unknown_flags_message(tokens: list[str], flags: list[str]) -> str:
    hints = [f"{t} (did you mean {s}?)" if (s := suggest_flag(t, flags)) else t for t in tokens]
    return f"unrecognized arguments: {' '.join(hints)}"


def check_near_misses(extra: list[str], flags: list[str]) -> None:
    """For a command that takes free ``--key value`` options (run): a token that is no config key
    but is a near miss of the command's own flag is refused with the flag's name."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.trainer.config import resolve_key

    for token in extra:
        suggestion = suggest_flag(token, flags)
        if not suggestion:
            continue
        try:
            resolve_key(token[2:].split("=", 1)[0])
        except UserError:
            raise UserError(
                f"Unknown option '{token.split('=', 1)[0]}'. Did you mean '{suggestion}'?"
            ) from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    flags = command_flags(parser, args.command)
    if extra and not getattr(args, "accepts_extra", False):
        parser.error(unknown_flags_message([t for t in extra if t.startswith("-")] or extra, flags))
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    if quiet and hasattr(args, "no_progress"):
        args.no_progress = True
    if verbose:
        logging.getLogger("arprobe").setLevel(logging.INFO)
    shown = io.StringIO()
    try:
        if getattr(args, "accepts_extra", False):
            check_near_misses(extra, flags)
        extra = with_config_file(args, extra)
        with contextlib.redirect_stdout(shown) if quiet else contextlib.nullcontext():
            code = int(args.func(args, extra) or 0)
        if args.command == "run" and args.dry_run and not args.resume and code == 0:
            warn_existing_target(args, extra)
    except UserError as exc:
        print(f"arprobe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"arprobe {args.command}: interrupted", file=sys.stderr)
        if args.command == "sweep":
            again = shlex.join(["arprobe", *(sys.argv[1:] if argv is None else argv)])
            print(
                f"To continue the sweep, run the same command again (complete runs are skipped, "
                f"interrupted ones resume): {again}",
                file=sys.stderr,
            )
        code, args.exit_at_once = 130, args.command == "run"  # a run's store and lock are closed by now
    if quiet:  # not after an error: its sentence on stderr is all there is to say
        print(result_line(shown.getvalue()), end="")
    if argv is None and getattr(args, "exit_at_once", False):
        exit_at_once(code)
    return code


def with_config_file(args, extra: list[str]) -> list[str]:
    """`arprobe run --config FILE` is `arprobe run FILE`."""
    config = getattr(args, "config", None)
    if not config:
        return extra
    if extra and not extra[0].startswith("--"):
        raise UserError(f"Give the config file once, as --config {config} or as the first argument.")
    return [config, *extra]


def warn_existing_target(args, extra: list[str]) -> None:
    """`run --dry-run` into a folder that already holds a run: say what the real run would do."""
    # lazy: keeps `arprobe --help` fast
    from arprobe.cli.run import split_arguments

    # lazy: keeps `arprobe --help` fast
    from arprobe.trainer.config import load_config

    config_path, overrides = split_arguments(extra)
    run_dir = load_config(config_path, overrides).run_dir
    store = run_dir / "run.h5"
    if store.exists() and args.overwrite:
        what = "the real run would replace it (--overwrite)"
    elif store.exists():
        what = (
            "the real run would refuse it: pass --overwrite to replace it, or continue it with "
            f"`arprobe run --resume {run_dir}`, or choose another --name"
        )
    elif run_dir.exists():
        what = "it holds no run store; the real run would write into it"
    else:
        return
    print(f"warning: the run folder '{run_dir}' already exists; {what}.", file=sys.stderr)


def result_line(output: str) -> str:
    """What --quiet prints of a command's output: the finding (run, analyze) when there is one, else
    the last line that is neither indented detail nor a hint (sweep: "N of M runs complete ...")."""
    lines = [line for line in output.splitlines() if line.strip()]
    findings = [line for line in lines if line.startswith("finding:")]
    results = [line for line in lines if not line.startswith(("next:", "note:", " "))]
    pick = (findings[:1] or results[-1:] or lines[-1:]) if lines else []
    return "".join(f"{line}\n" for line in pick)


def exit_at_once(code: int) -> None:
    """End the process now, its files closed and its output flushed, without the interpreter's
    teardown of torch and transformers: measured at 4-10 s on a loaded 2-core machine, time that a
    stopped run may not have (SLURM sends SIGKILL 30 s after SIGTERM). Only for the program itself
    (``argv`` None): a caller of ``main`` in the same process keeps its interpreter."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
