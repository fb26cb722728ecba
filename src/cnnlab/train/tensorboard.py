"""TensorBoard logging of training: :class:`TensorBoardLogger`, a callback.

What a run logs, in one folder per run (``tensorboard --logdir runs`` shows runs side
by side), as Keras' ``TensorBoard`` callback and PyTorch's ``SummaryWriter`` users expect:

- ``step/loss``, ``step/accuracy`` (of the batch) and ``step/lr`` at every optimizer step,
  the x axis counting steps from 1. The values stay on the training device and are read
  :data:`STEP_FLUSH` steps at a time and at each epoch's end, so logging adds no wait for
  the device to a step.
- ``epoch/<name>`` for every figure of the epoch (``loss``, ``accuracy``, ``val_loss``,
  ``val_accuracy``, ``lr``, ``seconds``: history.json's), the x axis counting epochs.
- ``weights/<parameter>`` and ``gradients/<parameter>`` histograms every epoch (the
  gradients of the epoch's last step, still on the parameters when the epoch ends).
- ``kernels/<layer>``: the first convolution's kernels as a grid image, every epoch.
- ``misclassified/validation``: up to :data:`MISCLASSIFIED` wrong validation images as a
  grid, each captioned with its true and predicted class, every epoch (with a validation
  split); ``misclassified/list`` (the Text tab) names them in a table, with the count of
  all the wrong ones.
- the model graph, traced on a copy of the model with two example images.
- at the end (:meth:`TensorBoardLogger.finish`): ``test/accuracy`` and ``test/loss``, and
  the hyper-parameters with these final figures as metrics, written into the same folder
  (``SummaryWriter.add_hparams`` would put them into a new sub-folder of their own).

A resumed run writes into the same folder and continues the same curves: the writer is
opened with ``purge_step`` at the first step still to come, so TensorBoard drops whatever
an interrupted process wrote after the checkpoint the run resumes from.

The ``tensorboard`` package is an optional extra (``pip install 'cnnlab[tensorboard]'``);
this module imports it only when a logger is made.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train.callbacks import Callback

if TYPE_CHECKING:
    from cnnlab.train.trainer import Trainer

__all__ = [
    "MISCLASSIFIED",
    "STEP_FLUSH",
    "TensorBoardLogger",
    "image_grid",
    "is_main_process",
    "kernel_grid",
    "require_tensorboard",
]

#: Per-step values kept on the device before they are read and written in one go.
STEP_FLUSH = 100
#: Wrong validation images shown in the grid.
MISCLASSIFIED = 32
#: Kernels (channels of them, for a first layer that is not grey or colour) in the grid.
KERNELS = 256


def require_tensorboard() -> None:
    """Raise a one-line :class:`CnnlabError` saying how to install TensorBoard when
    ``torch.utils.tensorboard`` cannot be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise CnnlabError(
            "--tensorboard needs the tensorboard package: pip install 'cnnlab[tensorboard]' "
            "(or pip install tensorboard)"
        ) from None


def is_main_process() -> bool:
    """Whether this process writes the logs: the only one, or rank 0 of a distributed run."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return True


class TensorBoardLogger(Callback):
    """Log training to TensorBoard event files in ``log_dir`` (see the module's doc).

    Args:
        log_dir: the run's own folder of event files.
        example: a few uint8 training images (N×C×H×W) to trace the model graph with
            (None: no graph).
        classes: the class names, for the captions of misclassified images.
        hparams: the run's hyper-parameters (name → number, text, bool; other values are
            written as JSON, None left out), written by :meth:`finish`.
    """

    def __init__(
        self,
        log_dir: str | Path,
        *,
        example: torch.Tensor | None = None,
        classes: Sequence[str] = (),
        hparams: dict[str, Any] | None = None,
    ) -> None:
        require_tensorboard()
        self.log_dir = Path(log_dir)
        self.example = example
        self.classes = [str(c) for c in classes]
        self.hparams = {k: _hparam(v) for k, v in (hparams or {}).items() if v is not None}
        self.enabled = is_main_process()
        self.writer: Any = None  # a SummaryWriter once training begins
        self._steps: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []
        self._last_logs: dict[str, float] = {}

    # ------------------------------------------------------------------ callbacks
    def on_train_begin(self, trainer: Trainer) -> None:
        if not self.enabled or self.writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        # Events of steps from purge_step on, left by an interrupted process after the
        # checkpoint this training starts from, are dropped when TensorBoard reads them.
        self.writer = SummaryWriter(str(self.log_dir), purge_step=trainer.step + 1)
        self._add_graph(trainer)

    def on_step_end(
        self, trainer: Trainer, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        if self.writer is None:
            return
        hits = (logits.argmax(1) == labels).float().mean()
        self._steps.append((trainer.step, loss, hits, trainer.optimizer.param_groups[0]["lr"]))
        if len(self._steps) >= STEP_FLUSH:
            self._write_steps()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, Any]) -> None:
        if self.writer is None:
            return
        self._write_steps()
        for key, value in logs.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self._last_logs = {k: float(v) for k, v in logs.items() if k != "epoch"}
        for name, p in trainer.model.named_parameters():
            self._histogram(f"weights/{name}", p, epoch)
            if p.grad is not None:
                self._histogram(f"gradients/{name}", p.grad, epoch)
        self._add_kernels(trainer.model, epoch)
        self._add_misclassified(trainer, epoch)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self._write_steps()
            self.writer.flush()

    # ---------------------------------------------------------------- the end
    def finish(self, metrics: dict[str, Any], epoch: int) -> None:
        """Write the test figures of ``metrics`` (``test_accuracy``, ``test_loss``) at
        ``epoch`` and the hyper-parameters with the final figures, into the run's folder."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        self._write_steps()
        final = {f"epoch/{k}": v for k, v in self._last_logs.items() if k != "seconds"}
        for key in ("accuracy", "loss"):
            value = metrics.get(f"test_{key}")
            if isinstance(value, int | float):
                self.writer.add_scalar(f"test/{key}", value, epoch)
                final[f"test/{key}"] = float(value)
        # The metrics' values are these scalar tags' last values; the three summaries
        # name them and hold the hyper-parameters, in this writer's file.
        for summary in hparams(self.hparams, final):
            self.writer.file_writer.add_summary(summary, epoch)
        self.writer.flush()

    def close(self) -> None:
        """Write what is pending and close the event file."""
        if self.writer is not None:
            self._write_steps()
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ pieces
    def _write_steps(self) -> None:
        if not self._steps:
            return
        steps, losses, hits, lrs = zip(*self._steps, strict=True)
        self._steps = []
        # one read from the device for all the steps kept
        values = torch.stack([torch.stack(losses).float(), torch.stack(hits).float()])
        loss_values, hit_values = values.cpu().tolist()
        for step, loss, accuracy, lr in zip(steps, loss_values, hit_values, lrs, strict=True):
            self.writer.add_scalar("step/loss", loss, step)
            self.writer.add_scalar("step/accuracy", accuracy, step)
            self.writer.add_scalar("step/lr", lr, step)

    def _histogram(self, tag: str, values: torch.Tensor, epoch: int) -> None:
        # SummaryWriter.add_histogram's sum of squares is numpy's dot, which wakes the
        # BLAS thread pool, whose threads then spin beside the training's: steps after
        # each epoch were 12% slower on 2 cores. The same buckets are counted here
        # without BLAS, and written raw.
        flat = values.detach().double().flatten().cpu().numpy()
        flat = flat[np.isfinite(flat)]  # a diverged weight must not stop the training
        counts, limits = np.histogram(flat, bins=self.writer.default_bins)
        filled = np.flatnonzero(counts)
        if not len(filled):
            return
        start, end = int(filled[0]), int(filled[-1]) + 1
        # TensorBoard keeps each bucket's right limit: an empty bucket on the left keeps
        # the leftmost one (as SummaryWriter's own histograms do)
        counts = counts[start - 1 : end] if start > 0 else np.concatenate([[0], counts[:end]])
        self.writer.add_histogram_raw(
            tag,
            min=float(flat.min()),
            max=float(flat.max()),
            num=int(flat.size),
            sum=float(flat.sum()),
            sum_squares=float(np.square(flat).sum()),
            bucket_limits=limits[start : end + 1].tolist(),
            bucket_counts=counts.tolist(),
            global_step=epoch,
        )

    def _add_graph(self, trainer: Trainer) -> None:
        if self.example is None:
            return
        try:
            # Tracing runs the model: a copy in eval mode leaves the trained model's
            # batch-norm statistics as they are.
            model = copy.deepcopy(trainer.model).eval()
            x = trainer.preprocess(torch.as_tensor(self.example)).to(trainer.device)
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                self.writer.add_graph(model, x)
        except Exception as exc:  # any model may fail to trace; the rest is still logged
            text = " ".join(str(exc).split())[:160] or type(exc).__name__
            print(f"cnnlab: tensorboard: no model graph, tracing failed: {text}", file=sys.stderr)

    def _add_kernels(self, model: nn.Module, epoch: int) -> None:
        from cnnlab.viz.features import conv_layers

        convs = conv_layers(model)
        if not convs:
            return
        name, conv = convs[0]
        grid = kernel_grid(conv.weight)
        self.writer.add_image(f"kernels/{name}", grid, epoch, dataformats="HWC")

    def _add_misclassified(self, trainer: Trainer, epoch: int) -> None:
        if trainer.validation is None or trainer.val_predicted is None:
            return
        from cnnlab.viz.tiles import short_name, tile_images

        images, labels = trainer.validation
        labels = labels.cpu()
        predicted = trainer.val_predicted.cpu()
        wrong = torch.nonzero(predicted != labels).flatten()
        if not len(wrong):
            self.writer.add_text(
                "misclassified/list", f"none of the {len(labels)} validation images", epoch
            )
            return
        shown = wrong[:MISCLASSIFIED]
        pictures = tile_images(torch.as_tensor(images[shown.numpy()]))
        truth = [self._name(int(labels[i])) for i in shown]
        guess = [self._name(int(predicted[i])) for i in shown]
        captions = [
            f"true {short_name(t, 8)}\npred {short_name(g, 8)}"
            for t, g in zip(truth, guess, strict=True)
        ]
        grid = image_grid(pictures, tile=80, captions=captions)
        self.writer.add_image("misclassified/validation", grid, epoch, dataformats="HWC")
        rows = "\n".join(
            f"| {k} | {int(i)} | {t} | {g} |"
            for k, (i, t, g) in enumerate(zip(shown, truth, guess, strict=True), 1)
        )
        self.writer.add_text(
            "misclassified/list",
            f"{len(wrong)} of {len(labels)} validation images wrong; the grid shows the first "
            f"{len(shown)}, left to right:\n\n| tile | image | true | predicted |\n"
            f"| --- | --- | --- | --- |\n{rows}",
            epoch,
        )

    def _name(self, index: int) -> str:
        return self.classes[index] if 0 <= index < len(self.classes) else str(index)


def _hparam(value: Any) -> Any:
    """A value TensorBoard's hyper-parameter table takes: number, text or bool as it is,
    anything else (a dict of model arguments, a list) as JSON text."""
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def kernel_grid(weight: torch.Tensor) -> np.ndarray:
    """Convolution kernels (``Cout×Cin×kh×kw``) as one H×W×3 uint8 picture: colour tiles
    for three input channels, grey tiles (one per output and input channel, at most
    :data:`KERNELS`) otherwise; each tile scaled on its own from its smallest weight
    (black) to its largest (white)."""
    from cnnlab.viz.features import rgb_kernels, scale_each

    w = weight.detach().float().cpu()
    if w.shape[1] == 3:
        tiles = rgb_kernels(w)
    else:
        tiles = scale_each(w.reshape(-1, *w.shape[2:])[:KERNELS]).numpy()
    pictures = np.clip(np.rint(tiles * 255.0), 0, 255).astype(np.uint8)
    return image_grid(pictures, tile=max(24, min(64, 8 * max(w.shape[2:]))))


def image_grid(
    pictures: np.ndarray,
    *,
    tile: int = 64,
    columns: int = 8,
    captions: Sequence[str] | None = None,
) -> np.ndarray:
    """``pictures`` (N×H×W grey or N×H×W×3 colour, uint8) as one H×W×3 uint8 grid, each
    brought to ``tile`` pixels on its longer side (small ones without blurring), with a
    two-line caption under each when ``captions`` are given."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(pictures)
    if n == 0:
        raise ValueError("no pictures for a grid")
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    h, w = pictures.shape[1:3]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    below = 26 if captions else 0
    gap = 2
    canvas = Image.new(
        "RGB", (gap + columns * (size[0] + gap), gap + rows * (size[1] + below + gap)), (48,) * 3
    )
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    for i, picture in enumerate(pictures):
        x = gap + (i % columns) * (size[0] + gap)
        y = gap + (i // columns) * (size[1] + below + gap)
        canvas.paste(Image.fromarray(picture).convert("RGB").resize(size, resample), (x, y))
        if captions:
            draw.multiline_text((x + 1, y + size[1] + 1), captions[i], fill=(255,) * 3, font=font)
    return np.asarray(canvas)
