"""Native batch norm (with ReLU) in training: torch's values, gradients and running statistics."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.speed import native, speed_up
from cnnlab.speed import status as native_status
from cnnlab.speed.batchnorm import batch_norm, native_ok
from cnnlab.speed.modules import BatchNormActivation

CL = torch.channels_last
NATIVE_POSSIBLE = native._supported() is None
needs_native = pytest.mark.skipif(
    not NATIVE_POSSIBLE, reason=f"native kernels unavailable: {native._supported()}"
)


def layer(channels: int, seed: int = 0, **kwargs) -> nn.BatchNorm2d:
    """A batch norm with weights and biases of both signs (a negative weight flips which
    side of the ReLU a value lands on) and running statistics away from their start."""
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, **kwargs)
    if bn.affine:
        with torch.no_grad():
            bn.weight.copy_(torch.rand(channels, generator=gen) * 3 - 1)
            bn.bias.copy_(torch.randn(channels, generator=gen))
    if bn.track_running_stats:
        bn.running_mean.add_(0.5)
        bn.running_var.mul_(2.0)
    return bn


def run(bn: nn.BatchNorm2d, x: torch.Tensor, relu: bool, fn) -> dict[str, torch.Tensor]:
    """Output, input/weight/bias gradients and the running statistics after one call."""
    x = x.clone().requires_grad_()
    y = fn(x, bn, relu)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(y.dtype)
    y.backward(g.contiguous(memory_format=CL))
    out = {"y": y.detach(), "dx": x.grad}
    if bn.affine:
        out |= {"dw": bn.weight.grad, "db": bn.bias.grad}
    if bn.track_running_stats:
        out |= {"mean": bn.running_mean, "var": bn.running_var, "n": bn.num_batches_tracked}
    return out


def reference(x: torch.Tensor, bn: nn.BatchNorm2d, relu: bool) -> torch.Tensor:
    y = bn(x)
    return F.relu(y) if relu else y


def compare(x: torch.Tensor, bn: nn.BatchNorm2d, relu: bool) -> None:
    """batch_norm against torch on copies of the same layer; fp32 to rounding, bf16 to
    its own precision (both round the output once, from different fp32 sums)."""
    ours, theirs = run(copy.deepcopy(bn), x, relu, batch_norm), run(bn, x, relu, reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        a, b = ours[name].double(), theirs[name].double()
        scale = b.abs().max().item() + 1e-6
        exact = x.dtype == torch.float32 or name in ("mean", "var", "dw")
        tol = 1e-5 if exact else 2e-2  # bf16 values: a few units in the last of 8 bits
        assert (a - b).abs().max().item() <= tol * scale, name
    assert ours["y"].dtype == x.dtype and ours["y"].is_contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(32, 24, 12, 12), (3, 5, 7, 9), (2, 70, 3, 3), (50, 1, 4, 4)])
@pytest.mark.parametrize("relu", [True, False])
def test_batch_norm_matches_torch(dtype, shape, relu) -> None:
    """Row counts that fill whole 16-row tiles and ones that leave a tail; channel counts
    that fill vectors and ones that do not."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 2 + 1).to(dtype).contiguous(memory_format=CL)
    bn = layer(shape[1])
    if NATIVE_POSSIBLE:
        assert native_ok(x, bn), native_status()
    compare(x, bn, relu)


def test_a_large_mean_keeps_its_precision() -> None:
    """Activations far from zero (1000 ± 0.01, fp32): measured against the same layer in
    fp64, the output is at least as accurate as torch's. Written as x·scale + shift the
    spread cancelled away; E[x²] − E[x]² in fp32 would lose the variance altogether."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 8, 10, 10, generator=gen) * 0.01 + 1000).contiguous(memory_format=CL)
    bn = layer(8)
    exact = F.batch_norm(x.double(), None, None, bn.weight.double(), bn.bias.double(), True)
    ours = batch_norm(x, copy.deepcopy(bn)).double()
    theirs = bn(x).double()
    error = (ours - exact).abs().max().item()
    assert error <= max((theirs - exact).abs().max().item(), 1e-3)
    assert error < 0.01


@pytest.mark.parametrize(
    "kwargs", [{"momentum": None}, {"track_running_stats": False}, {"momentum": 0.5}]
)
def test_running_statistics_follow_the_layers_settings(kwargs) -> None:
    gen = torch.Generator().manual_seed(0)
    bn = layer(6, **kwargs)
    ours = copy.deepcopy(bn)
    for _ in range(3):  # the cumulative average (momentum None) depends on the count
        x = torch.randn(4, 6, 5, 5, generator=gen).contiguous(memory_format=CL)
        a, b = run(ours, x, True, batch_norm), run(bn, x, True, reference)
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-5)


def test_evaluation_and_other_layouts_run_torch_exactly() -> None:
    """Outside training, or on a layout or device the kernels do not take, batch_norm is
    torch's operator itself: bit for bit."""
    x = torch.randn(4, 6, 5, 5)
    for bn, data in ((layer(6).eval(), x.contiguous(memory_format=CL)), (layer(6), x)):
        assert not native_ok(data, bn)
        ours, theirs = (
            run(copy.deepcopy(bn), data, True, batch_norm),
            run(bn, data, True, reference),
        )
        for name in ours:
            assert torch.equal(ours[name], theirs[name]), name
    assert not native_ok(torch.randn(1, 6, 1, 1).contiguous(memory_format=CL), layer(6))


@needs_native
def test_avx2_build_matches_torch_too(fresh_load, tmp_path: Path) -> None:
    """The code the compiler vectorises for AVX2 (built here with -mno-avx512f)."""
    fresh_load.setenv("CNNLAB_CACHE", str(tmp_path))
    fresh_load.setenv("CNNLAB_CFLAGS", "-mno-avx512f")
    assert native.load() is not None, native_status()
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(9, 20, 6, 7, generator=gen).to(dtype).contiguous(memory_format=CL)
        compare(x, layer(20), relu=True)


def test_the_rule_fuses_batch_norm_with_the_activation_after_it() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),  # batch norm and its ReLU
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.Tanh(),  # another activation
        nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4),  # alone
        nn.Flatten(),
    )  # fmt: skip
    view = speed_up(model, rules={"batchnorm"})
    fused = [m for m in view.children() if isinstance(m, BatchNormActivation)]
    assert [m.activation for m in fused] == ["relu", "tanh", None]
    assert [m.bn for m in fused] == [model[1], model[4], model[7]]  # the model's own layers
    x = torch.randn(8, 1, 12, 12).contiguous(memory_format=CL)
    model.to(memory_format=CL)
    ref = copy.deepcopy(model)
    torch.testing.assert_close(view(x), ref(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
    ref.load_state_dict(model.state_dict())
    model.eval()
    ref.eval()
    assert torch.equal(view(x), ref(x))  # in evaluation torch's operators, bit for bit
