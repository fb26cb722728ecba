"""Networks for colour photos: CIFAR-10 and the user's own folders of images.

``cifar-net`` is the network of cifar10-airbench, the fastest published recipe to 94% on
CIFAR-10, with the parts of its design that make it learn fast:

- a **whitened first layer**: a 2×2 convolution whose filters are the principal
  directions of the training images' 2×2 patches, scaled to unit variance, and their
  negatives (:func:`whiten_first_layer`); it is computed from the data, not trained;
- three blocks of two 3×3 convolutions, max pooling after the first of each, batch norm
  and GELU; the first filters of every convolution start as the identity (Dirac), so a
  new network passes its input through;
- batch norm with a fast-moving average (momentum 0.4) and fixed scales (only the shifts
  learn, at a higher rate: :class:`~cnnlab.train.Trainer`'s ``bias_lr_scale``);
- a global max pool, one linear layer and logits scaled by 1/9.

There are no residual connections and no dense giants, so nearly all the time goes into a
few large convolutions, which is what a CPU does best. Models are plain ``torch.nn``: the
speed layer swaps its faster pooling and batch norm in from outside.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.registry import register_model

#: How ``cifar-net`` trains (cifar10-airbench's settings, for a mean loss): Nesterov SGD
#: at 1.5 with momentum 0.85, batch 1024, a triangular schedule, lookahead, batch-norm
#: shifts at 64× the rate, label smoothing 0.2, shifts and flips. The ``cifar10-fast``
#: and ``cifar10-best`` recipes (:mod:`cnnlab.recipes`) choose the length and extras.
CIFAR_TRAINING = {
    "optimizer": "nesterov",
    "lr": 1.5,
    "momentum": 0.85,
    # airbench decays by 0.0153 per 1024 images, for a summed loss: 1.33e-3 on the mean
    "weight_decay": 1.33e-3,
    "bias_lr_scale": 64.0,
    "schedule": "triangle",
    "lookahead": True,
    "batch_size": 1024,
    "label_smoothing": 0.2,
    "validation_split": 0.0,
    "augment": {"crop": 2.0, "flip": 0.5},
}


class Scale(nn.Module):
    """Multiply by a constant: ``cifar-net``'s logits are scaled by 1/9, which makes the
    softmax less confident early in training."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


def _norm(channels: int) -> nn.BatchNorm2d:
    # a fast-moving average (airbench's 0.6 kept = torch's momentum 0.4); fixed unit scales
    bn = nn.BatchNorm2d(channels, momentum=0.4, eps=1e-12)
    bn.weight.requires_grad_(False)
    return bn


def _conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])  # the first filters pass their input on
    return conv


def _block(cin: int, cout: int) -> list[nn.Module]:
    """Conv, pool, norm, GELU, then conv, norm, GELU: pooling before the norm quarters
    the work of the norm and the activation."""
    return [
        _conv(cin, cout),
        nn.MaxPool2d(2),
        _norm(cout),
        nn.GELU(),
        _conv(cout, cout),
        _norm(cout),
        nn.GELU(),
    ]


@torch.no_grad()
def whiten_first_layer(model: nn.Module, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set ``model``'s first convolution to whiten ``images`` (normalised floats
    N×C×H×W): its filters become the eigenvectors of the covariance of all k×k patches,
    divided by the square roots of their eigenvalues (plus ``eps``), then the same
    filters negated. The layer must have ``2·C·k·k`` output channels."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    out, cin, kh, kw = conv.weight.shape
    if out != 2 * cin * kh * kw or images.shape[1] != cin:
        raise ValueError(f"cannot whiten {images.shape[1]}-channel images with {conv}")
    x = images.float()
    patches = x.unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, cin * kh * kw).double()
    covariance = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(covariance)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)  # the strongest direction first
    filters = (vectors.T / torch.sqrt(values.clamp_min(0) + eps)[:, None]).float()
    filters = filters.reshape(cin * kh * kw, cin, kh, kw)
    conv.weight.copy_(torch.cat([filters, -filters]))


@register_model(
    input_size=(3, 32, 32),
    source="cnnlab",
    recipe={**CIFAR_TRAINING, "epochs": 10},
    data_init=whiten_first_layer,
)
def cifar_net(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: tuple[int, int, int] | list[int] = (64, 256, 256),
) -> nn.Module:
    """A fast CIFAR-10 network (cifar10-airbench's): a whitening 2×2 stem, three conv-pool
    blocks of ``widths`` channels with batch norm and GELU, global max pooling, one linear
    layer.

    Any input of at least 9×9 pixels works (the pooling at the end is global). The stem is
    set from the training images when a run starts (:func:`whiten_first_layer`).
    """
    w1, w2, w3 = (int(w) for w in widths)
    stem = 2 * in_channels * 2 * 2
    whiten = nn.Conv2d(in_channels, stem, 2, padding=0, bias=True)
    whiten.weight.requires_grad_(False)  # set from the data, not learned
    return nn.Sequential(
        whiten,
        nn.GELU(),
        *_block(stem, w1),
        *_block(w1, w2),
        *_block(w2, w3),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(w3, num_classes, bias=False),
        Scale(1 / 9),
    )
