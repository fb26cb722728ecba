"""Native 2×2 max pooling (with ReLU) and how the native library is built: exactly torch's results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.speed import native
from cnnlab.speed import status as native_status
from cnnlab.speed.modules import is_pool2
from cnnlab.speed.pooling import max_pool2, native_ok

CL = torch.channels_last
NATIVE_POSSIBLE = native._supported() is None


def pooled(x: torch.Tensor, relu: bool, fn) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = fn(x, relu)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    y.backward(g)
    return y.detach(), x.grad


def reference(x: torch.Tensor, relu: bool) -> torch.Tensor:
    return F.max_pool2d(F.relu(x) if relu else x, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(8, 16, 28, 28), (3, 6, 27, 25), (2, 36, 14, 14), (2, 70, 7, 7)])
@pytest.mark.parametrize("relu", [True, False])
def test_max_pool2_matches_torch_bit_for_bit(dtype, shape, relu) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype)
    x[:, :, ::3, ::2] = 0.5  # ties inside windows: the first maximum must win
    x[0, 0] = 0.0  # an all-zero plane: ReLU's dead region
    x = x.contiguous(memory_format=CL)
    if NATIVE_POSSIBLE:
        assert native_ok(x), native_status()
    y, gx = pooled(x, relu, max_pool2)
    y_ref, gx_ref = pooled(x, relu, reference)
    assert torch.equal(y, y_ref)
    assert torch.equal(gx, gx_ref)
    assert y.is_contiguous(memory_format=CL)


@pytest.mark.skipif(
    not NATIVE_POSSIBLE, reason=f"native kernels unavailable: {native._supported()}"
)
def test_avx2_build_is_bit_exact_too(fresh_load, tmp_path: Path) -> None:
    """The AVX2 code (built here with -mno-avx512f) gives torch's results as well, and
    leaves channel counts that do not fill its vectors to torch."""
    fresh_load.setenv("CNNLAB_CACHE", str(tmp_path))
    fresh_load.setenv("CNNLAB_CFLAGS", "-mno-avx512f")
    lib = native.load()
    assert lib is not None, native_status()
    assert lib.pool2_block_bf16() == 16
    for dtype, channels in ((torch.bfloat16, 32), (torch.float32, 24)):
        for relu in (True, False):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(4, channels, 14, 13, generator=gen).to(dtype)
            x[:, :, ::3, ::2] = 0.5
            x = x.contiguous(memory_format=CL)
            assert native_ok(x)
            y, gx = pooled(x, relu, max_pool2)
            y_ref, gx_ref = pooled(x, relu, reference)
            assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)
    assert not native_ok(torch.randn(2, 6, 8, 8).contiguous(memory_format=CL))
    assert not native_ok(torch.randn(2, 36, 8, 8).to(torch.bfloat16).contiguous(memory_format=CL))


def test_max_pool2_contiguous_input_uses_torch() -> None:
    x = torch.randn(2, 4, 6, 6)
    assert not native_ok(x)
    assert torch.equal(max_pool2(x, relu=True), F.max_pool2d(F.relu(x), 2))


@pytest.mark.skipif(
    not NATIVE_POSSIBLE, reason=f"native kernels unavailable: {native._supported()}"
)
def test_build_goes_to_the_cache_folder(fresh_load, tmp_path: Path) -> None:
    fresh_load.setenv("CNNLAB_CACHE", str(tmp_path))
    assert native.load() is not None
    built = list((tmp_path / "kernels").iterdir())
    assert [p.suffix for p in built] == [".so"]  # the library, no temporary left behind
    assert native_status() == f"loaded {built[0]}"


def test_cache_name_covers_the_included_headers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A change to a body file the sources include builds a new library, not the old one."""
    (tmp_path / "kernel.c").write_text('#include "body.h"\n')
    header = tmp_path / "body.h"
    header.write_text("/* a body the source includes */\n")
    monkeypatch.setattr(native, "CSRC", tmp_path)
    before = native._target("cc", openmp=False)
    header.write_text(header.read_text() + "\n")
    assert native._target("cc", openmp=False) != before


def test_broken_compiler_falls_back(fresh_load, tmp_path: Path) -> None:
    fresh_load.setenv("CNNLAB_CACHE", str(tmp_path))
    fresh_load.setenv("CC", "false")
    assert native.load() is None
    if NATIVE_POSSIBLE:  # elsewhere load() gives up before trying the compiler
        assert native_status().startswith("false failed")
        assert list((tmp_path / "kernels").iterdir()) == []  # no half-written library left
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=CL)
    assert not native_ok(x)
    assert torch.equal(pooled(x, True, max_pool2)[1], pooled(x, True, reference)[1])


def test_switched_off_by_environment(fresh_load) -> None:
    fresh_load.setenv("CNNLAB_NATIVE", "0")
    assert native.load() is None
    assert native_status() == "turned off by CNNLAB_NATIVE=0"


def test_is_pool2() -> None:
    assert is_pool2(nn.MaxPool2d(2)) and is_pool2(nn.MaxPool2d((2, 2), stride=2))
    assert not is_pool2(nn.MaxPool2d(3, 2))
    assert not is_pool2(nn.MaxPool2d(2, padding=1))
    assert not is_pool2(nn.MaxPool2d(2, ceil_mode=True))
    assert not is_pool2(nn.AvgPool2d(2))
