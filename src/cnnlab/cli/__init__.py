"""The ``cnnlab`` command line: thin wrappers that parse options and call the library.

Each command group lives in its own module with a ``register(subparsers)`` function.
User mistakes (:class:`cnnlab.errors.CnnlabError`) become one line on stderr and exit
status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from cnnlab.errors import CnnlabError

# Modules under cnnlab.cli that add sub-commands, in the order they appear in --help.
COMMAND_MODULES = ("workflow", "comparison", "workbench", "serving", "export")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options as a one-line error with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``cnnlab`` argument parser."""
    from cnnlab import __version__

    parser = _Parser(
        prog="cnnlab",
        description="Convolutional networks for digits: learn, train, explain, serve.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"cnnlab.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cnnlab`` console command."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command as given, for a launcher that starts it again
    from cnnlab.speed import tune_cpu_allocator

    tune_cpu_allocator()  # measured 25-40% faster CPU steps; CNNLAB_TUNE_MALLOC=0 disables
    try:
        result = args.func(args)
    except CnnlabError as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``cnnlab models | head``): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
