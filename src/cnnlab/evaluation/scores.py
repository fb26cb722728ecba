"""The figures of one model's predictions: confusion matrix, per-class precision, recall
and F1, and the misclassified images, computed with tensor operations over a whole split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


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
    loss: float = float("nan")
    """The sample's loss: negative log of the probability given to the true class."""


def find_misclassified(probs: torch.Tensor, labels: torch.Tensor) -> list[Misclassified]:
    """Every sample whose most probable class is not its label, in test-set order."""
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    losses = sample_losses(probs[wrong], labels[wrong])
    return [
        Misclassified(i, t, p, c, loss)
        for i, t, p, c, loss in zip(
            wrong.tolist(),
            labels[wrong].tolist(),
            predicted[wrong].tolist(),
            confidence[wrong].tolist(),
            losses.tolist(),
            strict=True,
        )
    ]


def sample_losses(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's negative log-likelihood of its label, as the evaluation's mean loss
    counts it (probabilities clamped at 1e-12, so a certain mistake costs about 27.6)."""
    probs = torch.as_tensor(probs).float()
    labels = torch.as_tensor(labels).long()
    return -probs.clamp_min(1e-12).log().gather(1, labels[:, None]).flatten()


def top_losses(misclassified: Sequence[Misclassified], count: int = 24) -> list[Misclassified]:
    """The ``count`` misclassified samples with the highest loss, highest first.

    These are the mistakes the model was surest of: the least probability on the true
    class. Ties keep test-set order.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    return sorted(misclassified, key=lambda m: -m.loss)[:count]


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
                    "loss": round(m.loss, 6),
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
