"""Native max pooling and the fused training forward: exactly torch's results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.kernels import max_pool2, native, native_status
from cnnlab.kernels.pooling import native_ok
from cnnlab.models import create_model
from cnnlab.train import Trainer
from cnnlab.train.fusion import MaxPool2Act, fuse_pooling, is_pool2

CL = torch.channels_last
NATIVE_POSSIBLE = native._supported() is None


@pytest.fixture
def fresh_load(monkeypatch: pytest.MonkeyPatch):
    """Forget the loaded library before and after a test that changes how it is built."""
    native.load.cache_clear()
    yield monkeypatch
    native.load.cache_clear()


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


def test_fusion_pairs_activations_with_pooling() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # activation, then pooling
        nn.Conv2d(4, 4, 3), nn.MaxPool2d(2), nn.Sigmoid(),  # pooling, then activation
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.MaxPool2d(2)),  # nested; pooling alone
        nn.Flatten(),
    )  # fmt: skip
    fused = fuse_pooling(model)
    kinds = [type(m).__name__ for m in fused]
    assert kinds == ["Conv2d", "MaxPool2Act", "Conv2d", "MaxPool2Act", "Sequential", "Flatten"]
    assert fused[1].relu and fused[1].activation is None
    assert isinstance(fused[3].activation, nn.Sigmoid)
    assert isinstance(fused[4][1], MaxPool2Act)
    assert fused[0] is model[0]  # parameters are shared, not copied
    assert [type(m).__name__ for m in model][:3] == ["Conv2d", "ReLU", "MaxPool2d"]  # untouched
    x = torch.randn(3, 1, 30, 30).contiguous(memory_format=CL)
    assert torch.equal(fused(x), model(x))


@pytest.mark.parametrize("model_id", ["seed004-lenet", "resnet-mini"])
def test_fusion_leaves_models_without_max_pooling(model_id: str) -> None:
    model = create_model(model_id)
    assert fuse_pooling(model) is model


@pytest.mark.parametrize("model_id", ["seed000-cnn", "seed002-cnn", "speedrun-cnn"])
def test_fused_pooling_training_is_bit_identical(model_id: str) -> None:
    """With ReLU, the same seed gives the same weights with and without pooling fusion
    (the trainer's other faster layers are left out: they round differently)."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (96, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (96,), generator=gen)
    weights = []
    for fuse in (True, False):
        torch.manual_seed(0)
        trainer = Trainer(create_model(model_id), fuse=False, progress=False, device="cpu")
        if fuse:
            trainer.forward = fuse_pooling(trainer.model)
            assert trainer.forward is not trainer.model
        trainer.fit((images, labels), epochs=2, batch_size=32)
        weights.append(trainer.model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_sigmoid_fusion_same_outputs_and_gradient_mass() -> None:
    """Sigmoid after pooling: the same outputs; in bf16, sigmoid outputs of different
    inputs can round to the same value, and the gradient then goes to the larger input
    rather than the first of the tied outputs, so only where gradients land may differ."""
    torch.manual_seed(0)
    model = create_model("seed004-lenet-max").to(memory_format=CL)
    fused = fuse_pooling(model)
    x = torch.rand(16, 1, 28, 28).contiguous(memory_format=CL)
    results = []
    for net in (fused, model):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = net(x)
        y.float().square().sum().backward()
        results.append((y.detach(), model.conv1.bias.grad.clone(), model.fc1.weight.grad.clone()))
    (y0, b0, w0), (y1, b1, w1) = results
    assert torch.equal(y0, y1)
    assert torch.equal(w0, w1)  # layers after the pooling see identical values
    torch.testing.assert_close(b0, b1, rtol=0.05, atol=1e-3)


@pytest.mark.skipif(
    not NATIVE_POSSIBLE, reason=f"native kernels unavailable: {native._supported()}"
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("p", [0.25, 0.5])
def test_native_dropout_mask(dtype: torch.dtype, p: float) -> None:
    from cnnlab.kernels import dropout_mask

    like = torch.empty(1001, 303, dtype=dtype)  # an element count that is not a multiple of 4
    torch.manual_seed(0)
    mask = dropout_mask(like, p)
    assert mask is not None and mask.dtype == dtype and mask.shape == like.shape
    scale = torch.tensor(1 / (1 - p), dtype=dtype)
    assert set(mask.unique().tolist()) == {0.0, scale.item()}
    assert (mask != 0).float().mean().item() == pytest.approx(1 - p, abs=0.003)
    flat = (mask.flatten() != 0).float()
    for lag in (1, 3, 4, 5):  # within one 64-bit word and across words
        corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1].item()
        assert abs(corr) < 0.01
    torch.manual_seed(0)
    assert torch.equal(dropout_mask(like, p), mask)  # seeded by torch's generator
    assert not torch.equal(dropout_mask(like, p), mask)  # and a new draw each call


def test_dropout_falls_back_without_native(fresh_load) -> None:
    from cnnlab.kernels import dropout_mask
    from cnnlab.models.layers import Dropout

    fresh_load.setenv("CNNLAB_NATIVE", "0")
    x = torch.ones(300, 300)
    assert dropout_mask(x, 0.5) is None
    torch.manual_seed(0)
    y = Dropout(0.5).train()(x)
    assert (y != 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert set(y.unique().tolist()) == {0.0, 2.0}
