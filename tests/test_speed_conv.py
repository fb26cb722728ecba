"""The native convolution of one-channel images (alone and with pooling), its modules and
the small-linear-layer module: torch's results up to rounding."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.speed import native
from cnnlab.speed import status as native_status
from cnnlab.speed.conv import conv1, conv1_pool, native_ok
from cnnlab.speed.modules import (
    SMALL_MACS,
    OneChannelConv,
    OneChannelConvPool,
    SmallLinear,
    is_one_channel_conv,
)
from cnnlab.speed.pooling import max_pool2

CL = torch.channels_last
NATIVE_POSSIBLE = native._supported() is None
needs_native = pytest.mark.skipif(
    not NATIVE_POSSIBLE, reason=f"native kernels unavailable: {native._supported()}"
)

# (batch, output channels, kernel, padding, image side): the tutorials' first layers,
# channel counts that leave part of a 16-lane vector empty or need three of them, and
# kernels other than 3×3 and 5×5, odd sides included.
CASES = [
    (8, 6, 3, 1, 28),
    (4, 16, 5, 2, 28),
    (3, 40, 3, 0, 13),
    (2, 5, 7, 3, 11),
    (3, 6, 1, 0, 9),
    (2, 20, 5, 0, 27),
]


def relative_error(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


def run(fn, x, weight, bias, grad, *args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    weight.grad = bias.grad = None
    y = fn(x, weight, bias, *args)
    y.backward(grad.to(y.dtype))
    return y.detach(), weight.grad.clone(), bias.grad.clone()


def case_tensors(n, co, k, side, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, side, side, generator=gen)
    weight = torch.randn(co, 1, k, k, generator=gen).requires_grad_()
    bias = torch.randn(co, generator=gen).requires_grad_()
    return x, weight, bias


def rounded_once(y: torch.Tensor, exact: torch.Tensor) -> bool:
    """Whether bf16 ``y`` is ``exact`` rounded to bf16 (a near tie may go either way)."""
    error = (y.float() - exact.detach()).abs()
    return bool((error <= exact.detach().abs() * 2.0**-8 + 1e-6).all())


def torch_conv_pool(x, weight, bias, padding, relu):
    conv = F.conv2d(x, weight, bias, padding=padding)
    return F.max_pool2d(F.relu(conv) if relu else conv, 2)


@pytest.mark.parametrize(("n", "co", "k", "padding", "side"), CASES)
def test_conv1_matches_torch(n, co, k, padding, side) -> None:
    x, weight, bias = case_tensors(n, co, k, side)
    if NATIVE_POSSIBLE:
        assert native_ok(x, weight, bias), native_status()
    ref = F.conv2d(x, weight, bias, padding=padding)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    y, gw, gb = run(conv1, x, weight, bias, grad, padding)
    y_ref, gw_ref, gb_ref = run(F.conv2d, x, weight, bias, grad, 1, padding)
    assert y.shape == y_ref.shape and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=CL)
    assert relative_error(y, y_ref) < 1e-5
    assert relative_error(gw, gw_ref) < 1e-5 and relative_error(gb, gb_ref) < 1e-5


@pytest.mark.parametrize(("n", "co", "k", "padding", "side"), CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_conv1_pool_matches_torch(n, co, k, padding, side, relu) -> None:
    x, weight, bias = case_tensors(n, co, k, side)
    ref = torch_conv_pool(x, weight, bias, padding, relu)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    y, gw, gb = run(conv1_pool, x, weight, bias, grad, padding, relu)
    y_ref, gw_ref, gb_ref = run(torch_conv_pool, x, weight, bias, grad, padding, relu)
    assert y.shape == y_ref.shape and y.is_contiguous(memory_format=CL)
    assert relative_error(y, y_ref) < 1e-5
    assert relative_error(gw, gw_ref) < 1e-5 and relative_error(gb, gb_ref) < 1e-5


@pytest.mark.parametrize("fused", [False, True])
def test_bf16_output_is_the_fp32_result_rounded(fused: bool) -> None:
    """Under bf16 autocast the sums stay fp32 and only the output is rounded, so the
    result is the rounded fp32 convolution (closer to it than torch's bf16 one)."""
    x, weight, bias = case_tensors(16, 16, 5, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv1_pool(x, weight, bias, 2, True) if fused else conv1(x, weight, bias, 2)
    exact = (
        torch_conv_pool(x, weight, bias, 2, True) if fused else F.conv2d(x, weight, bias, padding=2)
    )
    assert y.dtype == torch.bfloat16
    if NATIVE_POSSIBLE:  # one rounding of a sum that may differ from torch's in its last bit
        assert rounded_once(y, exact)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    y.backward(grad.to(torch.bfloat16))
    weight_grad = weight.grad.clone()
    weight.grad = None
    exact.backward(grad.to(torch.bfloat16).float())
    assert relative_error(weight_grad, weight.grad) < 0.01


def test_pooled_and_unpooled_native_agree() -> None:
    """conv1_pool gives max_pool2(conv1(...)) exactly; gradients agree where no window
    holds two values that round to the same bf16 number (fp32 here: none)."""
    x, weight, bias = case_tensors(8, 6, 3, 28)
    grad = torch.randn(8, 6, 14, 14, generator=torch.Generator().manual_seed(1))
    fused = run(conv1_pool, x, weight, bias, grad, 1, True)
    apart = run(lambda *a: max_pool2(conv1(*a), relu=True), x, weight, bias, grad, 1)
    assert torch.equal(fused[0], apart[0])
    torch.testing.assert_close(fused[1], apart[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused[2], apart[2], rtol=1e-5, atol=1e-5)


def test_images_that_need_a_gradient_go_to_torch() -> None:
    x, weight, bias = case_tensors(2, 6, 3, 12)
    x.requires_grad_()
    assert not native_ok(x, weight, bias)
    y = conv1_pool(x, weight, bias, 1, True)
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert not native_ok(x.detach().double(), weight, bias)
    assert not native_ok(x.detach().expand(2, 1, 12, 12)[:, :, :, ::2], weight, bias)


@needs_native
def test_plain_c_build_matches_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The code for CPUs without AVX-512 (built here with -mno-avx512f) is right too."""
    native.load.cache_clear()
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("CNNLAB_CFLAGS", "-mno-avx512f")
    try:
        assert native.load() is not None, native_status()
        for n, co, k, padding, side in CASES[:4]:
            x, weight, bias = case_tensors(n, co, k, side)
            for relu in (False, True):
                ref = torch_conv_pool(x, weight, bias, padding, relu)
                grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
                y, gw, _ = run(conv1_pool, x, weight, bias, grad, padding, relu)
                y_ref, gw_ref, _ = run(torch_conv_pool, x, weight, bias, grad, padding, relu)
                assert relative_error(y, y_ref) < 1e-5 and relative_error(gw, gw_ref) < 1e-5
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = conv1(x, weight, bias, padding)
            assert rounded_once(y, F.conv2d(x, weight, bias, padding=padding))
    finally:
        native.load.cache_clear()


def test_is_one_channel_conv() -> None:
    assert is_one_channel_conv(nn.Conv2d(1, 6, 5, padding=2))
    assert is_one_channel_conv(nn.Conv2d(1, 6, 3, padding="same"))
    assert not is_one_channel_conv(nn.Conv2d(3, 6, 5))
    assert not is_one_channel_conv(nn.Conv2d(1, 6, 5, stride=2))
    assert not is_one_channel_conv(nn.Conv2d(1, 6, (3, 5)))
    assert not is_one_channel_conv(nn.Conv2d(1, 6, 3, padding=(1, 0)))
    assert not is_one_channel_conv(nn.Conv2d(1, 6, 3, padding=1, padding_mode="reflect"))


def test_small_linear_runs_fp32_under_autocast() -> None:
    small = SmallLinear(nn.Linear(40, 10))
    big_features = SMALL_MACS // 1000 + 1
    big = SmallLinear(nn.Linear(big_features, 1000))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert small(torch.randn(8, 40, dtype=torch.bfloat16)).dtype == torch.float32
        assert big(torch.randn(1, big_features)).dtype == torch.bfloat16
    assert small(torch.randn(8, 40)).dtype == torch.float32


def test_one_channel_conv_module_shares_parameters() -> None:
    conv = nn.Conv2d(1, 4, 3, padding="same")
    assert OneChannelConv(conv).padding == 1
    pool = OneChannelConvPool(conv, "tanh")
    assert list(pool.parameters()) == list(conv.parameters())
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(pool(x), torch.tanh(F.max_pool2d(conv(x), 2)))


@needs_native
def test_kernels_share_torchs_openmp_runtime(tmp_path: Path) -> None:
    """Built with OpenMP, the library must use the libgomp torch loaded, not bring a
    second runtime whose threads would fight torch's for the cores. Checked in a fresh
    interpreter: other packages (scikit-learn) load OpenMP runtimes of their own."""
    script = (
        "import torch\n"
        "from cnnlab.speed import native\n"
        "assert native.load() is not None, native.native_status()\n"
        "maps = open('/proc/self/maps').read().splitlines()\n"
        "print(sorted({l.split()[-1] for l in maps if 'gomp' in l or 'iomp' in l}))\n"
    )
    env = {**os.environ, "CNNLAB_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    runtimes = ast.literal_eval(done.stdout.strip())
    assert len(runtimes) == 1 and "torch" in runtimes[0], runtimes
    built = list((tmp_path / "kernels").glob("*.so"))
    assert len(built) == 1


@pytest.mark.parametrize("pool", [False, True])
def test_threads_split_images_and_repeat_exactly(pool: bool) -> None:
    x, weight, bias = case_tensors(9, 16, 5, 28)
    grad = torch.randn(9, 16, 14 if pool else 28, 14 if pool else 28)
    fn = (lambda *a: conv1_pool(*a, True)) if pool else conv1
    threads = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            results.setdefault(n, []).append(run(fn, x, weight, bias, grad, 2))
    finally:
        torch.set_num_threads(threads)
    (one,), (two, again) = results[1], results[2]
    assert all(torch.equal(a, b) for a, b in zip(two, again, strict=True))  # repeatable
    assert torch.equal(one[0], two[0])  # the forward does not depend on threads
    torch.testing.assert_close(one[1], two[1], rtol=1e-5, atol=1e-5)  # sums in another order
