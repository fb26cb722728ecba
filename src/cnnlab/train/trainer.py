"""Training, evaluation and prediction for plain ``torch.nn.Module`` classifiers.

:class:`Trainer` is the Keras-like face of the library: ``fit`` with epochs, batch
size, a validation split or validation data and callbacks; ``evaluate``; ``predict``.
Data is a pair of tensors (uint8 images N×C×H×W and int64 labels) or an
:class:`~cnnlab.data.ImageData`; batches come from :class:`TensorBatches`, so the
whole dataset sits on the training device and no per-sample Python runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.loader import Preprocess, TensorBatches
from cnnlab.errors import CnnlabError
from cnnlab.train.callbacks import Callback
from cnnlab.train.optim import lr_factor, make_optimizer
from cnnlab.train.progress import ProgressBar

Data = Any  # ImageData, or a (images, labels) pair of tensors


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; anything else is checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CnnlabError(f"unknown device {device!r} (use auto, cpu, cuda or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CnnlabError(f"device {device!r} asked for, but no CUDA GPU is available")
    return dev


def split_data(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from an ImageData or a pair; labels may be one-hot."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels
    else:
        try:
            images, labels = data
        except (TypeError, ValueError):
            raise CnnlabError("data must be an ImageData or an (images, labels) pair") from None
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if labels.dim() == 2:  # one-hot → class indices
        labels = labels.argmax(dim=1)
    if images.dtype != torch.uint8:
        raise CnnlabError(f"images must be uint8 (0–255), not {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images, labels.long()


@dataclass
class History:
    """Per-epoch metrics, as Keras' ``History``: ``history["val_accuracy"][-1]``."""

    epochs: list[dict[str, float]] = field(default_factory=list)

    @property
    def history(self) -> dict[str, list[float]]:
        """Metric name → list of per-epoch values."""
        keys: dict[str, list[float]] = {}
        for row in self.epochs:
            for k, v in row.items():
                keys.setdefault(k, []).append(v)
        return keys

    def append(self, row: dict[str, float]) -> None:
        """Add one epoch's metrics."""
        self.epochs.append(dict(row))


class Trainer:
    """Fit, evaluate and predict with a classifier that outputs logits.

    Args:
        model: any ``nn.Module`` mapping a float batch to class logits.
        preprocess: how uint8 images become model input (default: scale to 0–1, 28×28×1).
        optimizer: one of ``sgd nesterov adagrad adadelta adam adamw``.
        lr: base learning rate (``None``: the optimizer's usual one).
        schedule: ``constant``, ``step``, ``cosine`` or ``onecycle`` (per step).
        labels: ``"int"`` (sparse cross-entropy) or ``"onehot"`` (categorical).
        label_smoothing: spread this much target mass over the other classes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        preprocess: Preprocess | None = None,
        optimizer: str = "adam",
        lr: float | None = None,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        schedule: str = "constant",
        labels: str = "int",
        label_smoothing: float = 0.0,
        device: str | torch.device = "auto",
        progress: bool = True,
    ) -> None:
        if labels not in ("int", "onehot"):
            raise CnnlabError(f"labels must be 'int' or 'onehot', not {labels!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise CnnlabError(f"label smoothing must be in [0, 1), not {label_smoothing}")
        lr_factor(schedule, 1)  # validates the name early
        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.preprocess = preprocess or Preprocess()
        self.optimizer = make_optimizer(optimizer, model.parameters(), lr, weight_decay, momentum)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.schedule = schedule
        self.labels = labels
        self.label_smoothing = label_smoothing
        self.progress = progress
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.total_steps = 0
        self.history = History()
        self.stop_training = False

    # ------------------------------------------------------------------ training
    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.labels == "onehot":
            target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
            if self.label_smoothing:
                target = (
                    target * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
                )
            return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def _set_lr(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def fit(
        self,
        x: Data,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        validation_split: float = 0.0,
        validation_data: Data | None = None,
        callbacks: Sequence[Callback] = (),
        steps: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
    ) -> History:
        """Train for ``epochs`` more epochs (or until ``steps`` optimizer steps in all).

        ``validation_split`` holds out that fraction of ``x`` (a seeded random choice)
        and reports ``val_loss``/``val_accuracy`` after every epoch; ``validation_data``
        gives a separate set instead. Calling ``fit`` again continues training.
        """
        images, labels = split_data(x)
        if epochs < 0 or (epochs == 0 and not steps):
            raise CnnlabError(f"epochs must be a positive number, not {epochs}")
        if not 0.0 <= validation_split < 1.0:
            raise CnnlabError(f"validation split must be in [0, 1), not {validation_split}")
        val = None
        if validation_data is not None:
            val = split_data(validation_data)
        elif validation_split > 0:
            perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
            n_val = int(round(validation_split * len(images)))
            if n_val < 1 or n_val >= len(images):
                raise CnnlabError(f"validation split {validation_split} leaves no data on one side")
            keep, held = perm[: len(images) - n_val].sort().values, perm[-n_val:].sort().values
            val = (images[held], labels[held])
            images, labels = images[keep], labels[keep]
        batches = TensorBatches(
            images,
            labels,
            batch_size,
            self.preprocess,
            shuffle=shuffle,
            seed=seed,
            device=self.device,
        )
        steps_per_epoch = len(batches)
        if steps:
            epochs = -(-(steps - self.step) // steps_per_epoch)
            self.total_steps = steps
        else:
            self.total_steps = self.step + epochs * steps_per_epoch
        factor = lr_factor(self.schedule, self.total_steps)
        self.stop_training = False
        for cb in callbacks:
            cb.on_train_begin(self)
        final_epoch = self.epoch + epochs
        while self.epoch < final_epoch and not self.stop_training:
            batches.set_epoch(self.epoch)
            logs = self._train_epoch(batches, factor, final_epoch)
            if val is not None:
                v = self.evaluate(val, batch_size=max(batch_size, 1000))
                logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
            self.epoch += 1
            logs = {"epoch": float(self.epoch), **logs}
            self.history.append(logs)
            self._bar.close({k: v for k, v in logs.items() if k not in ("epoch", "lr", "seconds")})
            for cb in callbacks:
                cb.on_epoch_end(self, self.epoch, logs)
            if steps and self.step >= steps:
                break
        for cb in callbacks:
            cb.on_train_end(self)
        return self.history

    def _train_epoch(
        self, batches: TensorBatches, factor: Any, final_epoch: int
    ) -> dict[str, float]:
        self.model.train()
        bar = ProgressBar(len(batches), self.epoch + 1, final_epoch, enabled=self.progress)
        self._bar = bar
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        for i, (xb, yb) in enumerate(batches, 1):
            if self.total_steps and self.step >= self.total_steps:
                break
            self._set_lr(factor(self.step))
            logits = self.model(xb)
            loss = self._loss(logits, yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            n = yb.shape[0]
            seen += n
            loss_sum += loss.detach() * n
            correct += (logits.detach().argmax(1) == yb).sum()
            if bar.live:
                bar.update(
                    i, {"loss": (loss_sum / seen).item(), "accuracy": (correct / seen).item()}
                )
        return {
            "loss": (loss_sum / max(1, seen)).item(),
            "accuracy": (correct.float() / max(1, seen)).item(),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }

    # ---------------------------------------------------------------- inference
    @torch.inference_mode()
    def predict_logits(self, x: Data | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Logits for uint8 images (N×C×H×W, or an ImageData), on the CPU."""
        images = x.images if hasattr(x, "images") else torch.as_tensor(x)
        if isinstance(x, tuple):
            images = torch.as_tensor(x[0])
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.model.eval()
        outs = []
        for start in range(0, len(images), batch_size):
            xb = self.preprocess(images[start : start + batch_size].to(self.device))
            outs.append(self.model(xb).float().cpu())
        return torch.cat(outs) if outs else torch.empty(0)

    def predict(self, x: Data | torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Class probabilities (N × classes) for uint8 images."""
        return self.predict_logits(x, batch_size).softmax(dim=1)

    def evaluate(self, x: Data, batch_size: int = 1000) -> dict[str, float]:
        """Mean cross-entropy ``loss`` and ``accuracy`` (a fraction) on ``x``."""
        images, labels = split_data(x)
        logits = self.predict_logits(images, batch_size)
        return {
            "loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item(),
        }

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: optimizer, counters, RNG state, history."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "base_lrs": list(self.base_lrs),
            "epoch": self.epoch,
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "history": [dict(r) for r in self.history.epochs],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        self.history = History([dict(r) for r in state["history"]])


def fit(model: nn.Module, x: Data, **kwargs: Any) -> History:
    """One-call training: ``Trainer`` options and ``Trainer.fit`` options together."""
    trainer_keys = {
        "preprocess",
        "optimizer",
        "lr",
        "weight_decay",
        "momentum",
        "schedule",
        "labels",
        "label_smoothing",
        "device",
        "progress",
    }
    trainer = Trainer(model, **{k: v for k, v in kwargs.items() if k in trainer_keys})
    return trainer.fit(x, **{k: v for k, v in kwargs.items() if k not in trainer_keys})


def evaluate(
    model: nn.Module, x: Data, preprocess: Preprocess | None = None, device: str = "auto"
) -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``x``."""
    return Trainer(model, preprocess=preprocess, device=device, progress=False).evaluate(x)


def predict(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: Preprocess | None = None,
    device: str = "auto",
) -> torch.Tensor:
    """Class probabilities of ``model`` for uint8 images."""
    return Trainer(model, preprocess=preprocess, device=device, progress=False).predict(images)
