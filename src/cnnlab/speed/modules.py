"""The forward that training and prediction run: the model's layers, faster.

:func:`fast_forward` starts from :func:`~cnnlab.train.fusion.fuse_pooling`'s view
(activation and 2×2 max pooling as one native pass, exact) and makes two more changes,
each measured on the tutorials' networks (docs/benchmarks.md):

- A convolution of one-channel images, the first layer of every greyscale network, is
  computed by :func:`cnnlab.kernels.conv1` instead of oneDNN, whose single-channel
  convolutions took a quarter of a training step; when 2×2 max pooling follows it,
  by :func:`cnnlab.kernels.conv1_pool`, which never stores the full-size output.
  The sums are fp32 where bf16 autocast would first round images and weights to bf16,
  so results agree with torch's to bf16 rounding, not bit for bit.
- Under CPU autocast, a linear layer too small for bf16 to pay (fewer than
  :data:`SMALL_MACS` multiply-adds per call) runs in fp32: it skips casting its
  weights to bf16 and back every step, which cost more than the product itself.

The model is not changed: parameters and buffers are shared, never copied, and its
printout and state dict stay the tutorials'. Modules with a forward of their own are
used as they are, since the order in which they call their children is unknown.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnlab.kernels import conv1, conv1_pool
from cnnlab.kernels.conv import autocast_dtype
from cnnlab.train.fusion import MaxPool2Act, fuse_pooling, rewrite_sequential

#: Multiply-adds per call (batch × inputs × outputs) below which a linear layer runs in
#: fp32 under CPU autocast. Around 10 million, bf16 and fp32 took the same time on the
#: CPUs measured (forward and backward with the casts); below, fp32 was faster.
SMALL_MACS = 10_000_000


def _padding(conv: nn.Conv2d) -> int:
    if isinstance(conv.padding, str):  # "same" (odd kernel) or "valid"
        return conv.kernel_size[0] // 2 if conv.padding == "same" else 0
    return int(conv.padding[0])


def is_one_channel_conv(m: nn.Module) -> bool:
    """An ``nn.Conv2d`` that :func:`cnnlab.kernels.conv1` computes: one input channel,
    a square kernel, stride 1, no dilation or groups, the same zero padding all round."""
    if type(m) is not nn.Conv2d or m.in_channels != 1 or m.padding_mode != "zeros":
        return False
    k, pad = m.kernel_size, m.padding
    symmetric = (pad == "valid" or k[0] % 2 == 1) if isinstance(pad, str) else pad[0] == pad[1]
    return k[0] == k[1] and symmetric and m.stride == (1, 1) and m.dilation == (1, 1)


class OneChannelConv(nn.Module):
    """An ``nn.Conv2d`` on one-channel images, by :func:`cnnlab.kernels.conv1`."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.padding = _padding(conv)

    def forward(self, x: Tensor) -> Tensor:
        return conv1(x, self.conv.weight, self.conv.bias, self.padding)


class OneChannelConvPool(nn.Module):
    """An ``nn.Conv2d`` on one-channel images and the :class:`MaxPool2Act` after it, by
    :func:`cnnlab.kernels.conv1_pool` (a ReLU folded in, another activation after)."""

    def __init__(self, conv: nn.Conv2d, pool: MaxPool2Act) -> None:
        super().__init__()
        self.conv = conv
        self.padding = _padding(conv)
        self.relu = pool.relu
        self.activation = pool.activation

    def forward(self, x: Tensor) -> Tensor:
        y = conv1_pool(x, self.conv.weight, self.conv.bias, self.padding, relu=self.relu)
        return self.activation(y) if self.activation is not None else y


class SmallLinear(nn.Module):
    """An ``nn.Linear`` that runs in fp32 under CPU autocast when a call has fewer than
    :data:`SMALL_MACS` multiply-adds."""

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


def _fast_rule(m: nn.Module, nxt: nn.Module | None) -> tuple[nn.Module, int]:
    if is_one_channel_conv(m) and isinstance(nxt, MaxPool2Act):
        return OneChannelConvPool(m, nxt), 2  # type: ignore[arg-type]
    if is_one_channel_conv(m):
        return OneChannelConv(m), 1  # type: ignore[arg-type]
    if type(m) is nn.Linear:
        return SmallLinear(m), 1
    if isinstance(m, nn.Sequential):
        return fast_forward(m), 1
    return m, 1


def fast_forward(model: nn.Module) -> nn.Module:
    """The view of ``model`` described in the module docstring, or ``model`` itself when
    nothing in it changes."""
    return rewrite_sequential(fuse_pooling(model), _fast_rule)
