"""Train several models or recipes on the same data and compare them in one table.

The tutorials' own comparison is the example: seed002 trains a CNN and a multilayer
perceptron on MNIST and finds the CNN more accurate and less prone to overfitting
(``cnnlab compare seed002-cnn seed002-mlp``). Every entry trains with the same dataset,
seed and validation split, each into its own run folder; the table reports test
accuracy, parameters, training time and the overfitting gap: accuracy on the training
images minus accuracy on the held-out validation images, both measured after training
with the network in evaluation mode (no dropout).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.models import list_models
from cnnlab.recipes import list_recipes

__all__ = ["compare", "format_table"]


def _entry_config(entry: str, base: TrainConfig) -> TrainConfig:
    """A model id trains with its own recipe; a recipe name with that recipe."""
    if entry in list_recipes():
        return replace(base, recipe=entry, model=None)
    if entry in list_models():
        return replace(base, model=entry, recipe=None)
    raise CnnlabError(
        f"{entry!r} is neither a model nor a recipe (see 'cnnlab models' and 'cnnlab recipes')"
    )


def _slug(entry: str, taken: set[str]) -> str:
    name, n = entry, 1
    while name in taken:
        n += 1
        name = f"{entry}-{n}"
    taken.add(name)
    return name


def compare(
    entries: Sequence[str],
    out: str | Path,
    base: TrainConfig | None = None,
    *,
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train each entry (a model id or recipe name) into ``out/<entry>`` and measure it.

    ``base`` holds options shared by all entries (dataset, epochs, seed, …); options left
    unset come from each entry's own recipe. Returns one row per entry.
    """
    from cnnlab.data import load_dataset
    from cnnlab.runs import train_run
    from cnnlab.train.trainer import split_indices

    if not entries:
        raise CnnlabError("give at least one model or recipe to compare")
    base = base or TrainConfig()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CnnlabError(f"--out {out}: exists and is not a folder")
    configs = [_entry_config(e, base) for e in entries]  # check every name before training
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    for entry, cfg in zip(entries, configs, strict=True):
        if progress:
            print(f"== {entry}", flush=True)
        result = train_run(cfg, out / _slug(entry, taken), data_dir=data_dir, progress=progress)
        trainer, resolved = result.trainer, result.config

        train = load_dataset(result.dataset, "train", data_dir)
        split = resolved.validation_split or 0.0
        if resolved.validation == "split" and split > 0:
            stratified = train.labels if resolved.stratify else None
            keep, held = split_indices(len(train), split, resolved.seed, stratified)
            train_acc = trainer.evaluate((train.images[keep], train.labels[keep]), tta=False)
            val_acc = trainer.evaluate((train.images[held], train.labels[held]), tta=False)
        else:
            train_acc = trainer.evaluate(train, tta=False)
            val_acc = None
        m = result.metrics
        row = {
            "entry": entry,
            "model": resolved.model,
            "run": str(result.path),
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "epochs": m["epochs"],
            "train_seconds": m["train_seconds"],
            "train_accuracy": train_acc["accuracy"],
            "val_accuracy": None if val_acc is None else val_acc["accuracy"],
            "test_accuracy": m["test_accuracy"],
            "test_loss": m["test_loss"],
        }
        reference = row["val_accuracy"] if val_acc is not None else row["test_accuracy"]
        row["gap"] = row["train_accuracy"] - reference
        row["gap_against"] = "validation" if val_acc is not None else "test"
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as an aligned text table, best test accuracy first."""
    header = ("entry", "parameters", "epochs", "train s", "train acc", "val acc", "test acc",
              "gap")  # fmt: skip
    lines = []
    for r in sorted(rows, key=lambda r: -r["test_accuracy"]):
        val = "—" if r["val_accuracy"] is None else f"{100 * r['val_accuracy']:.2f}%"
        gap = f"{100 * r['gap']:+.2f} pt" + ("" if r["gap_against"] == "validation" else " (test)")
        lines.append(
            (
                r["entry"],
                f"{r['parameters']:,}",
                str(r["epochs"]),
                f"{r['train_seconds']:.1f}",
                f"{100 * r['train_accuracy']:.2f}%",
                val,
                f"{100 * r['test_accuracy']:.2f}%",
                gap,
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    note = (
        "gap: accuracy on the training images minus accuracy on the validation images, "
        "both after training, without dropout"
    )
    return "\n".join([fmt(header), rule, *map(fmt, lines), "", note])
