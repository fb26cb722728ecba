"""Evaluation of one or several runs on a test split, with their ensemble.

The numbers a careful practitioner looks at after the accuracy: the confusion matrix
(rows are the true class, columns the predicted one), precision, recall, F1 and
support per class, and the list of misclassified test images with the confidence of
each wrong prediction. Everything is computed with tensor operations over the whole
test split::

    from cnnlab.evaluation import evaluate_on_test, write_reports
    result = evaluate_on_test(["runs/s0"])
    print(result.final.accuracy, result.final.per_class()[0])
    write_reports(result, "runs/s0")      # confusion.png, per_class.csv, ...
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from cnnlab import atomic
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.data import ImageData


def confusion_matrix(
    labels: torch.Tensor, predictions: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs: a ``K×K`` int64 matrix.

    Row ``i`` holds the samples whose true class is ``i``, column ``j`` those
    predicted as ``j``; the diagonal holds the correct predictions.
    """
    labels = torch.as_tensor(labels).long().flatten().cpu()
    predictions = torch.as_tensor(predictions).long().flatten().cpu()
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.numel()} labels but {predictions.numel()} predictions")
    for name, t in (("labels", labels), ("predictions", predictions)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got {t.min()}..{t.max()}")
    counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


@dataclass(frozen=True)
class ClassScores:
    """Per-class figures from a confusion matrix; each a length-``K`` tensor."""

    precision: torch.Tensor
    """Of the samples predicted as the class, the fraction that belong to it (0 if none)."""
    recall: torch.Tensor
    """Of the samples of the class, the fraction predicted as it (0 if none)."""
    f1: torch.Tensor
    """Harmonic mean of precision and recall, ``2·TP / (2·TP + FP + FN)`` (0 if undefined)."""
    support: torch.Tensor
    """Number of samples of the class (int64)."""


def class_scores(confusion: torch.Tensor) -> ClassScores:
    """Precision, recall, F1 and support of every class of a confusion matrix.

    Undefined ratios (a class never predicted, or absent) are 0, as scikit-learn's
    ``precision_recall_fscore_support(..., zero_division=0)`` reports them.
    """
    cm = torch.as_tensor(confusion).double()
    tp = cm.diagonal()
    predicted = cm.sum(0)
    support = cm.sum(1)

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))

    return ClassScores(
        precision=ratio(tp, predicted),
        recall=ratio(tp, support),
        f1=ratio(2 * tp, predicted + support),
        support=support.long(),
    )


@dataclass(frozen=True)
class Misclassified:
    """One wrongly predicted test image."""

    index: int
    """Position in the test split."""
    true: int
    """True class index."""
    predicted: int
    """Predicted class index."""
    confidence: float
    """Probability the model gave its (wrong) prediction."""


def find_misclassified(probs: torch.Tensor, labels: torch.Tensor) -> list[Misclassified]:
    """Every sample whose most probable class is not its label, in test-set order."""
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    return [
        Misclassified(i, t, p, c)
        for i, t, p, c in zip(
            wrong.tolist(),
            labels[wrong].tolist(),
            predicted[wrong].tolist(),
            confidence[wrong].tolist(),
            strict=True,
        )
    ]


@dataclass
class Evaluation:
    """The test-split figures of one model: a run, or the ensemble of several."""

    name: str
    """The run folder, or ``"ensemble of N"``."""
    classes: tuple[str, ...]
    accuracy: float
    loss: float
    """Mean negative log-likelihood of the true class."""
    confusion: torch.Tensor
    """``K×K`` counts, rows true class, columns predicted class."""
    scores: ClassScores
    misclassified: list[Misclassified]

    @property
    def num_samples(self) -> int:
        """How many test samples were evaluated."""
        return int(self.confusion.sum())

    def per_class(self) -> list[dict[str, Any]]:
        """One row per class: class, precision, recall, f1, support."""
        s = self.scores
        return [
            {
                "class": name,
                "precision": float(s.precision[k]),
                "recall": float(s.recall[k]),
                "f1": float(s.f1[k]),
                "support": int(s.support[k]),
            }
            for k, name in enumerate(self.classes)
        ]

    def to_dict(self, misclassified: bool = False) -> dict[str, Any]:
        """Plain-JSON figures; with ``misclassified``, the list of wrong predictions too."""
        out: dict[str, Any] = {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "misclassified_count": len(self.misclassified),
            "per_class": self.per_class(),
        }
        if misclassified:
            out["confusion"] = self.confusion.tolist()
            out["misclassified"] = [
                {
                    "index": m.index,
                    "true": self.classes[m.true],
                    "predicted": self.classes[m.predicted],
                    "confidence": round(m.confidence, 6),
                }
                for m in self.misclassified
            ]
        return out


def evaluate_probabilities(
    probs: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], name: str = ""
) -> Evaluation:
    """All the figures of :class:`Evaluation` from class probabilities (``N×K``) and labels."""
    probs = torch.as_tensor(probs).float().cpu()
    labels = torch.as_tensor(labels).long().cpu()
    classes = tuple(str(c) for c in classes)
    if probs.dim() != 2 or probs.shape != (labels.numel(), len(classes)):
        raise ValueError(
            f"probabilities of shape {tuple(probs.shape)} do not fit "
            f"{labels.numel()} labels and {len(classes)} classes"
        )
    predicted = probs.argmax(1)
    cm = confusion_matrix(labels, predicted, len(classes))
    return Evaluation(
        name=name,
        classes=classes,
        accuracy=(predicted == labels).double().mean().item() if len(labels) else 0.0,
        loss=F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
        if len(labels)
        else float("nan"),
        confusion=cm,
        scores=class_scores(cm),
        misclassified=find_misclassified(probs, labels),
    )


@dataclass
class EvaluationResult:
    """What :func:`evaluate_on_test` returns: each run's figures, their ensemble's, the data."""

    runs: list[Evaluation]
    ensemble: Evaluation | None
    test: ImageData
    """The test split, so that misclassified images can be looked up by index."""
    tta: list[bool] = field(default_factory=list)
    """Per run: whether its predictions were averaged over shifted views."""

    @property
    def final(self) -> Evaluation:
        """The ensemble when there are several runs, else the one run."""
        return self.ensemble if self.ensemble is not None else self.runs[0]

    @property
    def dataset(self) -> str:
        """The test split's dataset name."""
        return self.test.name

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON summary: dataset, sample count, each run and the ensemble."""
        report: dict[str, Any] = {
            "dataset": self.dataset,
            "test_samples": len(self.test),
            "runs": [
                {**e.to_dict(), "run": e.name, "tta": t}
                for e, t in zip(self.runs, self.tta or [False] * len(self.runs), strict=True)
            ],
        }
        if self.ensemble is not None:
            report["ensemble"] = self.ensemble.to_dict()
        return report


@torch.inference_mode()
def evaluate_on_test(
    runs: Sequence[str | Path],
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
) -> EvaluationResult:
    """Evaluate run folders on a test split; several runs also as the mean of their probabilities.

    ``dataset`` defaults to the dataset the runs were trained on (they must agree).
    ``tta`` averages each run's prediction over shifted views of every image; ``None``
    does what each run was configured to do (``--tta`` at training), so the figures
    match its ``metrics.json``.
    """
    from cnnlab.data import load_dataset
    from cnnlab.runs import load_run
    from cnnlab.train import pick_device

    if not runs:
        raise CnnlabError("no run folder given")
    dev = pick_device(device)
    loaded = [load_run(r, device=str(dev)) for r in runs]
    names = {dataset or r.dataset for r in loaded}
    if len(names) > 1:
        raise CnnlabError(
            f"runs were trained on different datasets ({', '.join(sorted(names))}); give --dataset"
        )
    test = load_dataset(names.pop(), "test", data_dir)
    evaluations, all_probs, tta_used = [], [], []
    for run in loaded:
        if len(run.classes) != len(test.classes):
            raise CnnlabError(
                f"{run.path} predicts {len(run.classes)} classes but "
                f"{test.name} has {len(test.classes)}"
            )
        use_tta = bool(run.config.tta) if tta is None else tta
        probs = torch.cat(
            [run.predict(test.images[i : i + 1000], tta=use_tta) for i in range(0, len(test), 1000)]
        )
        all_probs.append(probs)
        evaluations.append(evaluate_probabilities(probs, test.labels, test.classes, str(run.path)))
        tta_used.append(use_tta)
    ensemble = None
    if len(loaded) > 1:
        ensemble = evaluate_probabilities(
            torch.stack(all_probs).mean(0),
            test.labels,
            test.classes,
            f"ensemble of {len(loaded)}",
        )
    return EvaluationResult(evaluations, ensemble, test, tta_used)


REPORT_FILES = (
    "confusion.png",
    "confusion.csv",
    "per_class.csv",
    "misclassified.png",
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
) -> Reports:
    """Write the evaluation of ``result.final`` (the run, or the ensemble) into ``out``.

    Files, each written to a temporary name and renamed into place:
    ``confusion.png`` (heat map with counts), ``confusion.csv`` (counts, header row of
    class names, first column the true class), ``per_class.csv`` (class, precision,
    recall, f1, support), ``misclassified.png`` and ``misclassified-2.png``, … (every
    misclassified test image, ``per_page`` a page, at most ``max_pages`` pages; grouped
    by true, then predicted class, most confident first) and ``evaluation.json``
    (accuracy, loss, per-class figures, confusion matrix, the misclassified images, the
    runs and the dataset). Pages left from an earlier, longer report are removed.
    """
    from cnnlab.viz.evaluation_plots import page_path, paginate, plot_confusion_matrix, plot_tiles

    folder = check_report_dir(out)
    final = result.final
    classes = final.classes
    ordered = sorted(final.misclassified, key=lambda m: (m.true, m.predicted, -m.confidence))
    pages = paginate(ordered, per_page, max_pages)
    shown = sum(len(p) for p in pages)
    heading = f"{final.name} on {result.dataset} test"
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
                + "); each: true→predicted, confidence, test index"
            )
            page_files.append(
                plot_tiles(
                    result.test.images[idx],
                    [f"{classes[m.true]}→{classes[m.predicted]} {m.confidence:.2f}" for m in page],
                    page_path(folder, "misclassified", number),
                    notes=[f"#{m.index}" for m in page],
                    title=title,
                )
            )
        if not pages:
            page_files.append(_no_errors_page(folder / "misclassified.png", heading))
        written += page_files
        report = {
            "model": final.name,
            "runs": [{"run": e.name, "accuracy": e.accuracy, "loss": e.loss} for e in result.runs],
            "dataset": result.dataset,
            "split": "test",
            "test_samples": final.num_samples,
            "classes": list(classes),
            **final.to_dict(misclassified=True),
            "misclassified_pages": [p.name for p in page_files],
            "misclassified_shown": shown,
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
