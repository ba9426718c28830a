"""The ``refsam`` command line (one module per group of sub-commands: train, cases, apps, bank).

Each sub-command lives in a module that exposes ``add_parser(subparsers)``; the parser it adds sets
``func`` to a callable taking the parsed arguments and returning an exit status. Errors the user can fix
(bad input, missing files) end with a one-line message and exit status 2, never a traceback. Every
command with a long loop takes ``--progress`` / ``--no-progress`` (`cases.add_progress_argument`): progress
lines on stderr, by default where stderr is a terminal, the library's rule for ``progress=None``.

Building the parser imports no numerical code (the choices it offers are in `choices`; each command
imports what it runs), so ``refsam --help`` and ``refsam --version`` answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from ..version import __version__

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
    parser.add_argument("--version", action="version", version=f"refsam {__version__}")
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
    except (ValueError, OSError, FloatingPointError, KeyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            message = f"{type(exc).__name__}: {message}"
        print(f"refsam {args.command}: error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"refsam {args.command}: error: out of memory: the sizes asked for (--n, --steps, --hidden, "
              f"--features) need more memory than this machine has; lower them", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"refsam {args.command}: error: an input is nested too deeply to read", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
