"""Training into a run folder: :func:`train_run`, from a configuration or a run to resume.

The configuration is completed from the recipes (:func:`cnnlab.recipes.resolve_config`),
the model built, a :class:`~cnnlab.train.Trainer` made from the configuration, and the
folder written after every epoch (:class:`~cnnlab.runs.folder.RunFolderWriter`); at the
end the model is tested and ``metrics.json`` written. With ``--tensorboard`` the run is
also logged for TensorBoard (:class:`~cnnlab.train.tensorboard.TensorBoardLogger`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cnnlab import distributed
from cnnlab.config import TrainConfig
from cnnlab.data.loader import Preprocess, channel_statistics
from cnnlab.data.preparation import ImagePreparation
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelSpec
from cnnlab.recipes import resolve_config
from cnnlab.runs.folder import (
    CHECKPOINT,
    CONFIG,
    HISTORY,
    METRICS,
    RUN_FILES,
    RunFolderWriter,
    default_run_dir,
    load_checkpoint,
    load_weights,
    versions,
)
from cnnlab.runs.loaded import build_model, load_run, model_arguments, open_run, read_config
from cnnlab.runs.manifest import RunFiles, remove_stale_temps
from cnnlab.runs.manifest import write_json as commit_json
from cnnlab.speed import status as speed_status
from cnnlab.train import Callback, EarlyStopping, History, Trainer

if TYPE_CHECKING:
    from cnnlab.train.tensorboard import TensorBoardLogger


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


def folder_splits(cfg: TrainConfig, spec: ModelSpec, progress: bool) -> tuple[Any, Any, str]:
    """``cfg.data``'s images: the train and test splits and the dataset's name (the folder's)."""
    from cnnlab.data.folders import FolderSettings, load_folder

    size = (cfg.image_size,) * 2 if cfg.image_size else tuple(spec.input_size[1:])
    settings = FolderSettings(
        size=(int(size[0]), int(size[1])),
        channels=int(cfg.channels or 3),
        resize=str(cfg.resize or "pad"),
    )
    train, test = load_folder(str(cfg.data), settings, strict=bool(cfg.strict), progress=progress)
    return train, test, train.name


def _run_data(
    cfg: TrainConfig, spec: ModelSpec, dataset: str, data_dir: str | Path | None, progress: bool
) -> tuple[Any, Any]:
    """The train and test splits of a run being resumed: its folder of images, or its dataset."""
    from cnnlab.data import load_dataset

    if cfg.data:
        train, test, _ = folder_splits(cfg, spec, progress)
        return train, test
    return load_dataset(dataset, "train", data_dir), load_dataset(dataset, "test", data_dir)


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

    In a data-parallel job (:mod:`cnnlab.distributed`) every rank calls this; rank 0
    alone prints, writes the folder and its checkpoints, and the others wait for it
    where they would read what it writes.
    """
    progress = progress and distributed.current().is_writer
    if resume is not None:
        return _resume(Path(resume), data_dir, more_epochs, callbacks, progress)
    if config.data and config.dataset:
        raise CnnlabError("give --data (a folder of images) or --dataset, not both")
    spec, cfg = resolve_config(config)
    _check_tensorboard(cfg)
    _check_batch(cfg)
    if cfg.tensorboard_dir:
        # absolute, so that a resume from elsewhere logs into the same folder
        cfg = replace(cfg, tensorboard_dir=str(Path(cfg.tensorboard_dir).expanduser().resolve()))
    with distributed.writer_first():  # one rank decodes, caches or downloads
        if cfg.data:
            cfg = replace(cfg, data=str(Path(cfg.data).expanduser().resolve()))
            train, test, dataset = folder_splits(cfg, spec, progress)
        else:
            train, test, dataset = _load_data(cfg.dataset, data_dir, fallback_dataset)
    cfg = replace(cfg, dataset=dataset)
    path = Path(out) if out is not None else _shared_run_dir(cfg.model)
    if (path / CONFIG).exists():
        raise CnnlabError(f"{path} already holds a run; choose another --out or --resume it")
    distributed.barrier()  # every rank has looked before rank 0 writes
    return _start(spec, cfg, train, test, dataset, path, callbacks, progress, digests=None)


def _check_batch(cfg: TrainConfig) -> None:
    """Before anything is read or written: the global batch must split evenly."""
    world = distributed.current().world_size
    if cfg.batch_size and cfg.batch_size % world:
        raise CnnlabError(
            f"--batch-size {cfg.batch_size} does not divide among {world} processes; "
            f"give a multiple of {world}"
        )


def _shared_run_dir(model: str) -> Path:
    """The default run folder, named by rank 0 (the ranks' clocks may straddle a second)."""
    return Path(distributed.gather_objects(str(default_run_dir(model)))[0])


def _with_data_channels(
    spec: ModelSpec, model_args: dict[str, Any], channels: int
) -> dict[str, Any]:
    """``model_args`` with ``in_channels`` set to the data's channels when the data is in
    colour and the model would take another count (a greyscale model on CIFAR-10): the
    model then sees the colours instead of their mean. Greyscale data keeps the model's
    own count (its channel is repeated, as before), and an explicit choice is kept."""
    if channels <= 1 or "in_channels" in model_args or spec.input_size[0] == channels:
        return model_args
    return {**model_args, "in_channels": int(channels)}


def _preparation(cfg: TrainConfig, dataset: str, train: Any) -> ImagePreparation:
    """How ``predict`` and ``serve`` will prepare pictures for this run: like the folder's
    images or CIFAR-10's photos, or as MNIST-style digits for the IDX data sets."""
    shape = tuple(int(v) for v in train.images.shape[1:])
    photos = bool(cfg.data) or dataset == "cifar10"
    return ImagePreparation(
        "photos" if photos else "digits", (shape[0], shape[1], shape[2]), str(cfg.resize or "pad")
    )


def _start(
    spec: ModelSpec,
    cfg: TrainConfig,
    train: Any,
    test: Any,
    dataset: str,
    path: Path,
    callbacks: Sequence[Callback],
    progress: bool,
    digests: dict[str, str] | None,
) -> RunResult:
    """Train a run from its first step; ``digests``: the checksums of a folder whose
    config.json is already written (a run restarted in place), None for a new folder."""
    cfg = replace(cfg, model_args=_with_data_channels(spec, cfg.model_args, train.images.shape[1]))
    torch.manual_seed(cfg.seed)
    model = build_model(spec, len(train.classes), cfg.model_args)
    channels = int(model_arguments(spec, len(train.classes), cfg.model_args)["in_channels"])
    preparation = _preparation(cfg, dataset, train)
    mean: float | tuple[float, ...] = float(cfg.mean or 0.0)
    std: float | tuple[float, ...] = float(cfg.std or 1.0)
    if cfg.normalize == "data" or (cfg.normalize == "auto" and not preparation.digits):
        mean, std = channel_statistics(train.images)
    preprocess = Preprocess((channels, *spec.input_size[1:]), spec.fit, mean, std)
    if cfg.init_from:
        _init_from(model, Path(cfg.init_from), progress)
    elif spec.data_init is not None:
        spec.data_init(model, preprocess(_sample(train.images, 5000, cfg.seed)))
    trainer = Trainer.from_config(model, cfg, preprocess=preprocess, progress=progress)
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
    writer = distributed.current().is_writer
    if writer:
        path.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path, RUN_FILES)
    if digests is None and not writer:
        digests = {}
    if digests is None:
        digests = {}
        commit_json(
            path,
            CONFIG,
            {
                "train": cfg.to_dict(),
                "model": {
                    "id": spec.name,
                    "args": model_arguments(spec, len(train.classes), cfg.model_args),
                    "input_size": list(preprocess.input_size),
                    "parameters": sum(p.numel() for p in model.parameters()),
                },
                "dataset": dataset,
                "classes": list(train.classes),
                "preprocess": preprocess.to_dict(),
                "images": preparation.to_dict(),
                "versions": versions(),
                "device": str(trainer.device),
                "world_size": distributed.current().world_size,
                "created": datetime.now().isoformat(timespec="seconds"),
            },
            digests,
        )
    return _fit_and_test(trainer, cfg, train, test, path, cfg.epochs, callbacks, digests)


def _init_from(model: torch.nn.Module, path: Path, progress: bool) -> None:
    """Copy into ``model`` every tensor of the run at ``path`` whose name and shape fit;
    a run whose network does not fit at all is an error, not a silent fresh start."""
    source = load_run(path, speed_up=False).model.state_dict()
    target = model.state_dict()
    fits = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    weights = [k for k, v in target.items() if v.is_floating_point()]
    copied = [k for k in weights if k in fits]
    if len(copied) < len(weights) / 2:
        raise CnnlabError(
            f"--init-from {path}: only {len(copied)} of this model's {len(weights)} weight "
            "tensors fit that run's; give the same --model and --arg as it was trained with"
        )
    model.load_state_dict(fits, strict=False)
    if progress:
        new = [k for k in weights if k not in fits]
        print(
            f"starting from {path}: {len(copied)} of {len(weights)} weight tensors"
            + (f" (new: {', '.join(new)})" if new else ""),
            file=sys.stderr,
        )


def _sample(images: Any, count: int, seed: int) -> torch.Tensor:
    """At most ``count`` of ``images`` (a tensor, array or memory-mapped file), a seeded
    choice read in file order: a folder's images come sorted by class."""
    n = len(images)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=generator)[:count].sort().values
    return torch.as_tensor(images[rows.numpy()])


def _fit_and_test(
    trainer: Trainer,
    cfg: TrainConfig,
    train: Any,
    test: Any,
    path: Path,
    epochs: int | None,
    callbacks: Sequence[Callback],
    digests: dict[str, str],
    earlier_seconds: float = 0.0,
) -> RunResult:
    """Train, write the run folder, test; ``earlier_seconds``: training time before a resume."""
    start = time.perf_counter()
    # runs saved before stratified splits have no "stratify": they keep their plain split
    fit_args: dict[str, Any] = {
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "stratify": bool(cfg.stratify),
    }
    if cfg.validation == "test":
        fit_args["validation_data"] = test
    else:
        fit_args["validation_split"] = cfg.validation_split
        if cfg.validation_split and trainer.epoch == 0 and trainer.progress:
            _report_validation(cfg, train)
    if epochs is not None:
        fit_args["epochs"] = epochs
    else:
        fit_args["steps"] = cfg.steps
    extra: list[Callback] = []
    if cfg.early_stopping:
        extra.append(EarlyStopping("val_accuracy", patience=cfg.early_stopping, restore_best=False))
    board = None
    logged: list[Callback] = []
    if distributed.current().is_writer:
        board = _tensorboard(cfg, path, train)
        # The logger follows the folder writer: an epoch's events are written once its
        # checkpoint is, so a resume never logs an epoch twice.
        logged = [RunFolderWriter(path, digests, str(cfg.select))]
        logged += [] if board is None else [board]
    try:
        history = trainer.fit(train, callbacks=[*extra, *logged, *callbacks], **fit_args)
        train_seconds = time.perf_counter() - start + earlier_seconds
        result = _test(trainer, cfg, test, path, digests, train_seconds, history)
        if board is not None:
            board.finish(result.metrics, trainer.epoch)
    finally:
        if board is not None:
            board.close()
    return result


def _check_tensorboard(cfg: TrainConfig) -> None:
    """With TensorBoard logging asked for, fail before anything is written if the
    package is missing."""
    if cfg.tensorboard or cfg.tensorboard_dir:
        from cnnlab.train.tensorboard import require_tensorboard

        require_tensorboard()


def _tensorboard(cfg: TrainConfig, path: Path, train: Any) -> TensorBoardLogger | None:
    """The run's :class:`~cnnlab.train.tensorboard.TensorBoardLogger`, or None when off:
    logging into ``tensorboard/`` inside the run folder, or ``--tensorboard-dir``'s
    sub-folder named as the run folder."""
    if not (cfg.tensorboard or cfg.tensorboard_dir):
        return None
    from cnnlab.train.tensorboard import TensorBoardLogger

    if cfg.tensorboard_dir:
        log_dir = Path(cfg.tensorboard_dir) / path.resolve().name
    else:
        log_dir = path / "tensorboard"
    hparams = {
        k: v for k, v in cfg.to_dict().items() if k not in ("tensorboard", "tensorboard_dir")
    }
    return TensorBoardLogger(
        log_dir,
        example=torch.as_tensor(train.images[:2]),
        classes=train.classes,
        hparams=hparams,
    )


def _report_validation(cfg: TrainConfig, train: Any) -> None:
    """Say how many images of each class the validation split holds (the first 20 classes)."""
    from cnnlab.train.trainer import split_indices

    labels = torch.as_tensor(train.labels)
    _, held = split_indices(
        len(labels), float(cfg.validation_split), cfg.seed, labels if cfg.stratify else None
    )
    counts = torch.bincount(labels[held], minlength=len(train.classes)).tolist()
    shown = ", ".join(f"{c} {n:,}" for c, n in zip(train.classes[:20], counts, strict=False))
    more = f", and {len(counts) - 20} more classes" if len(counts) > 20 else ""
    how = "of each class" if cfg.stratify else "at random"
    print(
        f"validation split: {len(held):,} images, {100 * float(cfg.validation_split):g}% "
        f"{how} ({shown}{more})",
        file=sys.stderr,
    )


def _test(
    trainer: Trainer,
    cfg: TrainConfig,
    test: Any,
    path: Path,
    digests: dict[str, str],
    train_seconds: float,
    history: History,
) -> RunResult:
    """Test the trained model and write ``metrics.json``: the end of every run."""
    ctx = distributed.current()
    if cfg.select == "best":
        distributed.barrier()  # rank 0 has written the best epoch's weights
        load_weights(trainer.eval_model, RunFiles(path))
    test_metrics = trainer.evaluate(test, tta=bool(cfg.tta))
    metrics: dict[str, Any] = {
        "test_accuracy": test_metrics["accuracy"],
        "test_loss": test_metrics["loss"],
        "test_samples": trainer.evaluated,  # counted over every rank: each image once
        "dataset": cfg.dataset,
        "epochs": trainer.epoch,
        "steps": trainer.step,
        "train_seconds": round(train_seconds, 2),
        "device": str(trainer.device),
        "precision": trainer.precision,
        "native_kernels": speed_status() if trainer.device.type == "cpu" else None,
        "tta": bool(cfg.tta),
        "weights": "best" if cfg.select == "best" else "last",
        "world_size": ctx.world_size,
    }
    if cfg.tta:
        plain = trainer.evaluate(test, tta=False)
        metrics["test_accuracy_no_tta"] = plain["accuracy"]
        metrics["test_loss_no_tta"] = plain["loss"]
    if ctx.is_writer:
        commit_json(path, METRICS, metrics, digests)
    return RunResult(path, trainer, metrics, history, cfg.dataset, cfg)


def _resume(
    path: Path,
    data_dir: str | Path | None,
    more_epochs: int | None,
    callbacks: Sequence[Callback],
    progress: bool,
) -> RunResult:
    """Continue the run in ``path`` from its checkpoint, whatever moment it stopped at.

    Everything is read and checked before anything is written. A run stopped before its
    first checkpoint starts again from scratch (the same seed gives the same run); one
    stopped after its last epoch but before its test is tested now.
    """
    if not path.is_dir():
        raise CnnlabError(f"run folder {str(path)!r} does not exist")
    files = RunFiles(path)
    if not files.exists(CHECKPOINT) and not files.recorded(CHECKPOINT):
        return _restart(files, data_dir, more_epochs, callbacks, progress)
    run = open_run(files, speed_up=False)  # the trainer builds its own view
    state = load_checkpoint(files)
    cfg = run.config
    _check_tensorboard(cfg)
    trainer = Trainer.from_config(run.model, cfg, preprocess=run.preprocess, progress=progress)
    try:
        trainer.load_state_dict(state)
    except CnnlabError as exc:
        raise CnnlabError(f"{path / CHECKPOINT}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CnnlabError(f"{path / CHECKPOINT}: does not fit this run ({exc})") from None
    trained = False
    if more_epochs is None:
        if cfg.steps:
            trained = trainer.step >= cfg.steps
        else:
            more_epochs = (cfg.epochs or 0) - trainer.epoch
            trained = more_epochs <= 0
    # metrics.json is written last: if it is missing or from an earlier session, the
    # run was stopped between its last checkpoint and its test
    tested = (run.metrics.get("epochs"), run.metrics.get("steps")) == (trainer.epoch, trainer.step)
    if trained and tested:
        if distributed.current().is_writer:  # the folder checked out: its leftovers can go
            remove_stale_temps(path, RUN_FILES)
        length = f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epochs"
        raise CnnlabError(
            f"{path} has finished its {length}; give --epochs N to train N more epochs"
        )
    with distributed.writer_first():
        train, test = _run_data(cfg, run.spec, run.dataset, data_dir, progress)
    # metrics.json of the earlier session, or (if it was interrupted) its epochs' own times
    earlier = run.metrics.get("train_seconds")
    if not isinstance(earlier, int | float):
        earlier = sum(float(row.get("seconds", 0.0)) for row in run.history)
    # nothing has been written up to here; every rank has read the folder
    distributed.barrier()
    writer = distributed.current().is_writer
    if writer:
        remove_stale_temps(path, RUN_FILES)
    digests = dict(files.digests)
    if trained:
        if writer:
            commit_json(path, HISTORY, trainer.history.epochs, digests)
        return _test(trainer, cfg, test, path, digests, float(earlier), trainer.history)
    if more_epochs is not None and writer:
        meta = files.read_json(CONFIG)
        meta["train"]["epochs"] = trainer.epoch + more_epochs
        meta.setdefault("resumed", []).append(
            {
                "at_epoch": trainer.epoch,
                "epochs": more_epochs,
                "when": datetime.now().isoformat(timespec="seconds"),
            }
        )
        commit_json(path, CONFIG, meta, digests)
    return _fit_and_test(
        trainer, cfg, train, test, path, more_epochs, callbacks, digests, float(earlier)
    )


def _restart(
    files: RunFiles,
    data_dir: str | Path | None,
    more_epochs: int | None,
    callbacks: Sequence[Callback],
    progress: bool,
) -> RunResult:
    """Train a run that never wrote a checkpoint again from its first step, in place:
    with the same configuration and seed, the result is that of an uninterrupted run."""
    cfg, spec, _, _, dataset = read_config(files)
    _check_tensorboard(cfg)
    with distributed.writer_first():
        train, test = _run_data(cfg, spec, dataset, data_dir, progress)
    digests = dict(files.digests)
    if more_epochs is not None:
        meta = files.read_json(CONFIG)
        meta["train"].update(epochs=more_epochs, steps=None)
        cfg = replace(cfg, epochs=more_epochs, steps=None)
        distributed.barrier()  # every rank has read config.json
        if distributed.current().is_writer:
            commit_json(files.folder, CONFIG, meta, digests)
    return _start(spec, cfg, train, test, dataset, files.folder, callbacks, progress, digests)
