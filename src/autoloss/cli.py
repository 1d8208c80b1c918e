"""The autoloss command line.

Each command lives in its own module exposing register(subparsers); the parser built there sets
func (called with the parsed namespace, returns an exit code). User errors (AutolossError) are
caught here, once, and printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Before torch loads: OpenMP threads that spin-wait collapse throughput when another process
# shares the cores (measured on a busy 2-core box: 5.8k rows/s spinning vs 89k passive for the
# same DeepFM run). Passive waiting costs little on an idle machine; users can still override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from autoloss import __version__
from autoloss.errors import AutolossError

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


class _Parser(argparse.ArgumentParser):
    """argparse that exits with code 2 and one line (no usage dump) on a bad option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"autoloss {self.prog.split()[-1]}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autoloss", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"autoloss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AutolossError as exc:
        sys.stderr.write(f"autoloss {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"autoloss {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
