"""Batch normalisation in training mode, with an optional fused ReLU, native where possible.

torch's CPU batch norm is slow on channels-last activations: its reductions run along
the outer dimension of the N·H·W × C matrix such a tensor is. On the speedrun network
its forward and backward took more than half of every training step, though they read
and write less memory than the convolutions. :func:`batch_norm` computes the same
function in two passes forward (statistics, then the normalised output with the ReLU)
and two backward, with the channels innermost where the compiler vectorises them
(``csrc/batchnorm.c``), and updates the running statistics as torch does.

Evaluation mode needs no batch statistics; it runs torch's operator, which is fast there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.speed.native import load

_CL = torch.channels_last
_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}
#: The kernels keep two fp32 sums per channel for 16 rows on each thread's stack.
MAX_CHANNELS = 2048


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class _BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        eps: float,
        relu: bool,
        stats: list[torch.Tensor],
    ) -> torch.Tensor:
        lib = load()
        n, c, h, w = x.shape
        m = n * h * w
        suffix = _SUFFIX[x.dtype]
        mean = torch.empty(c)
        var = torch.empty(c)
        if getattr(lib, f"bn_stats_{suffix}")(_ptr(x), m, c, _ptr(mean), _ptr(var)):
            raise MemoryError("batch norm statistics: out of memory")
        invstd = torch.rsqrt(var + eps)
        scale = weight.detach().float() * invstd
        beta = bias.detach().float().contiguous()
        y = torch.empty((n, c, h, w), dtype=x.dtype, memory_format=_CL)
        if getattr(lib, f"bn_apply_{suffix}")(
            _ptr(x), _ptr(y), m, c, _ptr(mean), _ptr(scale), _ptr(beta), int(relu)
        ):
            raise MemoryError("batch norm: out of memory")
        ctx.save_for_backward(x, mean, invstd, scale, beta)
        ctx.relu = relu
        ctx.weight_dtype = weight.dtype
        stats.extend((mean, var))  # for the running statistics, outside autograd
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        lib = load()
        x, mean, invstd, scale, beta = ctx.saved_tensors
        n, c, h, w = x.shape
        grad = grad.to(x.dtype).contiguous(memory_format=_CL)
        dx = torch.empty((n, c, h, w), dtype=x.dtype, memory_format=_CL)
        dw = torch.empty(c)
        db = torch.empty(c)
        failed = getattr(lib, f"bn_backward_{_SUFFIX[x.dtype]}")(
            _ptr(x), _ptr(grad), _ptr(dx), n * h * w, c, _ptr(mean), _ptr(invstd),
            _ptr(scale), _ptr(beta), int(ctx.relu), _ptr(dw), _ptr(db),
        )  # fmt: skip
        if failed:
            raise MemoryError("batch norm backward: out of memory")
        return dx, dw.to(ctx.weight_dtype), db.to(ctx.weight_dtype), None, None, None


def native_ok(x: torch.Tensor, bn: nn.BatchNorm2d) -> bool:
    """Whether :func:`batch_norm` runs the native kernels: a training-mode affine layer
    on a channels-last bf16 or fp32 CPU tensor with more than one value per channel."""
    return (
        bn.training
        and bn.affine
        and x.device.type == "cpu"
        and x.dtype in _SUFFIX
        and x.dim() == 4
        and x.numel() > x.shape[1]
        and x.shape[1] <= MAX_CHANNELS
        and x.is_contiguous(memory_format=_CL)
        and load() is not None
    )


def batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, relu: bool = False) -> torch.Tensor:
    """``bn(x)``, or ``F.relu(bn(x))`` with ``relu``: the same function, its running
    statistics updated the same way, in native passes where :func:`native_ok`."""
    if not native_ok(x, bn):
        y = bn(x)
        return F.relu(y) if relu else y
    stats: list[torch.Tensor] = []
    y = _BatchNorm.apply(x, bn.weight, bn.bias, bn.eps, relu, stats)
    if bn.track_running_stats:
        _update_running_stats(bn, *stats, count=x.numel() // x.shape[1])
    return y


@torch.no_grad()
def _update_running_stats(
    bn: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, count: int
) -> None:
    """What torch's batch norm does in training: a moving average with ``momentum`` (or
    the cumulative average when it is None) of the mean and the unbiased variance."""
    assert bn.num_batches_tracked is not None
    assert bn.running_mean is not None and bn.running_var is not None
    bn.num_batches_tracked.add_(1)
    momentum = bn.momentum
    if momentum is None:
        momentum = 1.0 / float(bn.num_batches_tracked)
    unbiased = var * (count / max(count - 1, 1))
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
    bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)
