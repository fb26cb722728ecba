"""Evaluation of one or several runs on a test split, with their ensemble.

The numbers a careful practitioner looks at after the accuracy: the confusion matrix
(rows are the true class, columns the predicted one), precision, recall, F1 and
support per class, and the list of misclassified test images with the confidence of
each wrong prediction and the wrong predictions with the highest loss (:mod:`.scores`), for each run and their ensemble
(:mod:`.on_test`), written as pictures, CSV and JSON (:mod:`.reports`)::

    from cnnlab.evaluation import evaluate_on_test, write_reports
    result = evaluate_on_test(["runs/s0"])
    print(result.final.accuracy, result.final.per_class()[0])
    write_reports(result, "runs/s0")      # confusion.png, per_class.csv, ...
"""

from cnnlab.evaluation.on_test import EvaluationResult, evaluate_on_test
from cnnlab.evaluation.reports import (
    REPORT_FILES,
    TOP_LOSSES,
    Reports,
    check_report_dir,
    default_report_dir,
    write_reports,
)
from cnnlab.evaluation.scores import (
    ClassScores,
    Evaluation,
    Misclassified,
    class_scores,
    confusion_matrix,
    evaluate_probabilities,
    find_misclassified,
    sample_losses,
    top_losses,
)

__all__ = [
    "REPORT_FILES",
    "TOP_LOSSES",
    "ClassScores",
    "Evaluation",
    "EvaluationResult",
    "Misclassified",
    "Reports",
    "check_report_dir",
    "class_scores",
    "confusion_matrix",
    "default_report_dir",
    "evaluate_on_test",
    "evaluate_probabilities",
    "find_misclassified",
    "sample_losses",
    "top_losses",
    "write_reports",
]
