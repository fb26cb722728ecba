"""Callbacks: hooks into the training loop, as in Keras."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from cnnlab.train.trainer import Trainer


class Callback:
    """Base class: override the hooks you need. ``logs`` holds the epoch's metrics."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once before the first epoch."""

    def on_step_end(
        self, trainer: Trainer, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Called after each optimizer step (``trainer.step`` counts it, from 1) with the
        batch's detached loss, logits and labels, still on the training device: reading
        them (``.item()``) waits for the device, so keep them and read many at once.
        The trainer calls this only on callbacks that override it."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        """Called after each epoch (``epoch`` counts from 1) with its metrics."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once after the last epoch."""


def uses_step_end(callback: Callback) -> bool:
    """Whether ``callback`` overrides :meth:`Callback.on_step_end` (the others cost nothing
    per step)."""
    return type(callback).on_step_end is not Callback.on_step_end


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    With ``restore_best``, the model (its EMA average, when the trainer keeps one) ends
    with the weights of its best epoch. A resumed trainer's history counts: the best
    value and the epochs without improvement are recomputed from it.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        self.restore_best = restore_best
        self.mode = "min" if "loss" in monitor else "max"
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_state: dict[str, Any] | None = None
        self.wait = 0

    def on_train_begin(self, trainer: Trainer) -> None:
        for row in trainer.history.epochs:
            value = row.get(self.monitor)
            if value is None:
                continue
            if self._improved(value):
                self.best, self.best_epoch, self.wait = value, int(row["epoch"]), 0
            else:
                self.wait += 1

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        value = logs.get(self.monitor)
        if value is None:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = copy.deepcopy(trainer.eval_model.state_dict())
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_state is not None:
            trainer.eval_model.load_state_dict(self.best_state)


class LambdaCallback(Callback):
    """Wrap a plain function ``fn(trainer, epoch, logs)`` as an epoch-end callback."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        self.fn(trainer, epoch, logs)
