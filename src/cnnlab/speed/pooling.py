"""2×2 max pooling (stride 2) with an optional fused ReLU, native where possible.

torch's CPU max pooling and ReLU each take a full pass over the activations and the
pooling keeps an int64 index per output; on the small networks of the tutorials those
passes cost as much as the convolutions. :func:`max_pool2` does pooling and ReLU in one
pass forward and one backward, keeps a one-byte winner per output, and gives exactly
torch's ``F.max_pool2d(F.relu(x), 2)`` values and gradients (ties go to the first
maximum in row-major order, as torch's do).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.speed.native import load

_CL = torch.channels_last
_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}


class _MaxPool2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, relu: bool) -> torch.Tensor:  # type: ignore[override]
        lib = load()
        n, c, h, w = x.shape
        y = torch.empty((n, c, h // 2, w // 2), dtype=x.dtype, memory_format=_CL)
        winner = torch.empty((n, h // 2, w // 2, c), dtype=torch.uint8)
        getattr(lib, f"pool2_forward_{_SUFFIX[x.dtype]}")(
            x.data_ptr(), y.data_ptr(), winner.data_ptr(), n, h, w, c, int(relu)
        )
        ctx.save_for_backward(winner)
        ctx.input_shape = (n, c, h, w)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        lib = load()
        (winner,) = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        grad = grad.contiguous(memory_format=_CL)
        gx = torch.empty((n, c, h, w), dtype=grad.dtype, memory_format=_CL)
        if h % 2 or w % 2:  # rows and columns the pooling skipped get no gradient
            gx.zero_()
        getattr(lib, f"pool2_backward_{_SUFFIX[grad.dtype]}")(
            grad.data_ptr(), winner.data_ptr(), gx.data_ptr(), n, h, w, c
        )
        return gx, None


def native_ok(x: torch.Tensor) -> bool:
    """Whether :func:`max_pool2` runs the native kernel for ``x``: a channels-last bf16
    or fp32 CPU tensor, and with the AVX2 build a channel count that fills its vectors
    (16 in bf16, 8 in fp32; the AVX-512 build takes any)."""
    if not (
        x.device.type == "cpu"
        and x.dtype in _SUFFIX
        and x.dim() == 4
        and x.shape[-1] >= 2
        and x.shape[-2] >= 2
        and x.is_contiguous(memory_format=_CL)
    ):
        return False
    lib = load()
    if lib is None:
        return False
    block = lib.pool2_block_bf16()  # fp32 vectors hold half as many channels
    return x.shape[1] % (block if x.dtype == torch.bfloat16 else max(1, block // 2)) == 0


def max_pool2(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``F.max_pool2d(x, 2)``, or ``F.max_pool2d(F.relu(x), 2)`` with ``relu``: the same
    values and gradients, in one native pass for channels-last bf16/fp32 CPU tensors."""
    if native_ok(x):
        return _MaxPool2.apply(x, relu)
    if relu:  # pooling first is exact (ReLU is non-decreasing) and leaves ReLU 4× less work
        return F.relu(F.max_pool2d(x, 2))
    return F.max_pool2d(x, 2)
