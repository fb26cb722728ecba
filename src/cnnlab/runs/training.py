"""The run folder: train into it, reload from it, resume it.

A run folder holds everything needed to use or continue a trained model::

    config.json          model id and arguments, dataset, preprocessing, all options
    weights.safetensors  the model's weights (safe to load from anyone)
    checkpoint.pt        optimizer state, counters, RNG state (``weights_only`` loadable)
    history.json         per-epoch loss, accuracy, validation figures, seconds
    metrics.json         test_accuracy (a fraction), test_loss

Each file is written atomically after every epoch, so an interrupted run can be
resumed from its last finished epoch. Everything that consumes a trained model
starts from :func:`load_run`.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cnnlab import atomic
from cnnlab.config import TrainConfig
from cnnlab.data.augment import Augment
from cnnlab.data.loader import Preprocess
from cnnlab.errors import CnnlabError
from cnnlab.kernels import native_status
from cnnlab.models import ModelSpec, get_model_spec
from cnnlab.recipes import get_recipe
from cnnlab.train import Callback, EarlyStopping, History, Trainer
from cnnlab.train.hardware import has_convolutions
from cnnlab.train.trainer import predict_proba

CONFIG, WEIGHTS, CHECKPOINT, HISTORY, METRICS = (
    "config.json",
    "weights.safetensors",
    "checkpoint.pt",
    "history.json",
    "metrics.json",
)


def _versions() -> dict[str, str]:
    from cnnlab import __version__

    return {"cnnlab": __version__, "torch": torch.__version__, "python": platform.python_version()}


def default_run_dir(model: str, root: str | Path = "runs") -> Path:
    """``runs/<model>-<date>-<time>``, made unique if it exists."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{model}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{model}-{stamp}-{n}"
    return path


def build_model(spec: ModelSpec, num_classes: int, model_args: dict[str, Any]) -> nn.Module:
    """Create ``spec``'s model with the dataset's number of classes unless told otherwise."""
    args = dict(model_args)
    if "num_classes" in spec.arguments():
        args.setdefault("num_classes", num_classes)
    return spec.create(**args)


def save_weights(model: nn.Module, path: Path) -> None:
    """Write the model's weights as safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic.write_with(path, lambda tmp: save_file(tensors, str(tmp)))


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; a mismatch is a :class:`CnnlabError`."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CnnlabError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CnnlabError(f"{path}: weights do not fit the model ({first})") from None


class RunFolderWriter(Callback):
    """After each epoch, write weights, checkpoint and history into the run folder.

    ``weights.safetensors`` holds the weights to use: the EMA average when the trainer
    keeps one, and with ``select="best"`` those of the epoch with the best validation
    accuracy so far (ties: lower validation loss). The checkpoint always holds the
    latest training state, so a resumed run continues from the last epoch.
    """

    def __init__(self, path: Path, select: str = "last") -> None:
        self.path = path
        self.select = select
        self.best: tuple[float, float] | None = None

    def _score(self, logs: dict[str, Any]) -> tuple[float, float] | None:
        if "val_accuracy" not in logs:
            return None
        return (float(logs["val_accuracy"]), -float(logs["val_loss"]))

    def on_train_begin(self, trainer: Trainer) -> None:
        scores = [s for s in map(self._score, trainer.history.epochs) if s is not None]
        self.best = max(scores) if scores else None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        score = self._score(logs)
        if self.select == "last" or score is None or self.best is None or score > self.best:
            save_weights(trainer.eval_model, self.path / WEIGHTS)
            if score is not None and (self.best is None or score > self.best):
                self.best = score
        state = trainer.state_dict()
        atomic.write_with(self.path / CHECKPOINT, lambda tmp: torch.save(state, tmp))
        atomic.write_json(self.path / HISTORY, trainer.history.epochs)


@dataclass
class Run:
    """A trained model loaded from its run folder."""

    path: Path
    config: TrainConfig
    spec: ModelSpec
    model: nn.Module
    preprocess: Preprocess
    classes: tuple[str, ...]
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset: str = "mnist"
    channels_last: bool = False  # the model's convolutions were put in NHWC layout

    def predict(self, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Class probabilities for uint8 images (H×W, N×H×W or N×C×H×W), on the CPU.

        ``tta`` averages over shifted copies of each image (and mirrored ones when the
        run was trained with flips), as ``--tta`` does.
        """
        images = torch.as_tensor(images)
        if images.dim() == 2:
            images = images[None]
        flip = bool(Augment.from_dict(self.config.augment).flip)
        return predict_proba(
            self.model,
            self.preprocess,
            images,
            tta=tta,
            flip=flip,
            channels_last=self.channels_last,
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; is {path.parent} a cnnlab run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path}: not valid JSON ({exc})") from None


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """Load the run folder at ``path``: config, model with its weights, history, metrics."""
    path = Path(path)
    if not path.is_dir():
        raise CnnlabError(f"run folder {str(path)!r} does not exist")
    meta = _read_json(path / CONFIG)
    try:
        config = TrainConfig.from_dict(meta["train"])
        preprocess = Preprocess.from_dict(meta["preprocess"])
        classes = tuple(str(c) for c in meta["classes"])
        dataset = str(meta.get("dataset", config.dataset))
    except (KeyError, TypeError, ValueError) as exc:
        raise CnnlabError(f"{path / CONFIG}: missing or bad entry {exc}") from None
    spec = get_model_spec(config.model)
    model = build_model(spec, len(classes), config.model_args)
    weights = path / WEIGHTS
    if not weights.exists():
        raise CnnlabError(f"{weights}: missing; the run has not finished an epoch yet")
    load_weights(model, weights)
    model.to(device).eval()
    channels_last = has_convolutions(model)  # NHWC convolutions and pooling: 2× on batches
    if channels_last:
        model.to(memory_format=torch.channels_last)
    history = _read_json(path / HISTORY) if (path / HISTORY).exists() else []
    metrics = _read_json(path / METRICS) if (path / METRICS).exists() else {}
    return Run(
        path, config, spec, model, preprocess, classes, history, metrics, dataset, channels_last
    )


@dataclass
class RunResult:
    """What :func:`train_run` returns: the folder, the trainer, the test figures and the
    complete configuration the run used."""

    path: Path
    trainer: Trainer
    metrics: dict[str, Any]
    history: History
    dataset: str
    config: TrainConfig


def _load_data(
    name: str, data_dir: str | Path | None, fallback: str | None
) -> tuple[Any, Any, str]:
    from cnnlab.data import load_dataset

    try:
        return load_dataset(name, "train", data_dir), load_dataset(name, "test", data_dir), name
    except CnnlabError as exc:
        if not fallback or fallback == name:
            raise
        print(f"cnnlab: {name} is not available ({exc})", file=sys.stderr)
        print(f"cnnlab: training on {fallback!r} instead", file=sys.stderr)
        return (
            load_dataset(fallback, "train", data_dir),
            load_dataset(fallback, "test", data_dir),
            fallback,
        )


def train_run(
    config: TrainConfig,
    out: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    resume: str | Path | None = None,
    more_epochs: int | None = None,
    fallback_dataset: str | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool = True,
) -> RunResult:
    """Train ``config`` into a run folder and evaluate on the test split.

    With ``resume``, ``config`` is ignored: the run folder's own config, weights and
    checkpoint are loaded and training continues for ``more_epochs`` (default: the
    epochs the run had left) in the same folder.
    """
    if resume is not None:
        return _resume(Path(resume), data_dir, more_epochs, callbacks, progress)
    spec, cfg = resolve_config(config)
    train, test, dataset = _load_data(cfg.dataset, data_dir, fallback_dataset)
    cfg = replace(cfg, dataset=dataset)
    path = Path(out) if out is not None else default_run_dir(cfg.model)
    if (path / CONFIG).exists():
        raise CnnlabError(f"{path} already holds a run; choose another --out or --resume it")
    torch.manual_seed(cfg.seed)
    model = build_model(spec, len(train.classes), cfg.model_args)
    preprocess = Preprocess(spec.input_size, spec.fit, cfg.mean, cfg.std)
    trainer = _make_trainer(model, preprocess, cfg, progress)
    if progress:
        length = (
            f"{cfg.steps:,} steps" if cfg.steps and cfg.epochs is None else f"{cfg.epochs} epochs"
        )
        print(
            f"training {cfg.model} ({sum(p.numel() for p in model.parameters()):,} parameters) "
            f"on {dataset} ({len(train):,} images) for {length} of batch {cfg.batch_size}, "
            f"{cfg.optimizer}, on {trainer.device}; run folder {path}",
            file=sys.stderr,
        )
    path.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        path / CONFIG,
        {
            "train": cfg.to_dict(),
            "model": {
                "id": spec.name,
                "args": build_args(spec, len(train.classes), cfg),
                "input_size": list(spec.input_size),
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "dataset": dataset,
            "classes": list(train.classes),
            "preprocess": preprocess.to_dict(),
            "versions": _versions(),
            "device": str(trainer.device),
            "created": datetime.now().isoformat(timespec="seconds"),
        },
    )
    return _fit_and_test(trainer, cfg, train, test, path, cfg.epochs, callbacks)


def resolve_config(config: TrainConfig) -> tuple[ModelSpec, TrainConfig]:
    """The model and the complete configuration: the user's options, then the named
    recipe's, then the model's own recipe, then the defaults."""
    recipe = get_recipe(config.recipe) if config.recipe else None
    model = config.model or (recipe.model if recipe else TrainConfig.DEFAULTS["model"])
    spec = get_model_spec(model)
    merged = dict(spec.recipe)
    if recipe is not None:
        if {"epochs", "steps"} & set(recipe.options):  # a length is taken whole
            merged.pop("epochs", None)
            merged.pop("steps", None)
        merged.update(recipe.options)
        if model == recipe.model:
            config = replace(config, model_args={**recipe.model_args, **config.model_args})
    return spec, replace(config, model=model).resolved(merged)


def build_args(spec: ModelSpec, num_classes: int, cfg: TrainConfig) -> dict[str, Any]:
    """The model's full keyword arguments: defaults, then the run's choices."""
    args = spec.arguments()
    if "num_classes" in args:
        args["num_classes"] = num_classes
    args.update(cfg.model_args)
    return args


def _make_trainer(
    model: nn.Module, preprocess: Preprocess, cfg: TrainConfig, progress: bool
) -> Trainer:
    return Trainer(
        model,
        preprocess=preprocess,
        optimizer=cfg.optimizer or "adam",
        lr=cfg.lr,
        weight_decay=cfg.weight_decay or 0.0,
        momentum=cfg.momentum,
        schedule=cfg.schedule or "constant",
        labels=cfg.labels or "int",
        label_smoothing=cfg.label_smoothing or 0.0,
        device=cfg.device,
        progress=progress,
        precision=cfg.precision or "auto",
        compile=bool(cfg.compile),
        augment=Augment.from_dict(cfg.augment) if cfg.augment else None,
        ema=cfg.ema or 0.0,
        tta=bool(cfg.tta),
    )


def _fit_and_test(
    trainer: Trainer,
    cfg: TrainConfig,
    train: Any,
    test: Any,
    path: Path,
    epochs: int | None,
    callbacks: Sequence[Callback],
    earlier_seconds: float = 0.0,
) -> RunResult:
    """Train, write the run folder, test; ``earlier_seconds``: training time before a resume."""
    start = time.perf_counter()
    fit_args: dict[str, Any] = {"batch_size": cfg.batch_size, "seed": cfg.seed}
    if cfg.validation == "test":
        fit_args["validation_data"] = test
    else:
        fit_args["validation_split"] = cfg.validation_split or 0.0
    if epochs is not None:
        fit_args["epochs"] = epochs
    else:
        fit_args["steps"] = cfg.steps
    writer = RunFolderWriter(path, cfg.select or "last")
    extra: list[Callback] = []
    if cfg.early_stopping:
        extra.append(EarlyStopping("val_accuracy", patience=cfg.early_stopping, restore_best=False))
    history = trainer.fit(train, callbacks=[*extra, writer, *callbacks], **fit_args)
    train_seconds = time.perf_counter() - start + earlier_seconds
    if cfg.select == "best":
        load_weights(trainer.eval_model, path / WEIGHTS)
    test_metrics = trainer.evaluate(test, tta=bool(cfg.tta))
    metrics: dict[str, Any] = {
        "test_accuracy": test_metrics["accuracy"],
        "test_loss": test_metrics["loss"],
        "test_samples": len(test),
        "dataset": cfg.dataset,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "train_seconds": round(train_seconds, 2),
        "device": str(trainer.device),
        "precision": trainer.precision,
        "native_kernels": native_status() if trainer.device.type == "cpu" else None,
        "tta": bool(cfg.tta),
        "weights": "best" if cfg.select == "best" else "last",
    }
    if cfg.tta:
        plain = trainer.evaluate(test, tta=False)
        metrics["test_accuracy_no_tta"] = plain["accuracy"]
        metrics["test_loss_no_tta"] = plain["loss"]
    atomic.write_json(path / METRICS, metrics)
    return RunResult(path, trainer, metrics, history, cfg.dataset, cfg)


def _resume(
    path: Path,
    data_dir: str | Path | None,
    more_epochs: int | None,
    callbacks: Sequence[Callback],
    progress: bool,
) -> RunResult:
    run = load_run(path)
    ckpt_path = path / CHECKPOINT
    if not ckpt_path.exists():
        raise CnnlabError(f"{ckpt_path}: missing; this run cannot be resumed")
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CnnlabError(f"{ckpt_path}: not a readable checkpoint ({exc})") from None
    cfg = run.config
    trainer = _make_trainer(run.model, run.preprocess, cfg, progress)
    trainer.load_state_dict(state)
    if more_epochs is None:
        if cfg.steps:
            if trainer.step >= cfg.steps:
                raise CnnlabError(
                    f"{path} has finished its {cfg.steps} steps; "
                    "give --epochs N to train N more epochs"
                )
        else:
            more_epochs = (cfg.epochs or 0) - trainer.epoch
            if more_epochs <= 0:
                raise CnnlabError(
                    f"{path} has finished its {cfg.epochs} epochs; "
                    "give --epochs N to train N more epochs"
                )
    from cnnlab.data import load_dataset

    train = load_dataset(run.dataset, "train", data_dir)
    test = load_dataset(run.dataset, "test", data_dir)
    if more_epochs is not None:
        meta = _read_json(path / CONFIG)
        meta["train"]["epochs"] = trainer.epoch + more_epochs
        meta.setdefault("resumed", []).append(
            {
                "at_epoch": trainer.epoch,
                "epochs": more_epochs,
                "when": datetime.now().isoformat(timespec="seconds"),
            }
        )
        atomic.write_json(path / CONFIG, meta)
    # metrics.json of the earlier session, or (if it was interrupted) its epochs' own times
    earlier = run.metrics.get("train_seconds")
    if earlier is None:
        earlier = sum(row.get("seconds", 0.0) for row in run.history)
    return _fit_and_test(trainer, cfg, train, test, path, more_epochs, callbacks, float(earlier))
