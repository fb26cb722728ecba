"""Option types and options shared by several commands.

The ``type=`` functions turn a bad value into argparse's one-line usage error (exit 2),
naming the option and the value.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from cnnlab.errors import CnnlabError


def whole_number(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[minimum, maximum]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in {minimum}..{maximum}, got {value}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = whole_number(1)


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def model_args(pairs: list[str]) -> dict[str, Any]:
    """Parse ``--arg key=value`` pairs; values are read as JSON when they can be
    (``width=48`` is a number, ``dropout=0.3`` too, ``name=x`` a string)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CnnlabError(f"--arg expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The repeatable ``--arg KEY=VALUE`` option (model factory arguments)."""
    p.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model argument, e.g. --arg width=48 (repeatable)",
    )


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """The ``--data-dir`` option every data-reading command shares."""
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder holding the dataset files (default: $CNNLAB_DATA, then the "
        "user cache, then download)",
    )


def add_threads(p: argparse.ArgumentParser) -> None:
    """The ``--threads`` option of commands that compute on the CPU."""
    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for torch (default: one per core); 1 is faster when other "
        "programs keep the cores busy",
    )


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` when given."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
