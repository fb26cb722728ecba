"""Networks for colour photos: CIFAR-10 and the user's own folders of images.

``cifar-net`` follows the layout of cifar10-airbench, the fastest published recipe to 94%
on CIFAR-10 (with the rest of its recipe: a whitened first layer, lookahead, tuned batch
norm): a small stem, then three blocks of two 3×3 convolutions with
max pooling after the first of each, batch norm and ReLU, and a global max pool before
one linear layer. It has no residual connections and no dense giants, so nearly all its
time goes into a few large convolutions, which is what a CPU does best. Models are plain
``torch.nn``: the speed layer swaps its faster pooling and batch norm in from outside.
"""

from __future__ import annotations

from torch import nn

from cnnlab.models.registry import register_model

#: How ``cifar-net`` trains on its own: SGD with Nesterov momentum on a one-cycle
#: schedule, batch 512, label smoothing 0.2, shifts and flips; the ``cifar10-fast`` and
#: ``cifar10-best`` recipes (:mod:`cnnlab.recipes`) choose the length and the extras.
CIFAR_TRAINING = {
    "optimizer": "nesterov",
    "lr": 0.2,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "batch_size": 512,
    "label_smoothing": 0.2,
    "validation_split": 0.0,
    "augment": {"crop": 2.0, "flip": 0.5},
}


def _block(cin: int, cout: int) -> list[nn.Module]:
    """Conv, pool, norm, ReLU, then conv, norm, ReLU: pooling before the norm halves the
    work of the norm and the activation."""
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


@register_model(input_size=(3, 32, 32), source="cnnlab", recipe={**CIFAR_TRAINING, "epochs": 10})
def cifar_net(
    num_classes: int = 10,
    in_channels: int = 3,
    widths: tuple[int, int, int] | list[int] = (64, 256, 256),
    stem: int = 32,
) -> nn.Module:
    """A fast CIFAR-10 network (cifar10-airbench's layout): a 3×3 stem, three conv-pool
    blocks of ``widths`` channels with batch norm, global max pooling, one linear layer.

    Any input of at least 8×8 pixels works (the pooling at the end is global).
    """
    w1, w2, w3 = (int(w) for w in widths)
    return nn.Sequential(
        nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
        nn.BatchNorm2d(stem),
        nn.ReLU(),
        *_block(stem, w1),
        *_block(w1, w2),
        *_block(w2, w3),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(w3, num_classes, bias=False),
    )
