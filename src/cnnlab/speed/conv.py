"""A network's first convolution on one-channel images, native where possible.

oneDNN, behind torch's CPU convolutions, is slow on a single input channel: on the
tutorials' MNIST networks the first layer alone took a quarter of a training step.
:func:`conv1` computes ``F.conv2d(x, weight, bias, padding=padding)`` for N×1×H×W
fp32 images, stride 1 and a square kernel, in one native pass (fp32 sums, output
channels-last), and its backward pass computes the weight and bias gradients.
:func:`conv1_pool` adds the 2×2 max pooling (and a ReLU) that follows such a layer in
every tutorial network, so that the full-size convolution output is never stored.
Images that need a gradient themselves, other dtypes and other devices go to torch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.speed.native import load
from cnnlab.speed.pooling import max_pool2

_CL = torch.channels_last
_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}


def _call(fn: Any, *args: Any) -> None:
    status = fn(*args)
    if status == -1:
        raise MemoryError("the native convolution could not allocate its scratch memory")
    if status != 0:
        raise ValueError(f"the native convolution refused its arguments (status {status})")


def _weights(weight: torch.Tensor) -> torch.Tensor:
    co, _, k, _ = weight.shape
    return weight.detach().reshape(co, k * k).contiguous()


class _Conv1(torch.autograd.Function):
    """Convolution, or with ``pool`` convolution and 2×2 max pooling, of one channel."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        padding: int,
        out_dtype: torch.dtype,
        pool: bool,
        relu: bool,
    ) -> torch.Tensor:
        lib = load()
        n, _, h, w = x.shape
        co, _, k, _ = weight.shape
        ho, wo = h + 2 * padding - k + 1, w + 2 * padding - k + 1
        shape = (n, h, w, k, padding, co)
        wt = _weights(weight)
        b = bias.data_ptr() if bias is not None else None
        suffix = _SUFFIX[out_dtype]
        winner = None
        if pool:
            y = torch.empty((n, co, ho // 2, wo // 2), dtype=out_dtype, memory_format=_CL)
            winner = torch.empty((n, ho // 2, wo // 2, co), dtype=torch.uint8)
            fn = getattr(lib, f"conv1_pool_forward_{suffix}")
            _call(fn, x.data_ptr(), wt.data_ptr(), b, y.data_ptr(), winner.data_ptr(), *shape, relu)
            ctx.save_for_backward(x, winner)
        else:
            y = torch.empty((n, co, ho, wo), dtype=out_dtype, memory_format=_CL)
            fn = getattr(lib, f"conv1_forward_{suffix}")
            _call(fn, x.data_ptr(), wt.data_ptr(), b, y.data_ptr(), *shape)
            ctx.save_for_backward(x)
        ctx.geometry = (shape, bias is not None, pool)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        lib = load()
        shape, has_bias, pool = ctx.geometry
        _, _, _, k, _, co = shape
        if grad.dtype not in _SUFFIX:
            grad = grad.float()
        grad = grad.contiguous(memory_format=_CL)
        gw = torch.empty((co, 1, k, k), dtype=torch.float32)
        gb = torch.empty(co, dtype=torch.float32) if has_bias else None
        gbp = gb.data_ptr() if gb is not None else None
        suffix = _SUFFIX[grad.dtype]
        if pool:
            x, winner = ctx.saved_tensors
            fn = getattr(lib, f"conv1_pool_backward_{suffix}")
            _call(fn, x.data_ptr(), grad.data_ptr(), winner.data_ptr(), gw.data_ptr(), gbp, *shape)
        else:
            (x,) = ctx.saved_tensors
            fn = getattr(lib, f"conv1_backward_{suffix}")
            _call(fn, x.data_ptr(), grad.data_ptr(), gw.data_ptr(), gbp, *shape)
        return None, gw, gb, None, None, None, None


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` now, or None when it is off."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has one function per device
        if device_type != "cpu":
            return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
        on = torch.is_autocast_cpu_enabled()
        return torch.get_autocast_cpu_dtype() if on else None
    return torch.get_autocast_dtype(device_type) if on else None


def native_ok(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`conv1` runs natively: fp32 one-channel CPU images that need no
    gradient, fp32 square weights up to 11×11, and the native library loaded."""
    if not (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.shape[1] == 1
        and not x.requires_grad
        and x.stride()[2:] == (x.shape[3], 1)
        and x.stride(0) == x.shape[2] * x.shape[3]
        and weight.dtype == torch.float32
        and weight.shape[1] == 1
        and weight.shape[2] == weight.shape[3] <= 11
        and (bias is None or (bias.dtype == torch.float32 and bias.is_contiguous()))
    ):
        return False
    return load() is not None


def conv1(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int = 0
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` for one-channel images, stride 1.

    Natively (see :func:`native_ok`) the sums are fp32 and the output is channels-last,
    in the autocast dtype when autocast is on (bf16), else fp32; elsewhere torch's
    convolution runs.
    """
    out_dtype = autocast_dtype(x.device.type) or torch.float32
    if out_dtype in _SUFFIX and native_ok(x, weight, bias):
        return _Conv1.apply(x, weight, bias, padding, out_dtype, False, False)
    return F.conv2d(x, weight, bias, padding=padding)


def conv1_pool(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: int = 0,
    relu: bool = False,
) -> torch.Tensor:
    """``F.max_pool2d(conv, 2)`` of ``conv = conv1(x, weight, bias, padding)``, with
    ``relu`` ``F.max_pool2d(F.relu(conv), 2)``: one native pass where :func:`conv1`
    would run natively. Pooling compares the fp32 sums, so where two of a window's
    values round to the same bf16 number the gradient may go to another of them than
    torch's pooling of the rounded values would choose."""
    out_dtype = autocast_dtype(x.device.type) or torch.float32
    k = weight.shape[-1]
    pooled = min(x.shape[-2:]) + 2 * padding - k + 1 >= 2  # at least one 2×2 window
    if out_dtype in _SUFFIX and pooled and native_ok(x, weight, bias):
        return _Conv1.apply(x, weight, bias, padding, out_dtype, True, relu)
    conv = F.conv2d(x, weight, bias, padding=padding)
    if conv.device.type == "cpu" and conv.dim() == 4:
        conv = conv.contiguous(memory_format=_CL)
    return max_pool2(conv, relu=relu)
