"""Evaluate run folders on a test split, each alone and as an ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.evaluation.scores import Evaluation, evaluate_probabilities

if TYPE_CHECKING:
    from cnnlab.data import ImageData


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
            "split": self.test.split,
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
    split: str = "test",
) -> EvaluationResult:
    """Evaluate run folders on a test split; several runs also as the mean of their probabilities.

    ``dataset`` defaults to the dataset the runs were trained on (they must agree); another
    dataset must have the same classes, in the same order, as the runs. ``split`` is
    ``"test"``, ``"train"`` or ``"all"`` (both, for a dataset the runs never saw).
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
    folders = {r.config.data for r in loaded}
    if dataset is None and folders != {None}:
        if len(folders) > 1:
            raise CnnlabError("runs were trained on different folders of images")
        if split not in ("train", "test"):
            raise CnnlabError(
                f"split {split!r} needs --dataset; a run's folder has a train and a test split"
            )
        test = loaded[0].split(split, data_dir)  # the held-out images of its folder
    else:
        test = load_dataset(names.pop(), split, data_dir)
    evaluations, all_probs, tta_used = [], [], []
    for run in loaded:
        if len(run.classes) != len(test.classes):
            raise CnnlabError(
                f"{run.path} predicts {len(run.classes)} classes but "
                f"{test.name} has {len(test.classes)}"
            )
        if tuple(run.classes) != tuple(test.classes):
            raise CnnlabError(
                f"{run.path} predicts classes {', '.join(run.classes)} but {test.name} has "
                f"{', '.join(test.classes)}; a run is evaluated only on the classes it knows"
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
