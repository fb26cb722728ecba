"""What the hardware offers, and the settings that make training fast on it.

Each choice here was measured (``benchmarks/train_options.py``, docs/benchmarks.md):
bf16 autocast where the hardware computes bf16 natively, channels-last memory for
convolutions, and on Linux a malloc that keeps freed memory for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch
from torch import nn

from cnnlab.errors import CnnlabError

__all__ = [
    "PRECISIONS",
    "cpu_has_native_bf16",
    "has_convolutions",
    "pick_device",
    "pick_precision",
    "tune_cpu_allocator",
]

PRECISIONS = ("auto", "fp32", "bf16")


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


_ALLOCATOR_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keep large freed blocks in glibc's heap instead of returning them to the system.

    By default glibc serves every allocation above 128 KB (each activation and gradient
    of a batch) with a fresh ``mmap`` and unmaps it when freed, so every training step
    pays page faults and zeroing for its tensors again; keeping them for reuse made the
    tutorials' networks 25–40% faster per step on the CPUs measured. The price: the
    process keeps its peak memory until it exits. Done once per process, on Linux with
    glibc only; ``CNNLAB_TUNE_MALLOC=0`` turns it off. Returns whether it is in effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("CNNLAB_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, 1 << 30) == 1 and mallopt(m_trim_threshold, (1 << 31) - 1) == 1
    _ALLOCATOR_TUNED = ok
    return ok
