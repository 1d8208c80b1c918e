"""The autoloss command line.

Each command lives in its own module exposing register(subparsers); the parser built there sets
func (called with the parsed namespace, returns an exit code). User errors (AutolossError) are
caught here, once, and printed as one line. Logging is configured here, once
(:func:`autoloss.logs.configure`): progress on stdout, warnings and errors on stderr;
``--quiet`` (warnings and errors only) and ``--verbose`` (debug records too), before or after
the command's name.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Before torch loads: OpenMP threads that spin-wait collapse throughput when another process
# shares the cores; passive waiting costs some speed on an idle machine (both measured:
# docs/benchmarks.md, "Kernels"). The environment's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from autoloss import __version__, logs
from autoloss.errors import AutolossError, out_of_memory

# Modules that add sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "autoloss.commands.data",  # prepare, synth
    "autoloss.commands.train",  # train, evaluate, predict, export
    "autoloss.commands.experiments",  # compare, report, demo
)

#: The first lines of ``autoloss --help`` (plain text: argparse prints it as it is).
DESCRIPTION = (
    "Train recommender models (CTR prediction, rating classification) with an automatically "
    "searched loss function (AutoLoss) or a fixed one, compare loss methods over seeds with "
    "significance tests, and write reports. 'autoloss COMMAND --help' describes a command."
)


def terminal_safe(text: str) -> str:
    """``text`` with control characters (newlines, escape sequences, ...) written as escapes,
    so that a path or value holding them cannot break the one-line message or drive the
    terminal."""
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line (no usage dump) on a bad option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"autoloss {self.prog.split()[-1]}: error: {terminal_safe(message)}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autoloss", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"autoloss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _logging_flags(parser, False)
    for command in sub.choices.values():  # after the command's name too; it does not reset them
        _logging_flags(command, argparse.SUPPRESS)
    return parser


def _logging_flags(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_argument_group("output").add_mutually_exclusive_group()
    group.add_argument(
        "--quiet", action="store_true", default=default, help="show warnings and errors only"
    )
    group.add_argument(
        "--verbose", action="store_true", default=default, help="show debug messages too"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logs.configure(logs.level_of(quiet=args.quiet, verbose=args.verbose))
    try:
        return int(args.func(args) or 0)
    except AutolossError as exc:
        sys.stderr.write(f"autoloss {args.command}: error: {terminal_safe(str(exc))}\n")
        return 2
    except OSError as exc:
        # A storage fault a writer did not name (autoloss.files names those it sees): still
        # one line, naming the file where the system said which.
        from autoloss.files import is_storage_error, storage_reason

        if not is_storage_error(exc):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        reason = f"cannot write: {storage_reason(exc)}"
        sys.stderr.write(f"autoloss {args.command}: error: {terminal_safe(where + reason)}\n")
        return 2
    except (MemoryError, RuntimeError) as exc:  # an allocation failure is one line too
        error = out_of_memory(exc)
        if error is None:
            raise
        sys.stderr.write(f"autoloss {args.command}: error: {error}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"autoloss {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
