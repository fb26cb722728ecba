"""What the hardware offers: the device, the precision it computes fast, the memory layout.

Each choice here was measured (``benchmarks/train_options.py``, docs/benchmarks.md):
bf16 autocast where the hardware computes bf16 natively, channels-last memory for
convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.config import PRECISIONS
from cnnlab.errors import CnnlabError

__all__ = [
    "PRECISIONS",
    "cpu_has_native_bf16",
    "has_convolutions",
    "pick_device",
    "pick_precision",
]


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; anything else is checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CnnlabError(f"unknown device {device!r} (use auto, cpu, cuda or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CnnlabError(f"device {device!r} asked for, but no CUDA GPU is available")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX-512 BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        try:
            if getattr(cpu, probe)():
                return True
        except (AttributeError, RuntimeError):
            continue
    return False


def pick_precision(precision: str, device: torch.device) -> str:
    """Resolve ``"auto"``: bf16 autocast where the hardware computes bf16 natively (CUDA
    GPUs that support it; CPUs with AVX-512 BF16 or AMX), else fp32.

    On such CPUs bf16 trains these networks about twice as fast at the same accuracy
    (docs/benchmarks.md); weights, optimizer state and the loss stay fp32.
    """
    if precision not in PRECISIONS:
        raise CnnlabError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    if precision != "auto":
        if precision == "bf16" and device.type == "mps":
            raise CnnlabError("bf16 autocast is not supported on MPS; use --precision fp32")
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-D convolution (channels-last memory pays off then)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
