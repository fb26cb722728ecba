"""The run folder on disk: what it holds, and reading and writing each file safely.

A run folder holds everything needed to use or continue a trained model::

    config.json          model id and arguments, dataset, preprocessing, all options
    weights.safetensors  the model's weights (safe to load from anyone)
    checkpoint.pt        optimizer state, counters, RNG state (``weights_only`` loadable)
    history.json         per-epoch loss, accuracy, validation figures, seconds
    metrics.json         test_accuracy (a fraction), test_loss, ...

Every file is written to a temporary name and renamed into place
(:mod:`cnnlab.atomic`); :class:`RunFolderWriter` does so after every epoch, so an
interrupted run can be resumed from its last finished epoch.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cnnlab import atomic
from cnnlab.errors import CnnlabError
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


def read_json(path: Path) -> Any:
    """A run folder's JSON file; a missing or damaged one is a :class:`CnnlabError`."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CnnlabError(f"{path}: missing; is {path.parent} a cnnlab run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path}: not valid JSON ({exc})") from None


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


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """The training state in ``folder/checkpoint.pt``, loaded without unpickling code."""
    path = folder / CHECKPOINT
    if not path.exists():
        raise CnnlabError(f"{path}: missing; this run cannot be resumed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CnnlabError(f"{path}: not a readable checkpoint ({exc})") from None


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
