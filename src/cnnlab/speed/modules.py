"""The modules :func:`~cnnlab.speed.speed_up` swaps into a model's forward.

Each one wraps the ``torch.nn`` layer(s) it stands in for and uses their parameters and
their ``training`` flag, so the model keeps its own layers, state dict and printout and
the swapped forward always computes with the current weights. Each falls back to torch's
operators where its native kernel does not apply (another device or dtype, no compiler).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlab.speed.batchnorm import batch_norm
from cnnlab.speed.conv import autocast_dtype, conv1, conv1_pool
from cnnlab.speed.dropout import dropout
from cnnlab.speed.pooling import max_pool2

#: Activations that commute with max pooling: act(max(x)) == max(act(x)) exactly, also
#: after rounding, because they never decrease. ReLU is folded into the native kernels.
MONOTONIC = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}

#: Multiply-adds per call (batch × inputs × outputs) below which a linear layer runs in
#: fp32 under CPU autocast. Around 10 million, bf16 and fp32 took the same time on the
#: CPUs measured (forward and backward with the casts); below, fp32 was faster.
SMALL_MACS = 10_000_000


def is_pool2(m: nn.Module) -> bool:
    """An ``nn.MaxPool2d`` with a 2×2 window, stride 2 and no padding, dilation or
    ceil mode: what :func:`cnnlab.speed.pooling.max_pool2` computes."""
    if type(m) is not nn.MaxPool2d or m.return_indices or m.ceil_mode:
        return False
    return (
        m.kernel_size in (2, (2, 2))
        and m.stride in (2, (2, 2))
        and m.padding in (0, (0, 0))
        and m.dilation in (1, (1, 1))
    )


def is_one_channel_conv(m: nn.Module) -> bool:
    """An ``nn.Conv2d`` that :func:`cnnlab.speed.conv.conv1` computes: one input channel,
    a square kernel, stride 1, no dilation or groups, the same zero padding all round."""
    if type(m) is not nn.Conv2d or m.in_channels != 1 or m.padding_mode != "zeros":
        return False
    k, pad = m.kernel_size, m.padding
    symmetric = (pad == "valid" or k[0] % 2 == 1) if isinstance(pad, str) else pad[0] == pad[1]
    return k[0] == k[1] and symmetric and m.stride == (1, 1) and m.dilation == (1, 1)


def _activate(y: Tensor, activation: str | None) -> Tensor:
    """The activation a pooled stand-in applies after its pass (a ReLU is in the pass)."""
    return y if activation in (None, "relu") else MONOTONIC[activation](y)


def _padding(conv: nn.Conv2d) -> int:
    if isinstance(conv.padding, str):  # "same" (odd kernel) or "valid"
        return conv.kernel_size[0] // 2 if conv.padding == "same" else 0
    return int(conv.padding[0])


class PoolActivation(nn.Module):
    """``MaxPool2d(2)`` and the non-decreasing activation beside it (``None``, ``"relu"``,
    ``"sigmoid"`` or ``"tanh"``), pooling first: exact, and the activation does a quarter
    of the work. A ReLU runs inside the native pooling pass.

    With ReLU the gradients are torch's bit for bit; with sigmoid or tanh in bf16, where
    neighbouring inputs often round to the same output, a tied window sends its gradient
    to the largest input rather than to the first tied output.
    """

    def __init__(self, activation: str | None = None) -> None:
        super().__init__()
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return _activate(max_pool2(x, relu=self.activation == "relu"), self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class OneChannelConv(nn.Module):
    """An ``nn.Conv2d`` on one-channel images, by :func:`cnnlab.speed.conv.conv1`.

    oneDNN, behind torch's CPU convolutions, is slow on a single input channel: on the
    tutorials' networks the first layer alone took a quarter of a training step.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.padding = _padding(conv)

    def forward(self, x: Tensor) -> Tensor:
        return conv1(x, self.conv.weight, self.conv.bias, self.padding)


class OneChannelConvPool(nn.Module):
    """A one-channel ``nn.Conv2d`` and the 2×2 max pooling (with its activation) after it,
    by :func:`cnnlab.speed.conv.conv1_pool`: the full-size output is never stored."""

    def __init__(self, conv: nn.Conv2d, activation: str | None = None) -> None:
        super().__init__()
        self.conv = conv
        self.padding = _padding(conv)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        relu = self.activation == "relu"
        y = conv1_pool(x, self.conv.weight, self.conv.bias, self.padding, relu=relu)
        return _activate(y, self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class BatchNormActivation(nn.Module):
    """An ``nn.BatchNorm2d`` and the activation right after it (``None``, ``"relu"``,
    ``"sigmoid"`` or ``"tanh"``): in training, by the native passes of
    :func:`cnnlab.speed.batchnorm.batch_norm` with a ReLU inside them; in evaluation, by
    torch's operators."""

    def __init__(self, bn: nn.BatchNorm2d, activation: str | None = None) -> None:
        super().__init__()
        self.bn = bn
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        y = batch_norm(x, self.bn, relu=self.activation == "relu")
        return _activate(y, self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"


class SmallLinear(nn.Module):
    """An ``nn.Linear`` that runs in fp32 under CPU autocast when a call has fewer than
    :data:`SMALL_MACS` multiply-adds: casting its weights to bf16 and back every step
    cost more than the product itself."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.macs_per_row = linear.in_features * linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        small = x.numel() // max(1, x.shape[-1]) * self.macs_per_row < SMALL_MACS
        if small and x.device.type == "cpu" and autocast_dtype("cpu") is not None:
            with torch.autocast("cpu", enabled=False):
                return self.linear(x.float())
        return self.linear(x)


class FastDropout(nn.Module):
    """An ``nn.Dropout`` with the cheaper mask of :func:`cnnlab.speed.dropout.dropout_mask`
    (the same distribution, other random draws); it follows the layer's ``p`` and its
    train/eval mode."""

    def __init__(self, layer: nn.Dropout) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        if not self.layer.training:
            return x
        return dropout(x, self.layer.p)
