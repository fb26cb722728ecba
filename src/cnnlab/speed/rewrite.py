"""A faster forward for the training loop: activation and 2×2 max pooling as one step.

:func:`fuse_pooling` returns a module that computes exactly what the model does, sharing
its parameters and buffers, but with each ``MaxPool2d(2)`` inside an ``nn.Sequential``
run by :func:`cnnlab.kernels.max_pool2`, together with the ReLU, sigmoid or tanh just
before or after it. Max pooling commutes with any non-decreasing activation, so pooling
first is exact and leaves the activation a quarter of the work; a ReLU is folded into the
native kernel altogether. With ReLU the gradients are bit-for-bit torch's too; with
sigmoid or tanh in bf16, where neighbouring inputs often round to the same output, a tied
window sends its gradient to the largest input instead of the first tied output. The
model itself is not changed: its printout, state dict and
``cnnlab layers`` table stay the tutorials', and modules with a forward of their own are
used as they are.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from cnnlab.kernels import max_pool2

#: Non-decreasing activations: act(max(x)) == max(act(x)) exactly, also after rounding.
MONOTONIC = (nn.ReLU, nn.Sigmoid, nn.Tanh)


class MaxPool2Act(nn.Module):
    """``MaxPool2d(2)`` followed by an optional non-decreasing activation, in that order."""

    def __init__(self, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.relu = isinstance(activation, nn.ReLU)
        self.activation = None if self.relu else activation

    def forward(self, x: Tensor) -> Tensor:
        y = max_pool2(x, relu=self.relu)
        return self.activation(y) if self.activation is not None else y


def is_pool2(m: nn.Module) -> bool:
    """An ``nn.MaxPool2d`` with a 2×2 window, stride 2 and no padding, dilation or
    ceil mode: what :func:`cnnlab.kernels.max_pool2` computes."""
    if type(m) is not nn.MaxPool2d or m.return_indices or m.ceil_mode:
        return False
    return (
        m.kernel_size in (2, (2, 2))
        and m.stride in (2, (2, 2))
        and m.padding in (0, (0, 0))
        and m.dilation in (1, (1, 1))
    )


#: A rewrite rule: a layer and the one after it (None at the end) -> the replacement and
#: how many layers it takes (1 or 2).
Rule = Callable[[nn.Module, nn.Module | None], tuple[nn.Module, int]]


def rewrite_sequential(model: nn.Module, rule: Rule) -> nn.Module:
    """``model`` with its layers rewritten by ``rule``, walked in order; ``model`` itself
    when nothing changes, or when it is not a plain ``nn.Sequential`` (a forward of its
    own: the call order of its children is unknown). Parameters stay shared."""
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return model
    children = list(model.children())
    out: list[nn.Module] = []
    i = 0
    while i < len(children):
        replacement, taken = rule(children[i], children[i + 1] if i + 1 < len(children) else None)
        out.append(replacement)
        i += taken
    if len(out) == len(children) and all(a is b for a, b in zip(out, children, strict=True)):
        return model
    return nn.Sequential(*out)


def _pooling_rule(m: nn.Module, nxt: nn.Module | None) -> tuple[nn.Module, int]:
    if isinstance(m, MONOTONIC) and nxt is not None and is_pool2(nxt):
        return MaxPool2Act(m), 2
    if is_pool2(m) and isinstance(nxt, MONOTONIC):
        return MaxPool2Act(nxt), 2
    if is_pool2(m):
        return MaxPool2Act(), 1
    return fuse_pooling(m), 1


def fuse_pooling(model: nn.Module) -> nn.Module:
    """``model``, or an ``nn.Sequential`` over its own layers with activation-and-pooling
    pairs fused (see the module docstring); nested ``nn.Sequential``s are fused too."""
    return rewrite_sequential(model, _pooling_rule)
