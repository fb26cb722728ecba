"""Training, evaluation and prediction for plain ``torch.nn.Module`` classifiers.

:class:`Trainer` is the Keras-like face of the library: ``fit`` with epochs, batch
size, a validation split or validation data and callbacks; ``evaluate``; ``predict``.
Data is a pair of tensors (uint8 images N×C×H×W and int64 labels) or an
:class:`~cnnlab.data.ImageData`; batches come from :class:`TensorBatches`, so the
whole dataset sits on the training device and no per-sample Python runs.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import distributed, speed
from cnnlab.config import DEFAULTS, TrainConfig, check_option
from cnnlab.data.augment import Augment
from cnnlab.data.loader import Preprocess, TensorBatches
from cnnlab.data.mapped import is_mapped, subset_rows
from cnnlab.errors import CnnlabError
from cnnlab.hardware import has_convolutions, pick_device, pick_precision
from cnnlab.predict import Predictor
from cnnlab.speed.threads import policy_for
from cnnlab.train.callbacks import Callback, uses_step_end
from cnnlab.train.optim import lr_factor, make_optimizer
from cnnlab.train.progress import ProgressBar

Data = Any  # ImageData, or a (images, labels) pair of tensors


def split_data(data: Data) -> tuple[Any, torch.Tensor]:
    """Images and labels from an ImageData or a pair; labels may be one-hot.

    The images are a tensor, or :class:`~cnnlab.data.mapped.MappedImages` (read from
    their file batch by batch) as they came."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels
    else:
        try:
            images, labels = data
        except (TypeError, ValueError):
            raise CnnlabError("data must be an ImageData or an (images, labels) pair") from None
    if not is_mapped(images):
        images = torch.as_tensor(images)
    labels = torch.as_tensor(labels)
    if labels.dim() == 2:  # one-hot → class indices
        labels = labels.argmax(dim=1)
    if images.dtype != torch.uint8:
        raise CnnlabError(f"images must be uint8 (0–255), not {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images, labels.long()


def split_indices(
    n: int, fraction: float, seed: int, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, validation) indices: a seeded random ``fraction`` of ``n`` held out.

    With ``labels`` the split is stratified: ``fraction`` of each class (rounded) is held
    out, so a rare class is in the validation split in proportion, not by luck.
    ``fit(validation_split=f, seed=s, stratify=True)`` holds out exactly
    ``split_indices(n, f, s, labels)[1]``.
    """
    gen = torch.Generator().manual_seed(seed)
    if labels is None:
        perm = torch.randperm(n, generator=gen)
        n_val = int(round(fraction * n))
        if n_val < 1 or n_val >= n:
            raise CnnlabError(f"validation split {fraction} leaves no data on one side")
        return perm[: n - n_val].sort().values, perm[-n_val:].sort().values
    labels = torch.as_tensor(labels).reshape(-1)
    if len(labels) != n:
        raise CnnlabError(f"{n} images but {len(labels)} labels")
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        rows = rows[torch.randperm(len(rows), generator=gen)]
        k = int(round(fraction * len(rows)))
        keep.append(rows[: len(rows) - k])
        held.append(rows[len(rows) - k :])
    kept, val = torch.cat(keep), torch.cat(held)
    if len(val) < 1 or len(kept) < 1:
        raise CnnlabError(f"validation split {fraction} leaves no data on one side")
    return kept.sort().values, val.sort().values


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


class _EpochMetrics:
    """Mean loss and accuracy of the training batches of one epoch."""

    def __init__(self, steps: int, samples: int, device: torch.device) -> None:
        self.losses = torch.zeros(steps, device=device)
        self.predicted = torch.empty(samples, dtype=torch.long, device=device)
        self.labels: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Record one batch: its mean loss, its logits' predictions and its labels."""
        seen, n = self.seen, labels.shape[0]
        self.losses[len(self.counts)] = loss
        torch.argmax(logits, 1, out=self.predicted[seen : seen + n])
        self.labels.append(labels)
        self.counts.append(n)
        self.seen += n

    def result(self, every_rank: bool = False) -> dict[str, float]:
        """``loss`` and ``accuracy`` over the batches recorded so far; with
        ``every_rank``, over those of every rank of a data-parallel job (a collective:
        every rank must call it)."""
        seen = self.seen
        if not seen and not every_rank:
            return {"loss": 0.0, "accuracy": 0.0}
        counts = torch.tensor(self.counts, dtype=torch.float32, device=self.losses.device)
        loss_sum = (self.losses[: len(self.counts)] * counts).sum()
        hits = (self.predicted[:seen] == torch.cat(self.labels)).sum() if seen else 0
        if every_rank:
            loss_total, hits_total, seen = distributed.all_sum(
                [float(loss_sum), float(hits), float(seen)], self.losses.device
            )
            if not seen:
                return {"loss": 0.0, "accuracy": 0.0}
            return {"loss": loss_total / seen, "accuracy": hits_total / seen}
        return {"loss": (loss_sum / seen).item(), "accuracy": float(hits) / seen}


class Trainer:
    """Fit, evaluate and predict with a classifier that outputs logits.

    The training options and their defaults are :class:`~cnnlab.config.TrainConfig`'s
    (see ``cnnlab train --help``); :meth:`from_config` takes them from a config.

    Args:
        model: any ``nn.Module`` mapping a float batch to class logits.
        preprocess: how uint8 images become model input (default: scale to 0–1, 28×28×1).
        optimizer: one of ``sgd nesterov adagrad adadelta adam adamw``.
        lr: base learning rate (``None``: the optimizer's usual one).
        weight_decay, momentum: the optimizer's (momentum for sgd and nesterov).
        schedule: ``constant``, ``step``, ``cosine`` or ``onecycle`` (per step).
        labels: ``"int"`` (sparse cross-entropy) or ``"onehot"`` (categorical).
        label_smoothing: spread this much target mass over the other classes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        precision: ``"auto"`` (bf16 autocast where the hardware computes bf16
            natively, see :func:`~cnnlab.hardware.pick_precision`), ``"bf16"`` or
            ``"fp32"``. Weights, optimizer state and the loss stay fp32.
        channels_last: feed convolutions NHWC-strided batches (``None``: yes when the
            model has a convolution; measured faster on CPU and GPU).
        compile: run the training steps through ``torch.compile`` (pays off on GPUs; on
            the CPUs measured it was slower, see docs/benchmarks.md).
        speed_up: train and predict through the speed layer's view of the model
            (:func:`cnnlab.speed.speed_up`: the same model, the same results up to
            rounding, faster on the CPU).
        augment: a batch augmentation (an :class:`~cnnlab.data.augment.Augment`, its
            settings as a dict, or any function of a float batch), applied to training
            batches only.
        ema: decay of an exponential moving average of the weights (0: off; e.g.
            0.999). Evaluation and prediction then use the averaged weights.
        tta: average predictions over shifted copies of each image (see
            :func:`~cnnlab.predict.shifted_views`) in ``evaluate`` and ``predict``.
        sync_bn: in a data-parallel job (:mod:`cnnlab.distributed`), batch norm by the
            global batch's statistics.

    Started by ``torchrun`` (after :func:`cnnlab.distributed.start`), the trainer is one
    rank of a data-parallel job: the model is wrapped in ``DistributedDataParallel``,
    ``fit`` trains on this rank's share of each global batch of ``batch_size``, and
    evaluation and the epoch figures count every rank's images once.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        preprocess: Preprocess | None = None,
        optimizer: str = DEFAULTS.optimizer,  # type: ignore[assignment]
        lr: float | None = DEFAULTS.lr,
        weight_decay: float = DEFAULTS.weight_decay,  # type: ignore[assignment]
        momentum: float = DEFAULTS.momentum,  # type: ignore[assignment]
        schedule: str = DEFAULTS.schedule,  # type: ignore[assignment]
        labels: str = DEFAULTS.labels,  # type: ignore[assignment]
        label_smoothing: float = DEFAULTS.label_smoothing,  # type: ignore[assignment]
        device: str | torch.device = DEFAULTS.device,
        progress: bool = True,
        precision: str = DEFAULTS.precision,  # type: ignore[assignment]
        channels_last: bool | None = None,
        compile: bool = DEFAULTS.compile,  # type: ignore[assignment]
        speed_up: bool = True,
        augment: Augment | dict[str, float] | Callable[[torch.Tensor], torch.Tensor] | None = (
            DEFAULTS.augment
        ),
        ema: float = DEFAULTS.ema,  # type: ignore[assignment]
        lookahead: bool = DEFAULTS.lookahead,  # type: ignore[assignment]
        bias_lr_scale: float = DEFAULTS.bias_lr_scale,  # type: ignore[assignment]
        tta: bool = DEFAULTS.tta,  # type: ignore[assignment]
        sync_bn: bool = DEFAULTS.sync_bn,  # type: ignore[assignment]
    ) -> None:
        for name, value in (("labels", labels), ("label_smoothing", label_smoothing),
                            ("schedule", schedule), ("ema", ema),
                            ("bias_lr_scale", bias_lr_scale)):  # fmt: skip
            check_option(name, value)
        self.dist = distributed.current()
        self.device = distributed.device_for(pick_device(device))
        if self.device.type == "cpu":
            speed.tune_cpu_allocator()
        # None unless this process runs "auto" threads (cnnlab.speed.threads.set_threads)
        self.threads = policy_for(self.device)
        self.precision = pick_precision(precision, self.device)
        self.channels_last = has_convolutions(model) if channels_last is None else channels_last
        if self.dist.active and sync_bn and distributed.has_batch_norm(model):
            model = distributed.global_batch_norm(model, cuda=self.device.type == "cuda")
        self.model = model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.speed_up = speed_up
        self.fast_model = speed.speed_up(self.model) if speed_up else self.model
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.fast_model
        if self.dist.active:
            # broadcasts rank 0's weights now, and averages the gradients in backward
            self.forward = nn.parallel.DistributedDataParallel(
                self.fast_model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        if compile:
            self.forward = torch.compile(self.forward if self.dist.active else self.model)
        self.augment = Augment.from_dict(augment) if isinstance(augment, dict) else augment
        if isinstance(self.augment, Augment) and not self.augment.active:
            self.augment = None
        self.ema_decay = ema
        self.ema_model: nn.Module | None = None
        if ema:
            self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.tta = tta
        self.preprocess = preprocess or Preprocess()
        self.optimizer = make_optimizer(
            optimizer, _param_groups(self.model, bias_lr_scale), lr, weight_decay, momentum
        )
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        # the slow weights of lookahead (floating-point state: parameters and batch-norm
        # statistics), None when off
        self.lookahead: dict[str, torch.Tensor] | None = None
        if lookahead:
            self.lookahead = _float_state(self.model)
        self.schedule = schedule
        self.labels = labels
        self.label_smoothing = label_smoothing
        self.progress = progress and self.dist.is_writer  # one process prints
        #: Every rank's RNG states at the last epoch's end (data-parallel jobs only).
        self.rank_rng: list[dict[str, torch.Tensor]] | None = None
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.total_steps = 0
        self.history = History()
        self.stop_training = False
        self._predictor: Predictor | None = None
        #: The validation images and labels of the running ``fit`` (None without), and the
        #: class each was given at the last epoch's end (on the CPU), for callbacks.
        self.validation: tuple[Any, torch.Tensor] | None = None
        self.val_predicted: torch.Tensor | None = None
        #: How many images the last evaluation counted (over every rank).
        self.evaluated = 0

    @classmethod
    def from_config(cls, model: nn.Module, config: TrainConfig, **kwargs: Any) -> Trainer:
        """A trainer for ``model`` with every option of a resolved ``config`` that the
        trainer takes (the others, such as epochs, are :meth:`fit`'s); ``kwargs`` add
        the ones a config does not hold (``preprocess``, ``progress``, ``speed_up``)."""
        return cls(model, **trainer_options(config), **kwargs)

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

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of this trainer's precision (a no-op for fp32)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def eval_model(self) -> nn.Module:
        """The model evaluation and prediction use: the EMA average when kept."""
        return self.ema_model if self.ema_model is not None else self.model

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up as TensorFlow's ExponentialMovingAverage: early on, average less.
        assert self.ema_model is not None
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
        ema_params = [p for p in self.ema_model.parameters()]
        params = [p.detach() for p in self.model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for eb, b in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
            eb.copy_(b)

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
        stratify: bool = True,
    ) -> History:
        """Train for ``epochs`` more epochs (or until ``steps`` optimizer steps in all).

        ``validation_split`` holds out that fraction of ``x`` (a seeded random choice, of
        each class in proportion unless ``stratify`` is false) and reports
        ``val_loss``/``val_accuracy`` after every epoch; ``validation_data`` gives a
        separate set instead. Calling ``fit`` again continues training.
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
            keep, held = split_indices(
                len(images), validation_split, seed, labels if stratify else None
            )
            # from a file: index views, nothing read until the batches are
            val = (subset_rows(images, held), labels[held])
            images, labels = subset_rows(images, keep), labels[keep]
        world = self.dist.world_size
        if batch_size % world:
            raise CnnlabError(
                f"--batch-size {batch_size} does not divide among {world} processes; "
                f"give a multiple of {world}"
            )
        if self.dist.active and self.step == 0 and self.rank_rng is None:
            # each rank draws its own augmentations, reproducibly from the seed
            torch.manual_seed(seed * 1_000_003 + self.dist.rank)
        batches = TensorBatches(
            images,
            labels,
            batch_size,
            self.preprocess,
            shuffle=shuffle,
            seed=seed,
            device=self.device,
            augment=self.augment,
            channels_last=self.channels_last,
            rank=self.dist.rank,
            world_size=world,
        )
        steps_per_epoch = len(batches)
        if steps:
            epochs = -(-(steps - self.step) // steps_per_epoch)
            self.total_steps = steps
        else:
            self.total_steps = self.step + epochs * steps_per_epoch
        factor = lr_factor(self.schedule, self.total_steps)
        self.stop_training = False
        self.validation, self.val_predicted = val, None
        step_callbacks = [cb for cb in callbacks if uses_step_end(cb)]
        for cb in callbacks:
            cb.on_train_begin(self)
        final_epoch = self.epoch + epochs
        while self.epoch < final_epoch and not self.stop_training:
            batches.set_epoch(self.epoch)
            logs = self._train_epoch(batches, factor, final_epoch, step_callbacks)
            if val is not None:
                v, self.val_predicted = self._score(
                    val[0], val[1], max(batch_size, 1000), tta=False
                )
                logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
            if self.dist.active:
                self.rank_rng = distributed.gather_objects(self._rng_state())
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

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, weight: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on a prepared batch; returns the (detached) loss and logits.

        ``weight`` scales the loss that is differentiated (a data-parallel rank's share
        of the global batch, see :func:`cnnlab.distributed.shard_epoch`)."""
        with self.autocast():
            logits = self.forward(x)
            loss = self._loss(logits.float(), y)
        for group in self.optimizer.param_groups:  # zero_grad(set_to_none=True), lean
            for p in group["params"]:
                p.grad = None
        (loss if weight == 1.0 else loss * weight).backward()
        self.optimizer.step()
        self.step += 1
        if self.ema_model is not None:
            self._update_ema()
        if self.lookahead is not None and (
            self.step % LOOKAHEAD_EVERY == 0 or self.step == self.total_steps
        ):
            self._update_lookahead()
        return loss.detach(), logits.detach()

    @torch.no_grad()
    def _update_lookahead(self) -> None:
        # The slow copy moves towards the weights by (1 - keep), then the weights jump to
        # it. keep grows as the cube of progress, so early training is untouched and late
        # training averages; the last step pulls too, so training ends on the slow copy
        # with the progress of its last steps in it.
        assert self.lookahead is not None
        t = min(1.0, self.step / max(1, self.total_steps))
        keep = LOOKAHEAD_KEEP * t**3
        fast = _float_state(self.model, copy=False)
        slow = [self.lookahead[k] for k in fast]
        torch._foreach_lerp_(slow, list(fast.values()), 1.0 - keep)
        torch._foreach_copy_(list(fast.values()), slow)

    def _train_epoch(
        self,
        batches: TensorBatches,
        factor: Any,
        final_epoch: int,
        step_callbacks: Sequence[Callback] = (),
    ) -> dict[str, float]:
        self.model.train()
        steps = min(len(batches), self.total_steps - self.step)  # a last, partial epoch
        bar = ProgressBar(steps, self.epoch + 1, final_epoch, enabled=self.progress)
        self._bar = bar
        # Each step writes its loss and predictions into buffers (two operations, not
        # the five of running sums); the epoch's figures are computed once at the end.
        metrics = _EpochMetrics(len(batches), batches.num_samples, self.device)
        if self.threads is not None:
            self.threads.pause()  # the time since the last epoch's last step is no step
        start = time.perf_counter()
        for i, (xb, yb) in enumerate(batches, 1):
            if self.total_steps and self.step >= self.total_steps:
                break
            self._set_lr(factor(self.step))
            weight = batches.weights[i - 1]
            # (subclasses that override train_step(x, y) keep working in one process)
            step = (xb, yb) if weight == 1.0 else (xb, yb, weight)
            loss, logits = self.train_step(*step)
            if weight:  # a zero weight: a stand-in row, not this rank's image
                metrics.add(loss, logits, yb)
            for cb in step_callbacks:
                cb.on_step_end(self, loss, logits, yb)
            if self.threads is not None:
                self.threads.tick()
            if bar.due(i):  # a terminal redraw, at most ~10 a second
                bar.update(i, metrics.result())
        return {
            **metrics.result(every_rank=self.dist.active),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
        }

    # ---------------------------------------------------------------- inference
    def _images(self, x: Data | torch.Tensor) -> Any:
        if isinstance(x, tuple):
            x = x[0]
        images = x.images if hasattr(x, "images") else x
        if not is_mapped(images):
            images = torch.as_tensor(images)
        return images.unsqueeze(1) if images.dim() == 3 else images

    def predict(
        self, x: Data | torch.Tensor, batch_size: int = 1000, tta: bool | None = None
    ) -> torch.Tensor:
        """Class probabilities (N × classes, on the CPU) for uint8 images N×C×H×W.

        With ``tta`` (default: the trainer's setting) each image's probabilities are the
        mean over its :func:`~cnnlab.predict.shifted_views`, mirrored views included when
        the training augmentation flips images.
        """
        tta = self.tta if tta is None else tta
        return self.predictor.probabilities(self._images(x), batch_size=batch_size, tta=tta)

    @property
    def predictor(self) -> Predictor:
        """What ``predict`` and ``evaluate`` run: :attr:`eval_model` with the
        trainer's preprocessing, through the speed layer's view unless turned off."""
        model = self.eval_model
        if self._predictor is None or self._predictor.model is not model:
            self._predictor = Predictor(
                model,
                self.preprocess,
                flip=bool(getattr(self.augment, "flip", 0)),
                reflect=bool(getattr(self.augment, "crop", 0)),
                speed_up=self.speed_up,
                channels_last=self.channels_last,
                forward=self.fast_model if model is self.model else None,
            )
        return self._predictor

    def evaluate(
        self, x: Data, batch_size: int = 1000, tta: bool | None = None
    ) -> dict[str, float]:
        """Mean cross-entropy ``loss`` and ``accuracy`` (a fraction) on ``x``.

        In a data-parallel job every rank calls it (a collective): each predicts its own
        contiguous share and the sums are added over ranks, so every image counts once
        (:attr:`evaluated` says how many)."""
        images, labels = split_data(x)
        scores, _ = self._score(images, labels, batch_size, tta)
        return scores

    def _score(
        self, images: Any, labels: torch.Tensor, batch_size: int, tta: bool | None
    ) -> tuple[dict[str, float], torch.Tensor | None]:
        """Scores on ``images`` and the class given to each (on the CPU), every rank's
        share counted once; sets :attr:`evaluated` to the number of images counted."""
        if not self.dist.active:
            probs = self.predict(images, batch_size, tta)
            self.evaluated = len(labels)
            return _scores(probs, labels), probs.argmax(1)
        rows = distributed.rows_of_rank(len(labels), self.dist)
        probs = self.predict(subset_rows(images, rows), batch_size, tta)
        mine = labels[rows]
        nll = F.nll_loss(probs.clamp_min(1e-12).log(), mine, reduction="sum")
        hits = (probs.argmax(1) == mine).sum()
        loss, correct, count = distributed.all_sum(
            [float(nll), float(hits), float(len(mine))], self.device
        )
        self.evaluated = int(count)
        predicted = torch.cat(distributed.gather_objects(probs.argmax(1)))
        return {"loss": loss / count, "accuracy": correct / count}, predicted

    # -------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, EMA, optimizer, counters, RNG, history."""
        state: dict[str, Any] = {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "base_lrs": list(self.base_lrs),
            "epoch": self.epoch,
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "history": [dict(r) for r in self.history.epochs],
        }
        if self.ema_model is not None:
            state["ema"] = {k: v.detach().clone() for k, v in self.ema_model.state_dict().items()}
        if self.lookahead is not None:
            state["lookahead"] = {k: v.clone() for k, v in self.lookahead.items()}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.dist.active:
            state["world_size"] = self.dist.world_size
            if self.rank_rng is not None:
                state["rank_rng"] = [dict(r) for r in self.rank_rng]
        return state

    def _rng_state(self) -> dict[str, torch.Tensor]:
        """This process's random generator states (CPU, and its GPU's on CUDA)."""
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def check_state_dict(self, state: Any) -> None:
        """Raise a :class:`CnnlabError` unless ``state`` is what :meth:`state_dict` of a
        trainer like this one saves: every key, counters as integers, tensors of the
        model's shapes, optimizer state of its parameters' shapes, a CPU RNG state.

        Resuming checks first and loads after: a bad value found half-way would leave a
        half-restored trainer, and a bad RNG state aborts the interpreter outright."""
        if not isinstance(state, dict):
            raise CnnlabError(f"holds {type(state).__name__}, not a training state")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise CnnlabError(f"has no {', '.join(missing)}")
        saved_world = state.get("world_size", 1)
        if saved_world != self.dist.world_size:
            raise CnnlabError(
                f"was written by {saved_world} process(es); resume with the same number "
                f"(--nproc {saved_world}), not {self.dist.world_size}"
            )
        if self.dist.active:
            rngs = state.get("rank_rng")
            if not isinstance(rngs, list) or len(rngs) != self.dist.world_size:
                raise CnnlabError(f"has no random state for each of {saved_world} processes")
            rank_rng = rngs[self.dist.rank]
            if not isinstance(rank_rng, dict) or not _is_rng(rank_rng.get("torch")):
                raise CnnlabError(f"rank_rng[{self.dist.rank}] is not a random generator state")
        for key in ("epoch", "step"):
            value = state[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CnnlabError(f"{key} must be a non-negative integer, not {value!r:.40}")
        _check_tensors("model", state.get("model", {}), self.model.state_dict())
        if self.ema_model is not None and "ema" in state:
            _check_tensors("ema", state["ema"], self.ema_model.state_dict())
        if self.lookahead is not None and "lookahead" in state:
            _check_tensors("lookahead", state["lookahead"], self.lookahead)
        _check_optimizer(state["optimizer"], self.optimizer)
        lrs = state["base_lrs"]
        if (
            not isinstance(lrs, list | tuple)
            or len(lrs) != len(self.base_lrs)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in lrs)
        ):
            raise CnnlabError(f"base_lrs must be {len(self.base_lrs)} numbers")
        if not _is_rng(state["torch_rng"]):
            raise CnnlabError("torch_rng is not a CPU random generator state")
        check_history(state["history"], "history")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (checked by :meth:`check_state_dict`)."""
        self.check_state_dict(state)
        if "model" in state:
            self.model.load_state_dict(state["model"])
        if self.ema_model is not None and "ema" in state:
            self.ema_model.load_state_dict(state["ema"])
        if self.lookahead is not None and "lookahead" in state:
            for key, value in state["lookahead"].items():
                self.lookahead[key].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.dist.active:  # each rank goes on with its own draws
            self.rank_rng = [dict(r) for r in state["rank_rng"]]
            mine = self.rank_rng[self.dist.rank]
            torch.set_rng_state(mine["torch"])
            if "cuda" in mine and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)
        self.history = History([dict(r) for r in state["history"]])


def _is_rng(value: Any) -> bool:
    """Whether ``value`` is a CPU random generator state (a bad one aborts the process)."""
    expected = torch.get_rng_state()
    return (
        isinstance(value, torch.Tensor)
        and value.dtype == torch.uint8
        and value.shape == expected.shape
    )


def _scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and ``accuracy`` of class probabilities."""
    return {
        "loss": F.nll_loss(probs.clamp_min(1e-12).log(), labels).item(),
        "accuracy": (probs.argmax(1) == labels).float().mean().item(),
    }


#: Lookahead's period in steps and its strongest pull (cifar10-airbench's: 0.95 per step).
LOOKAHEAD_EVERY = 5
LOOKAHEAD_KEEP = 0.95**LOOKAHEAD_EVERY


def _float_state(model: nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """The floating-point tensors of ``model``'s state (weights and running statistics)."""
    state = model.state_dict(keep_vars=False)
    return {
        k: (v.detach().clone() if copy else v.detach())
        for k, v in state.items()
        if v.is_floating_point()
    }


def _param_groups(model: nn.Module, bias_lr_scale: float) -> list[dict[str, Any]]:
    """One group of every trainable parameter; with ``bias_lr_scale`` ≠ 1 the shifts of
    batch norm get a group of their own, which the optimizer builder's learning rate and
    weight decay scale (see :func:`~cnnlab.train.optim.make_optimizer`)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if bias_lr_scale == 1.0:
        return [{"params": trainable}]
    norms = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
    shifts = {
        id(m.bias)
        for m in model.modules()
        if isinstance(m, norms) and m.bias is not None and m.bias.requires_grad
    }
    groups = [{"params": [p for p in trainable if id(p) not in shifts]}]
    if shifts:
        groups.append(
            {"params": [p for p in trainable if id(p) in shifts], "lr_scale": bias_lr_scale}
        )
    return groups


_STATE_KEYS = ("optimizer", "base_lrs", "epoch", "step", "torch_rng", "history")


def _check_tensors(name: str, got: Any, expected: dict[str, torch.Tensor]) -> None:
    if not isinstance(got, dict) or set(got) != set(expected):
        raise CnnlabError(f"{name} does not hold this model's tensors")
    for key, want in expected.items():
        value = got[key]
        if not isinstance(value, torch.Tensor) or value.shape != want.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CnnlabError(f"{name}.{key} is {shape}, the model needs {tuple(want.shape)}")


def _check_optimizer(got: Any, optimizer: torch.optim.Optimizer) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(got, dict) or not isinstance(got.get("state"), dict):
        raise CnnlabError("optimizer is not an optimizer state")
    groups = got.get("param_groups")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise CnnlabError("optimizer.param_groups is not a list of groups")
    ids = [i for g in groups for i in g.get("params", ())]
    if ids != list(range(len(params))):
        raise CnnlabError(f"optimizer is for other parameters than this model's {len(params)}")
    for index, slots in got["state"].items():
        if (
            not isinstance(index, int)
            or not 0 <= index < len(params)
            or not isinstance(slots, dict)
        ):
            raise CnnlabError(f"optimizer.state has an entry {index!r:.20} for no parameter")
        for slot, value in slots.items():
            if not isinstance(value, torch.Tensor | int | float) or isinstance(value, bool):
                raise CnnlabError(f"optimizer.state[{index}].{slot} is not a number or tensor")
            if (
                isinstance(value, torch.Tensor)
                and value.dim()
                and value.shape != (params[index].shape)
            ):
                raise CnnlabError(
                    f"optimizer.state[{index}].{slot} is {tuple(value.shape)}, "
                    f"its parameter {tuple(params[index].shape)}"
                )


def check_history(rows: Any, name: str) -> None:
    """Raise a :class:`CnnlabError` unless ``rows`` is a history: a list of per-epoch
    dicts of metric name → number."""
    if not isinstance(rows, list):
        raise CnnlabError(f"{name} must be a list of per-epoch figures, not {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool)
            for k, v in row.items()
        ):
            raise CnnlabError(f"{name}[{i}] is not a dict of metric name → number")


def trainer_options(config: TrainConfig) -> dict[str, Any]:
    """The options of ``config`` that :class:`Trainer` takes, by name (``model``, the
    config's model id, is not the trainer's module)."""
    names = set(inspect.signature(Trainer).parameters) - {"model"}
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name in names}


def fit(model: nn.Module, x: Data, **kwargs: Any) -> History:
    """One-call training: :class:`Trainer`'s options and :meth:`Trainer.fit`'s together."""
    trainer_keys = set(inspect.signature(Trainer).parameters) - {"model"}
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
