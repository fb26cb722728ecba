"""One way to predict: uint8 images in, class probabilities out.

:class:`Predictor` is what ``Trainer.predict`` and ``evaluate``, ``cnnlab predict``,
``cnnlab evaluate`` and the web app all run: the model in evaluation mode through the
speed layer's view (:func:`cnnlab.speed.speed_up`), its preprocessing, channels-last
batches for convolutions, batching, and test-time augmentation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.loader import Preprocess
from cnnlab.data.mapped import is_mapped
from cnnlab.hardware import has_convolutions
from cnnlab.speed.threads import policy_for

__all__ = ["Predictor", "is_blank", "shifted_views"]


def is_blank(image: torch.Tensor | np.ndarray) -> bool:
    """Whether a prepared MNIST-style uint8 image has no ink at all.

    :func:`cnnlab.data.prepare_digit` turns an image without enough contrast into all
    zeros; any class predicted for it would be a guess, so it is reported as blank.
    """
    return not bool(image.any())


def shifted_views(
    images: torch.Tensor, flip: bool = False, reflect: bool = False
) -> Iterator[torch.Tensor]:
    """Test-time augmentation views of a uint8 (N, C, H, W) batch: itself, moved one pixel
    up, down, left and right, and mirrored when ``flip``.

    The border a shift leaves is filled with 0 (a digit's black background) or, with
    ``reflect``, by reflection, as the random crops of photo training fill it: on CIFAR-10
    zero-filled shifts cost 0.8 points of the gain reflected ones give.
    """
    yield images
    if reflect and min(images.shape[-2:]) > 1:
        padded = F.pad(images.float(), (1, 1, 1, 1), mode="reflect").to(images.dtype)
    else:
        padded = F.pad(images, (1, 1, 1, 1))
    h, w = images.shape[-2:]
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        yield padded[..., dy : dy + h, dx : dx + w]
    if flip:
        yield images.flip(-1)


class Predictor:
    """A trained classifier ready to answer.

    Args:
        model: the ``nn.Module`` mapping a float batch to class logits; its parameters'
            device is where batches go. Convolutional models are put in channels-last
            memory (``channels_last=None``: when the model has a convolution).
        preprocess: how uint8 images become the model's input.
        flip: whether test-time augmentation adds mirrored views (for models trained on
            flipped images).
        reflect: whether its shifted views fill the border by reflection (for models
            trained on reflect-padded crops) instead of with 0.
        speed_up: run the speed layer's view of the model (the same results up to
            rounding, faster on the CPU); ``forward`` passes a view already built.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess | None = None,
        *,
        flip: bool = False,
        reflect: bool = False,
        speed_up: bool = True,
        channels_last: bool | None = None,
        forward: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.preprocess = preprocess or Preprocess()
        self.flip = flip
        self.reflect = reflect
        self.channels_last = has_convolutions(model) if channels_last is None else channels_last
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if forward is None and speed_up:
            from cnnlab.speed import speed_up as view

            forward = view(model)
        self.forward = forward if forward is not None else model

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The model's input for a uint8 batch: preprocessed, on the model's device,
        channels-last for convolutions."""
        x = self.preprocess(images.to(self.device))
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.inference_mode()
    def probabilities(
        self, images: torch.Tensor, *, batch_size: int = 1000, tta: bool = False
    ) -> torch.Tensor:
        """Class probabilities (N × classes, float32 on the CPU) for uint8 images
        (H×W, N×H×W or N×C×H×W); ``tta`` averages over :func:`shifted_views`.
        :class:`~cnnlab.data.mapped.MappedImages` are read from their file a batch at a
        time."""
        if not is_mapped(images):
            images = torch.as_tensor(images)
        if images.dim() == 2:
            images = images[None]
        if images.dim() == 3:
            images = images.unsqueeze(1)
        self.model.eval()
        outs = []
        # Long predictions (a test set) time their batches as training times its steps.
        starts = range(0, len(images), batch_size)
        threads = policy_for(self.device, trial_steps=2) if len(starts) >= 8 else None
        for start in starts:
            batch = images[start : start + batch_size]
            views = list(shifted_views(batch, self.flip, self.reflect)) if tta else [batch]
            probs = torch.zeros(())
            for view in views:
                probs = probs + self.forward(self.inputs(view)).float().softmax(dim=1).cpu()
            outs.append(probs / len(views))
            if threads is not None:
                threads.tick()
        return torch.cat(outs) if outs else torch.empty(0)
