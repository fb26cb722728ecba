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
from cnnlab.data.preparation import ImagePreparation
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelSpec, get_model_spec
from cnnlab.predict import Predictor
from cnnlab.runs.folder import CONFIG, HISTORY, METRICS, WEIGHTS, load_weights
from cnnlab.runs.manifest import RunFiles
from cnnlab.train.trainer import check_history


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
    #: The folder's files as read, with their checksums (what resuming writes on from).
    files: RunFiles | None = field(default=None, repr=False)
    #: How one picture becomes an image like the run's data (``predict``, ``serve``).
    preparation: ImagePreparation = field(default_factory=ImagePreparation)

    def prepare(self, images: list[Any]) -> torch.Tensor:
        """Pictures (paths, encoded bytes, PIL images or arrays) as an (N, C, H, W) uint8
        batch prepared as the run's training images were: digits MNIST-style, photos
        decoded and resized like the run's folder or data set."""
        return torch.from_numpy(self.preparation.prepare_all(list(images)))

    def predict(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Class probabilities (on the CPU) for uint8 images (H×W, N×H×W or N×C×H×W).

        ``tta`` averages over shifted copies of each image (and mirrored ones when the
        run was trained with flips), as ``--tta`` does.
        """
        return self.predictor.probabilities(images, tta=tta)

    def split(self, split: str, data_dir: str | Path | None = None) -> Any:
        """The ``"train"`` or ``"test"`` split the run was trained and tested on: its
        folder of images (``--data``, from the decode cache when it is current) or its
        named dataset (found through ``data_dir`` like any dataset)."""
        if self.config.data:
            from cnnlab.runs.training import folder_splits

            train, test, _ = folder_splits(self.config, self.spec, progress=False)
            return train if split == "train" else test
        from cnnlab.data import load_dataset

        return load_dataset(self.dataset, split, data_dir)


def load_run(path: str | Path, device: str = "cpu", *, speed_up: bool = True) -> Run:
    """Load the run folder at ``path``: config, model with its weights, history, metrics.

    The model is in evaluation mode on ``device``; predictions run through the speed
    layer's view of it unless ``speed_up`` is false.
    """
    path = Path(path)
    if not path.is_dir():
        raise CnnlabError(f"run folder {str(path)!r} does not exist")
    return open_run(RunFiles(path), device, speed_up=speed_up)


def open_run(files: RunFiles, device: str = "cpu", *, speed_up: bool = True) -> Run:
    """:func:`load_run` of a folder whose manifest has been read; every file is checked
    against it as it is read, and nothing is written."""
    path = files.folder
    config, spec, classes, preprocess, dataset = read_config(files)
    model = build_checked_model(files, spec, classes, config)
    if not files.exists(WEIGHTS) and not files.recorded(WEIGHTS):
        where = path / WEIGHTS
        raise CnnlabError(f"{where}: missing; the run has not finished an epoch yet")
    load_weights(model, files)
    model.to(device).eval()
    augment = Augment.from_dict(config.augment)
    predictor = Predictor(
        model, preprocess, flip=bool(augment.flip), reflect=bool(augment.crop), speed_up=speed_up
    )
    history, metrics = read_history(files), read_metrics(files)
    return Run(
        path,
        config,
        spec,
        model,
        preprocess,
        classes,
        predictor,
        history,
        metrics,
        dataset,
        files,
        read_preparation(files),
    )


def read_preparation(files: RunFiles) -> ImagePreparation:
    """``config.json``'s ``"images"``: how pictures are prepared (digits for older runs)."""
    meta = files.read_json(CONFIG)
    try:
        return ImagePreparation.from_dict(meta.get("images"))
    except (KeyError, TypeError, ValueError, AttributeError, CnnlabError) as exc:
        raise CnnlabError(
            f"{files.folder / CONFIG}: missing or bad entry 'images' ({exc})"
        ) from None


def read_config(
    files: RunFiles,
) -> tuple[TrainConfig, ModelSpec, tuple[str, ...], Preprocess, str]:
    """``config.json``, every part checked: the options as ``TrainConfig`` checks them, the
    model's name, the classes, the preprocessing; a bad one names the file and entry."""
    where = files.folder / CONFIG
    meta = files.read_json(CONFIG)
    try:
        if not isinstance(meta, dict) or not isinstance(meta.get("train"), dict):
            raise CnnlabError("'train' must be an object of training options")
        config = TrainConfig.from_dict(meta["train"])
        config.check_combination()
        preprocess = Preprocess.from_dict(meta["preprocess"])
        if not isinstance(meta["classes"], list) or len(meta["classes"]) < 2:
            raise CnnlabError("'classes' must be a list of at least two class names")
        classes = tuple(str(c) for c in meta["classes"])
        dataset = str(meta.get("dataset", config.dataset))
        spec = get_model_spec(str(config.model))
    except (KeyError, TypeError, ValueError, AttributeError, CnnlabError) as exc:
        raise CnnlabError(f"{where}: missing or bad entry ({exc})") from None
    return config, spec, classes, preprocess, dataset


def build_checked_model(
    files: RunFiles, spec: ModelSpec, classes: tuple[str, ...], config: TrainConfig
) -> nn.Module:
    """The run's model, built from its config; arguments it does not take name the file."""
    try:
        return build_model(spec, len(classes), config.model_args)
    except (TypeError, ValueError) as exc:
        where = files.folder / CONFIG
        raise CnnlabError(f"{where}: model arguments do not fit {spec.name} ({exc})") from None


def read_history(files: RunFiles) -> list[dict[str, float]]:
    """``history.json`` (empty before the first epoch), checked to be per-epoch figures."""
    if not files.exists(HISTORY) and not files.recorded(HISTORY):
        return []
    history = files.read_json(HISTORY)
    try:
        check_history(history, "history")
    except CnnlabError as exc:
        raise CnnlabError(f"{files.folder / HISTORY}: {exc}") from None
    return history


def read_metrics(files: RunFiles) -> dict[str, Any]:
    """``metrics.json`` (empty until the run has been tested), checked to be an object."""
    if not files.exists(METRICS) and not files.recorded(METRICS):
        return {}
    metrics = files.read_json(METRICS)
    if not isinstance(metrics, dict):
        raise CnnlabError(f"{files.folder / METRICS}: must be an object of test figures")
    return metrics
