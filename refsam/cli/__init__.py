"""The ``refsam`` command line (one module per group of sub-commands: train, cases, apps, bank).

Each sub-command lives in a module that exposes ``add_parser(subparsers)``; the parser it adds sets
``func`` to a callable taking the parsed arguments and returning an exit status. Errors the user can fix
(bad input, missing files) end with a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

# Modules that contribute sub-commands, in the order they appear in --help.
COMMAND_MODULES = (
    "refsam.cli.train",
    "refsam.cli.cases",
    "refsam.cli.apps",
    "refsam.cli.bank",
)


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), exit status 2; sub-parsers inherit it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="refsam",
        description="Reference data attribution for Sharpness-Aware Minimization (SAM).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FloatingPointError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"refsam {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
