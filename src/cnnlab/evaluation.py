"""Evaluation of one or several runs on a test split, with their ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError


@torch.inference_mode()
def evaluate_runs(
    runs: Sequence[str | Path],
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Test accuracy and loss of each run, and of the average of their probabilities."""
    from cnnlab.data import load_dataset
    from cnnlab.runs import load_run
    from cnnlab.train import pick_device

    dev = pick_device(device)
    loaded = [load_run(r, device=str(dev)) for r in runs]
    names = {dataset or r.dataset for r in loaded}
    if len(names) > 1:
        raise CnnlabError(
            f"runs were trained on different datasets ({', '.join(sorted(names))}); give --dataset"
        )
    test = load_dataset(names.pop(), "test", data_dir)
    rows, all_probs = [], []
    for run in loaded:
        if len(run.classes) != len(test.classes):
            raise CnnlabError(
                f"{run.path} predicts {len(run.classes)} classes but "
                f"{test.name} has {len(test.classes)}"
            )
        probs = torch.cat(
            [run.predict(test.images[i : i + 1000]) for i in range(0, len(test), 1000)]
        )
        all_probs.append(probs)
        rows.append(_scores(probs, test.labels) | {"run": str(run.path)})
    report: dict[str, Any] = {"dataset": test.name, "test_samples": len(test), "runs": rows}
    if len(loaded) > 1:
        report["ensemble"] = _scores(torch.stack(all_probs).mean(0), test.labels)
    return report


def _scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {
        "accuracy": (probs.argmax(1) == labels).float().mean().item(),
        "loss": F.nll_loss(probs.clamp_min(1e-12).log(), labels).item(),
    }
