"""The run folder on disk: what it holds, and reading and writing each file safely.

A run folder holds everything needed to use or continue a trained model::

    config.json          model id and arguments, dataset, preprocessing, all options
    weights.safetensors  the model's weights (safe to load from anyone)
    checkpoint.pt        optimizer state, counters, RNG state (``weights_only`` loadable)
    history.json         per-epoch loss, accuracy, validation figures, seconds
    metrics.json         test_accuracy (a fraction), test_loss, ...

    checksums.json       the SHA-256 of each of these files (:mod:`cnnlab.runs.manifest`)

Every file is written to a temporary name and renamed into place, and recorded in
``checksums.json`` (:func:`cnnlab.runs.manifest.commit`); :class:`RunFolderWriter` does
so after every epoch, so an interrupted run can be resumed from its last finished epoch.
Every file is checked against its checksum when it is read.
"""

from __future__ import annotations

import io
import json
import pickle
import platform
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.runs.manifest import RunFiles, commit
from cnnlab.train import Callback

if TYPE_CHECKING:
    from cnnlab.train import Trainer

CONFIG, WEIGHTS, CHECKPOINT, HISTORY, METRICS = (
    "config.json",
    "weights.safetensors",
    "checkpoint.pt",
    "history.json",
    "metrics.json",
)
RUN_FILES = (CONFIG, WEIGHTS, CHECKPOINT, HISTORY, METRICS)


def versions() -> dict[str, str]:
    """The versions of cnnlab, torch and Python, for a run's config."""
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


def weights_writer(model: nn.Module) -> Callable[[Path], None]:
    """A writer (for :func:`~cnnlab.runs.manifest.commit`) of the model's weights as
    safetensors; the tensors are copied now, when the writer is made."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return lambda tmp: save_file(tensors, str(tmp))


def load_weights(model: nn.Module, files: RunFiles) -> None:
    """Load the run's safetensors weights into ``model``; a mismatch is a :class:`CnnlabError`."""
    path = files.folder / WEIGHTS
    data = files.read_bytes(WEIGHTS)
    try:
        state = load_safetensors(data)
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CnnlabError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CnnlabError(f"{path}: weights do not fit the model ({first})") from None


def load_checkpoint(files: RunFiles) -> dict[str, Any]:
    """The training state in ``checkpoint.pt``, checked against the manifest and loaded
    without unpickling code (only tensors, numbers, strings and containers)."""
    path = files.folder / CHECKPOINT
    if not files.exists(CHECKPOINT):
        raise CnnlabError(f"{path}: missing; this run cannot be resumed")
    data = files.read_bytes(CHECKPOINT)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is long and advises unsafe loading: say what matters
        raise CnnlabError(
            f"{path}: holds objects other than tensors and plain values; refused unread"
        ) from None
    except Exception as exc:
        raise CnnlabError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise CnnlabError(f"{path}: holds {type(state).__name__}, not a training state")
    return state


class RunFolderWriter(Callback):
    """After each epoch, write weights, checkpoint and history into the run folder.

    ``weights.safetensors`` holds the weights to use: the EMA average when the trainer
    keeps one, and with ``select="best"`` those of the epoch with the best validation
    accuracy so far (ties: lower validation loss). The checkpoint always holds the
    latest training state, so a resumed run continues from the last epoch.
    """

    def __init__(self, path: Path, digests: dict[str, str], select: str = "last") -> None:
        self.path = path
        self.digests = digests  # the manifest's record of the folder, kept up to date
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
        # One commit per epoch, renamed in this order: weights are never older than
        # the checkpoint, so a crash part-way is undone by training the epoch again.
        writers: dict[str, Callable[[Path], Any]] = {}
        score = self._score(logs)
        if self.select == "last" or score is None or self.best is None or score > self.best:
            writers[WEIGHTS] = weights_writer(trainer.eval_model)
            if score is not None and (self.best is None or score > self.best):
                self.best = score
        state = trainer.state_dict()
        writers[CHECKPOINT] = lambda tmp: torch.save(state, tmp)
        history = json.dumps(trainer.history.epochs, indent=2) + "\n"
        writers[HISTORY] = lambda tmp: tmp.write_text(history)
        commit(self.path, writers, self.digests)
