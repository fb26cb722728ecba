"""The ``compare`` command: train several models or recipes on the same data, one table."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from cnnlab.cli.options import add_data_dir, add_threads, fraction, positive_int, set_threads


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
    p.add_argument("--dataset", help="dataset for every entry (default: each entry's recipe)")
    add_data_dir(p)
    p.add_argument("--epochs", type=positive_int, help="epochs (default: each entry's recipe)")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: recipe)")
    p.add_argument("--validation-split", type=fraction, help="held-out fraction (default: recipe)")
    p.add_argument("--seed", type=int, default=0, help="random seed for every entry (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    add_threads(p)
    p.add_argument("--out", metavar="DIR", help="folder for the runs (default runs/compare-<time>)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnlab import atomic
    from cnnlab.compare import compare, format_table
    from cnnlab.config import TrainConfig

    set_threads(args)
    out = Path(args.out or f"runs/compare-{datetime.now():%Y%m%d-%H%M%S}")
    base = TrainConfig(
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_split=args.validation_split,
        seed=args.seed,
        device=args.device,
    )
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
