"""Layers the registered networks share where torch's own is slow on a CPU.

:class:`Dropout` is ``nn.Dropout`` with a cheaper random mask. torch's CPU dropout draws
one Bernoulli sample per element (about 6 ns each on the CPUs measured), which made it a
sixth of ``seed002-cnn``'s training step; drawing 64 random bits at a time and comparing
16-bit slices with a threshold is 4–7× faster (``benchmarks/step_parts.py``). On CPUs
where cnnlab's native kernels are built, the mask comes from
:func:`cnnlab.kernels.dropout_mask` instead, already scaled and in the input's dtype.
Its state dict, repr and evaluation behaviour are ``nn.Dropout``'s.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.kernels import dropout_mask

__all__ = ["Dropout", "keep_mask"]

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


class Dropout(nn.Dropout):
    """``nn.Dropout`` (zero each element with probability ``p`` while training, scale the
    rest by ``1/(1-p)``) with a faster random mask; see the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        mask = dropout_mask(x, self.p)
        if mask is None:
            scale = torch.tensor(1.0 / (1.0 - self.p), dtype=x.dtype, device=x.device)
            mask = keep_mask(x.shape, self.p, x.device).to(x.dtype) * scale
        return x * mask
