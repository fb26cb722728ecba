"""Watch a model run: every layer call with its inputs and output, in the order they run.

One walk over a model's layers serves everything that explains a network: the layer
arithmetic table (``cnnlab layers``), the feature maps of ``cnnlab visualize`` and of the
web page, and the web page's table of layers. It hooks the chosen modules (by default
the leaves, modules without children), runs the model once without gradients and keeps
each call. The model's train/eval mode is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LayerCall", "LayerTrace", "is_leaf", "trace_layers"]


@dataclass
class LayerCall:
    """One call of one layer: its name in the model (``"features.3"``), the module, the
    positional inputs it received and what it returned (kept alive, so tensor
    identities stay valid while the trace is in use)."""

    name: str
    module: nn.Module
    inputs: tuple[Any, ...]
    output: Any

    @property
    def input(self) -> torch.Tensor | None:
        """The first input when it is a tensor."""
        x = self.inputs[0] if self.inputs else None
        return x if isinstance(x, torch.Tensor) else None


def is_leaf(module: nn.Module) -> bool:
    """A module without children: a layer rather than a container."""
    return next(module.children(), None) is None


class LayerTrace:
    """Hooks on ``model``'s modules that ``select`` picks; :meth:`run` fills :attr:`calls`.

    ``before(name, module, inputs)`` runs ahead of each selected call, e.g. to check the
    layer's arguments and raise a clear error before torch's own. When the model fails
    part-way, :attr:`calls` holds the calls that finished.
    """

    def __init__(
        self,
        model: nn.Module,
        select: Callable[[nn.Module], bool] = is_leaf,
        before: Callable[[str, nn.Module, tuple[Any, ...]], None] | None = None,
    ) -> None:
        self.model = model
        self.select = select
        self.before = before
        self.calls: list[LayerCall] = []

    def run(self, *inputs: Any) -> Any:
        """``model(*inputs)`` without gradients, recording every selected call."""
        self.calls = []
        handles = []
        for name, module in self.model.named_modules():
            if not self.select(module):
                continue
            if self.before is not None:
                handles.append(module.register_forward_pre_hook(self._pre_hook(name)))
            handles.append(module.register_forward_hook(self._hook(name)))
        try:
            with torch.no_grad():
                return self.model(*inputs)
        finally:
            for handle in handles:
                handle.remove()

    def _pre_hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            assert self.before is not None
            self.before(name, module, inputs)

        return hook

    def _hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.calls.append(LayerCall(name, module, inputs, output))

        return hook


def trace_layers(
    model: nn.Module, *inputs: Any, select: Callable[[nn.Module], bool] = is_leaf
) -> list[LayerCall]:
    """The calls of ``model``'s selected layers (by default its leaves) on ``inputs``."""
    trace = LayerTrace(model, select)
    trace.run(*inputs)
    return trace.calls
