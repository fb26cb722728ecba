"""Dropout masks in one native pass: 0 with probability ``p``, else ``1/(1-p)``.

A dropout layer then costs one multiplication forward and one backward. torch's own
path (random integers, a comparison, a cast, a scaling) took 4–5 passes over the
activations; ``dropout.c`` explains the generator.
"""

from __future__ import annotations

import torch

from cnnlab.kernels.native import load

_LEVELS = 1 << 16


def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor | None:
    """A tensor shaped and typed as ``like`` holding 0 (probability ``p``) or
    ``1/(1-p)``; None where the native kernel cannot make it (then use
    :func:`cnnlab.models.layers.keep_mask`). The seed comes from torch's CPU generator."""
    if like.device.type != "cpu" or like.dtype not in (torch.bfloat16, torch.float32):
        return None
    lib = load()
    if lib is None:
        return None
    mask = torch.empty(like.shape, dtype=like.dtype)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=like.dtype)
    bits = int(scale.view(torch.int16 if like.dtype == torch.bfloat16 else torch.int32).item())
    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) & (2**64 - 1)
    threshold = round(p * _LEVELS) - _LEVELS // 2
    if like.dtype == torch.bfloat16:
        lib.dropout_mask_bf16(mask.data_ptr(), mask.numel(), seed, threshold, bits & 0xFFFF)
    else:
        lib.dropout_mask_f32(mask.data_ptr(), mask.numel(), seed, threshold, bits & 0xFFFFFFFF)
    return mask
