"""The speed layer's dropout: nn.Dropout's behaviour with a faster mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.speed import native
from cnnlab.speed.dropout import dropout_mask, keep_mask
from cnnlab.speed.modules import FastDropout

NATIVE_POSSIBLE = native._supported() is None


def Dropout(p: float) -> FastDropout:  # noqa: N802 - reads as the layer it stands in for
    return FastDropout(nn.Dropout(p))


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.75])
def test_keep_probability_and_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = Dropout(p).train()(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(1 - p, abs=0.003)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # the expectation is kept


def test_mask_elements_are_independent() -> None:
    torch.manual_seed(1)
    m = keep_mask((200_000,), 0.5, torch.device("cpu")).float()
    # Neighbours (same 64-bit draw or not) are uncorrelated.
    for lag in (1, 2, 3, 4, 5):
        corr = torch.corrcoef(torch.stack([m[:-lag], m[lag:]]))[0, 1].item()
        assert abs(corr) < 0.01


def test_eval_mode_and_extremes_behave_like_nn_dropout() -> None:
    x = torch.randn(8, 16)
    layer = nn.Dropout(0.5).eval()
    assert torch.equal(FastDropout(layer)(x), x)  # follows the layer's mode
    layer.train()
    assert not torch.equal(FastDropout(layer)(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    assert Dropout(0.5).state_dict() == {}


def test_gradient_flows_only_through_kept_elements() -> None:
    torch.manual_seed(0)
    x = torch.ones(64, 64, requires_grad=True)
    y = Dropout(0.5).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * 2.0)


def test_seeded_masks_repeat() -> None:
    torch.manual_seed(3)
    a = keep_mask((10, 10), 0.3, torch.device("cpu"))
    torch.manual_seed(3)
    b = keep_mask((10, 10), 0.3, torch.device("cpu"))
    assert torch.equal(a, b)


def test_bf16_inputs_keep_their_dtype() -> None:
    x = torch.ones(10, 10, dtype=torch.bfloat16)
    assert Dropout(0.5).train()(x).dtype == torch.bfloat16


@pytest.mark.skipif(
    not NATIVE_POSSIBLE, reason=f"native kernels unavailable: {native._supported()}"
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("p", [0.25, 0.5])
def test_native_dropout_mask(dtype: torch.dtype, p: float) -> None:
    like = torch.empty(1001, 303, dtype=dtype)  # an element count that is not a multiple of 4
    torch.manual_seed(0)
    mask = dropout_mask(like, p)
    assert mask.dtype == dtype and mask.shape == like.shape
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
    fresh_load.setenv("CNNLAB_NATIVE", "0")
    x = torch.ones(300, 300)
    torch.manual_seed(0)
    mask = dropout_mask(x, 0.5)
    torch.manual_seed(0)
    assert torch.equal(mask, keep_mask(x.shape, 0.5, x.device).float() * 2.0)
    torch.manual_seed(0)
    y = Dropout(0.5).train()(x)
    assert (y != 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert set(y.unique().tolist()) == {0.0, 2.0}
