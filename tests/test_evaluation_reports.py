"""Evaluation figures: confusion matrix, per-class scores, misclassified images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from cnnlab.evaluation import (
    class_scores,
    confusion_matrix,
    evaluate_probabilities,
    find_misclassified,
)

CLASSES = tuple(str(i) for i in range(10))


# ---------------------------------------------------------------- the numbers


def test_confusion_matrix_and_scores_by_hand() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    cm = confusion_matrix(labels, preds, 4)  # class 3: never seen, never predicted
    expected = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert cm.tolist() == expected and cm.dtype == torch.int64
    s = class_scores(cm)
    assert s.precision.tolist() == pytest.approx([1 / 2, 2 / 3, 1, 0])
    assert s.recall.tolist() == pytest.approx([1 / 2, 1, 2 / 3, 0])
    assert s.f1.tolist() == pytest.approx([1 / 2, 4 / 5, 4 / 5, 0])
    assert s.support.tolist() == [2, 2, 3, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_and_scores_match_scikit_learn(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (5000,), generator=g)
    preds = torch.where(
        torch.rand(5000, generator=g) < 0.6, labels, torch.randint(0, 10, (5000,), generator=g)
    )
    preds[preds == 7] = 3  # a class that is never predicted: precision 0 by convention
    cm = confusion_matrix(labels, preds, 10)
    assert np.array_equal(cm.numpy(), sk_confusion_matrix(labels, preds, labels=range(10)))
    p, r, f, n = precision_recall_fscore_support(labels, preds, labels=range(10), zero_division=0)
    s = class_scores(cm)
    np.testing.assert_allclose(s.precision.numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(s.recall.numpy(), r, rtol=1e-12)
    np.testing.assert_allclose(s.f1.numpy(), f, rtol=1e-12)
    assert s.support.tolist() == n.tolist()


def test_confusion_matrix_rejects_out_of_range_and_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        confusion_matrix(torch.tensor([0, 10]), torch.tensor([0, 1]), 10)
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 10)


def test_evaluate_probabilities_lists_every_wrong_prediction() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 10, (1000,), generator=g)
    probs = torch.randn(1000, 10, generator=g).softmax(1)
    e = evaluate_probabilities(probs, labels, CLASSES, "random")
    wrong = probs.argmax(1) != labels
    assert len(e.misclassified) == int(wrong.sum()) == e.num_samples - int(e.confusion.trace())
    assert [m.index for m in e.misclassified] == wrong.nonzero().flatten().tolist()
    m = e.misclassified[0]
    assert m.true == int(labels[m.index]) and m.predicted == int(probs[m.index].argmax())
    assert m.confidence == pytest.approx(float(probs[m.index].max()))
    assert e.accuracy == pytest.approx(1 - float(wrong.float().mean()))
    assert e.loss == pytest.approx(float(F.nll_loss(probs.log(), labels)), rel=1e-5)
    rows = e.per_class()
    assert [r["class"] for r in rows] == list(CLASSES)
    assert sum(r["support"] for r in rows) == 1000
    assert find_misclassified(torch.eye(3), torch.arange(3)) == []
