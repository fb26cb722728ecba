"""Dropout masks in one native pass: 0 with probability ``p``, else ``1/(1-p)``.

A dropout layer then costs one multiplication forward and one backward. torch's own
path (random integers, a comparison, a cast, a scaling) took 4–5 passes over the
activations; ``dropout.c`` explains the generator.
"""

from __future__ import annotations

import functools

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
    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) & (2**64 - 1)
    threshold = round(p * _LEVELS) - _LEVELS // 2
    make = lib.dropout_mask_bf16 if like.dtype == torch.bfloat16 else lib.dropout_mask_f32
    make(mask.data_ptr(), mask.numel(), seed, threshold, _scale_bits(p, like.dtype))
    return mask


@functools.lru_cache(maxsize=64)
def _scale_bits(p: float, dtype: torch.dtype) -> int:
    """The bit pattern of ``1/(1-p)`` rounded to ``dtype``, once per layer setting rather
    than on every training step."""
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    signed = scale.view(torch.int16 if dtype == torch.bfloat16 else torch.int32).item()
    return int(signed) & (0xFFFF if dtype == torch.bfloat16 else 0xFFFFFFFF)
