"""cnnlab's Dropout: nn.Dropout's behaviour with a faster mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models.layers import Dropout, keep_mask


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
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    assert isinstance(Dropout(0.5), nn.Dropout) and repr(Dropout(0.5)) == repr(nn.Dropout(0.5))
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
