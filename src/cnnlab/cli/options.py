"""Options that several commands share and that are not training options (those come
from :mod:`cnnlab.cli.config_flags`).

The ``type=`` functions turn a bad value into argparse's one-line usage error (exit 2),
naming the option and the value.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


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


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """The ``--data-dir`` option every data-reading command shares."""
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder holding the dataset files (default: $CNNLAB_DATA, then the "
        "user cache, then download)",
    )


def threads_value(text: str) -> int | str:
    """``auto`` or a positive thread count."""
    return "auto" if text == "auto" else positive_int(text)


def add_threads(p: argparse.ArgumentParser) -> None:
    """The ``--threads`` option of commands that compute on the CPU."""
    p.add_argument(
        "--threads",
        type=threads_value,
        default="auto",
        metavar="auto|N",
        help="CPU threads for torch (default auto: chosen by timing the steps, and again "
        "when other programs load the machine); a fixed N gives bit-identical runs",
    )


def set_threads(args: argparse.Namespace) -> None:
    """Apply ``--threads`` to this process."""
    from cnnlab.speed.threads import set_threads as apply

    apply(getattr(args, "threads", "auto"))
