"""A trained model back from its run folder: :func:`load_run` and :class:`Run`.

Everything that uses a trained model (``cnnlab evaluate``, ``predict``, ``plot``,
``export``, ``visualize`` and the web app) starts here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.data.augment import Augment
from cnnlab.data.loader import Preprocess
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelSpec, get_model_spec
from cnnlab.predict import Predictor
from cnnlab.runs.folder import CONFIG, HISTORY, METRICS, WEIGHTS, load_weights, read_json


def model_arguments(
    spec: ModelSpec, num_classes: int, model_args: dict[str, Any]
) -> dict[str, Any]:
    """The model's full keyword arguments: its defaults, the dataset's number of classes,
    then the run's own choices."""
    args = spec.arguments()
    args["num_classes"] = num_classes
    args.update(model_args)
    return args


def build_model(spec: ModelSpec, num_classes: int, model_args: dict[str, Any]) -> nn.Module:
    """Create ``spec``'s model for ``num_classes`` classes unless ``model_args`` say otherwise."""
    return spec.create(**model_arguments(spec, num_classes, model_args))


@dataclass
class Run:
    """A trained model loaded from its run folder, ready to predict."""

    path: Path
    config: TrainConfig
    spec: ModelSpec
    model: nn.Module
    preprocess: Preprocess
    classes: tuple[str, ...]
    predictor: Predictor
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"

    def predict(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Class probabilities (on the CPU) for uint8 images (H×W, N×H×W or N×C×H×W).

        ``tta`` averages over shifted copies of each image (and mirrored ones when the
        run was trained with flips), as ``--tta`` does.
        """
        return self.predictor.probabilities(images, tta=tta)


def load_run(path: str | Path, device: str = "cpu", *, speed_up: bool = True) -> Run:
    """Load the run folder at ``path``: config, model with its weights, history, metrics.

    The model is in evaluation mode on ``device``; predictions run through the speed
    layer's view of it unless ``speed_up`` is false.
    """
    path = Path(path)
    if not path.is_dir():
        raise CnnlabError(f"run folder {str(path)!r} does not exist")
    meta = read_json(path / CONFIG)
    try:
        config = TrainConfig.from_dict(meta["train"])
        preprocess = Preprocess.from_dict(meta["preprocess"])
        classes = tuple(str(c) for c in meta["classes"])
        dataset = str(meta.get("dataset", config.dataset))
    except (KeyError, TypeError, ValueError, CnnlabError) as exc:
        raise CnnlabError(f"{path / CONFIG}: missing or bad entry ({exc})") from None
    spec = get_model_spec(str(config.model))
    model = build_model(spec, len(classes), config.model_args)
    weights = path / WEIGHTS
    if not weights.exists():
        raise CnnlabError(f"{weights}: missing; the run has not finished an epoch yet")
    load_weights(model, weights)
    model.to(device).eval()
    flip = bool(Augment.from_dict(config.augment).flip)
    predictor = Predictor(model, preprocess, flip=flip, speed_up=speed_up)
    history = read_json(path / HISTORY) if (path / HISTORY).exists() else []
    metrics = read_json(path / METRICS) if (path / METRICS).exists() else {}
    return Run(path, config, spec, model, preprocess, classes, predictor, history, metrics, dataset)
