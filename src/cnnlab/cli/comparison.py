"""The ``compare`` command: train several models or recipes on the same data, one table."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from cnnlab.cli.config_flags import add_config_flags, config_from_args
from cnnlab.cli.options import add_data_dir, add_threads, set_threads


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``compare`` command."""
    p = sub.add_parser(
        "compare",
        help="train several models or recipes on the same data and compare them",
        description="Train each MODEL_OR_RECIPE (a model id, trained with its own recipe, or "
        "a recipe name) with the same dataset, seed and validation split, and print one "
        "table: parameters, training time, train / validation / test accuracy and the "
        "overfitting gap. The tutorial's comparison: cnnlab compare seed002-cnn seed002-mlp",
    )
    p.add_argument("entries", nargs="+", metavar="MODEL_OR_RECIPE")
    add_data_dir(p)
    add_threads(p)
    p.add_argument("--out", metavar="DIR", help="folder for the runs (default runs/compare-<time>)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    options = p.add_argument_group(
        "training options",
        "given here, an option applies to every entry; left out, each entry takes its own recipe's",
    )
    add_config_flags(options, exclude={"model", "recipe", "model_args"})  # type: ignore[arg-type]
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnlab import atomic
    from cnnlab.compare import compare, format_table

    set_threads(args)
    out = Path(args.out or f"runs/compare-{datetime.now():%Y%m%d-%H%M%S}")
    base = config_from_args(args)
    rows = compare(args.entries, out, base, data_dir=args.data_dir, progress=not args.quiet)
    atomic.write_json(out / "comparison.json", rows)
    table = format_table(rows)
    atomic.write_text(out / "comparison.txt", table + "\n")
    if args.json:
        print(json.dumps(rows))
    else:
        print(table)
        print(f"runs and comparison.json in {out}")
    return 0
