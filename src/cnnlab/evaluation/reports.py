"""The evaluation's files: confusion matrix, per-class table, misclassified images, JSON."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab import atomic
from cnnlab.errors import CnnlabError
from cnnlab.evaluation.on_test import EvaluationResult
from cnnlab.evaluation.scores import top_losses

TOP_LOSSES = 24
"""How many images ``top-losses.png`` shows by default."""

REPORT_FILES = (
    "confusion.png",
    "confusion.csv",
    "per_class.csv",
    "misclassified.png",
    "top-losses.png",
    "evaluation.json",
)
"""The files :func:`write_reports` writes (``misclassified-2.png`` … when there are more pages)."""


def default_report_dir(runs: Sequence[str | Path]) -> Path:
    """Where reports go by default: the run folder, or ``ensemble/`` in the first run's."""
    if not runs:
        raise CnnlabError("no run folder given")
    first = Path(runs[0])
    return first if len(runs) == 1 else first / "ensemble"


def check_report_dir(out: str | Path) -> Path:
    """Fail early, with a :class:`CnnlabError`, if reports cannot be written into ``out``.

    ``out`` may exist as a folder or not yet exist; nothing is created here.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CnnlabError(f"report folder {out} exists and is not a folder; choose another --out")
    parent = out
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise CnnlabError(
            f"cannot make report folder {out}: {parent} is a file; choose another --out"
        )
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise CnnlabError(
            f"cannot write reports into {out}: {parent} is not writable; "
            "choose another --out, or --no-reports"
        )
    return out


@dataclass
class Reports:
    """What :func:`write_reports` wrote."""

    folder: Path
    paths: list[Path]
    """Every file written, in the order written."""
    misclassified_total: int
    misclassified_shown: int
    """How many misclassified images the pages show (fewer than the total when capped)."""
    pages: int

    @property
    def capped(self) -> bool:
        """Whether some misclassified images were left off the pages."""
        return self.misclassified_shown < self.misclassified_total


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def write_reports(
    result: EvaluationResult,
    out: str | Path,
    *,
    per_page: int = 200,
    max_pages: int | None = 20,
    top: int = TOP_LOSSES,
) -> Reports:
    """Write the evaluation of ``result.final`` (the run, or the ensemble) into ``out``.

    Files, each written to a temporary name and renamed into place:
    ``confusion.png`` (heat map with counts), ``confusion.csv`` (counts, header row of
    class names, first column the true class), ``per_class.csv`` (class, precision,
    recall, f1, support), ``misclassified.png`` and ``misclassified-2.png``, … (every
    misclassified test image, ``per_page`` a page, at most ``max_pages`` pages; grouped
    by true, then predicted class, most confident first), ``top-losses.png`` (the
    ``top`` misclassified images with the highest loss: the mistakes the model was surest
    of) and ``evaluation.json`` (accuracy, loss, per-class figures, confusion matrix, the
    misclassified images, the top losses, the runs and the dataset). Pages left from an
    earlier, longer report are removed. Long class names are shortened in the pictures.
    """
    from cnnlab.viz.evaluation_plots import page_path, paginate, plot_confusion_matrix, plot_tiles
    from cnnlab.viz.tiles import short_name

    if top < 1:
        raise ValueError(f"top-losses.png needs at least 1 image, got {top}")
    folder = check_report_dir(out)
    final = result.final
    classes = final.classes
    names = [short_name(c) for c in classes]
    worst = top_losses(final.misclassified, top)
    ordered = sorted(final.misclassified, key=lambda m: (m.true, m.predicted, -m.confidence))
    pages = paginate(ordered, per_page, max_pages)
    shown = sum(len(p) for p in pages)
    split = result.test.split  # "test", or "all" for another dataset's every image
    heading = f"{final.name} on {result.dataset} {split}"
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        written.append(
            plot_confusion_matrix(final.confusion, classes, folder / "confusion.png", heading)
        )
        cm_rows = [["true\\predicted", *classes]]
        cm_rows += [[c, *row] for c, row in zip(classes, final.confusion.tolist(), strict=True)]
        atomic.write_text(folder / "confusion.csv", _csv(cm_rows))
        written.append(folder / "confusion.csv")
        pc_rows: list[list[Any]] = [["class", "precision", "recall", "f1", "support"]]
        pc_rows += [
            [
                r["class"],
                f"{r['precision']:.6f}",
                f"{r['recall']:.6f}",
                f"{r['f1']:.6f}",
                r["support"],
            ]
            for r in final.per_class()
        ]
        atomic.write_text(folder / "per_class.csv", _csv(pc_rows))
        written.append(folder / "per_class.csv")
        page_files = []
        for number, page in enumerate(pages, start=1):
            idx = torch.tensor([m.index for m in page])
            first = (number - 1) * per_page + 1
            title = (
                f"{heading}: misclassified images {first}–{first + len(page) - 1} of "
                f"{len(ordered):,} (page {number} of {len(pages)}"
                + (f", capped at {max_pages} pages" if shown < len(ordered) else "")
                + f"); each: true→predicted, confidence, {split} index"
            )
            page_files.append(
                plot_tiles(
                    result.test.images[idx],
                    [f"{names[m.true]}→{names[m.predicted]} {m.confidence:.2f}" for m in page],
                    page_path(folder, "misclassified", number),
                    notes=[f"#{m.index}" for m in page],
                    title=title,
                )
            )
        if not pages:
            page_files.append(_no_errors_page(folder / "misclassified.png", heading))
        written += page_files
        if worst:
            written.append(
                plot_tiles(
                    result.test.images[torch.tensor([m.index for m in worst])],
                    [f"true {names[m.true]} / pred {names[m.predicted]}" for m in worst],
                    folder / "top-losses.png",
                    notes=[f"p={m.confidence:.2f}  loss {m.loss:.2f}  #{m.index}" for m in worst],
                    title=f"{heading}: the {len(worst)} most confident mistakes (highest loss "
                    f"first); each: true / predicted class, its probability, loss, {split} index",
                )
            )
        else:
            written.append(_no_errors_page(folder / "top-losses.png", heading))
        report = {
            "model": final.name,
            "runs": [{"run": e.name, "accuracy": e.accuracy, "loss": e.loss} for e in result.runs],
            "dataset": result.dataset,
            "split": split,
            "test_samples": final.num_samples,
            "classes": list(classes),
            **final.to_dict(misclassified=True),
            "misclassified_pages": [p.name for p in page_files],
            "misclassified_shown": shown,
            "top_losses": [
                {
                    "index": m.index,
                    "true": classes[m.true],
                    "predicted": classes[m.predicted],
                    "probability": round(m.confidence, 6),
                    "loss": round(m.loss, 6),
                }
                for m in worst
            ],
            "top_losses_page": "top-losses.png",
        }
        atomic.write_json(folder / "evaluation.json", report)
        written.append(folder / "evaluation.json")
        _remove_stale_pages(folder, max(1, len(pages)))
    except OSError as exc:
        raise CnnlabError(
            f"cannot write reports into {folder}: {exc.strerror or exc}; choose another --out"
        ) from None
    return Reports(folder, written, len(ordered), shown, len(pages))


def _no_errors_page(path: Path, heading: str) -> Path:
    from matplotlib.figure import Figure

    from cnnlab.viz.figures import save_figure

    fig = Figure(figsize=(4.5, 0.6))
    fig.text(0.5, 0.5, f"{heading}: no misclassified images", ha="center", va="center")
    return save_figure(fig, path, dpi=110, tight=True)


def _remove_stale_pages(folder: Path, pages: int) -> None:
    """Delete ``misclassified-N.png`` pages beyond ``pages`` left by an earlier report."""
    for old in folder.glob("misclassified-*.png"):
        number = old.stem.removeprefix("misclassified-")
        if number.isdigit() and int(number) > pages:
            old.unlink(missing_ok=True)
