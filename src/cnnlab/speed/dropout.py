"""Dropout masks in one pass: 0 with probability ``p``, else ``1/(1-p)``.

A dropout layer then costs one multiplication forward and one backward. torch's own
CPU path (one Bernoulli draw per element, a comparison, a cast, a scaling) took 4-5
passes over the activations and a sixth of ``seed002-cnn``'s training step. Where the
native kernels are built, ``dropout.c`` writes the scaled mask directly in the
activation's dtype (its comment explains the generator); elsewhere :func:`keep_mask`
draws 64 random bits at a time and compares 16-bit slices with a threshold, 4-7x
faster than torch's draw (``benchmarks/step_parts.py``). Both masks have torch's
distribution but other random draws.
"""

from __future__ import annotations

import functools

import torch

from cnnlab.speed.native import load

_LEVELS = 1 << 16  # a 16-bit slice of the random bits per element


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """A boolean tensor: each element True with probability ``1 - p`` (to 1/65,536).

    Drawn from torch's global generator on ``device``, so ``torch.manual_seed`` makes it
    repeatable.
    """
    n = 1
    for d in shape:
        n *= int(d)
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    halves = words.view(torch.int16)[:n].view(shape)
    threshold = round(p * _LEVELS) - _LEVELS // 2  # int16 values run from -32768 to 32767
    return halves >= threshold


def dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """A tensor shaped and typed as ``like`` holding 0 (probability ``p``) or ``1/(1-p)``:
    from the native kernel for bf16/fp32 CPU tensors where it is built, else from
    :func:`keep_mask`. Seeds come from torch's generator."""
    lib = load() if like.device.type == "cpu" and like.dtype in _SUFFIX else None
    if lib is None:
        scale = torch.tensor(1.0 / (1.0 - p), dtype=like.dtype, device=like.device)
        return keep_mask(like.shape, p, like.device).to(like.dtype) * scale
    mask = torch.empty(like.shape, dtype=like.dtype)
    seed = int(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64)) & (2**64 - 1)
    threshold = round(p * _LEVELS) - _LEVELS // 2
    make = getattr(lib, f"dropout_mask_{_SUFFIX[like.dtype]}")
    make(mask.data_ptr(), mask.numel(), seed, threshold, _scale_bits(p, like.dtype))
    return mask


_SUFFIX = {torch.bfloat16: "bf16", torch.float32: "f32"}


@functools.lru_cache(maxsize=64)
def _scale_bits(p: float, dtype: torch.dtype) -> int:
    """The bit pattern of ``1/(1-p)`` rounded to ``dtype``, once per layer setting rather
    than on every training step."""
    scale = torch.tensor(1.0 / (1.0 - p), dtype=dtype)
    signed = scale.view(torch.int16 if dtype == torch.bfloat16 else torch.int32).item()
    return int(signed) & (0xFFFF if dtype == torch.bfloat16 else 0xFFFFFFFF)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode ``F.dropout(x, p)`` with the mask of :func:`dropout_mask`."""
    if p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return x * dropout_mask(x, p)
