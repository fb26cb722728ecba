"""Swap the fast modules into a model's forward: :func:`speed_up`.

The model is traced with ``torch.fx`` (its forward runs once on symbolic values), and
the graph of layer calls is rewritten by a few rules, each with a name:

``pooling``
    a ``MaxPool2d(2)`` and the ReLU, sigmoid or tanh right before or after it become
    one :class:`~cnnlab.speed.modules.PoolActivation` (pooling first, exact);
``conv1``
    a convolution of one-channel images becomes a native
    :class:`~cnnlab.speed.modules.OneChannelConv`, or, with the pooling after it (and
    its activation), one :class:`~cnnlab.speed.modules.OneChannelConvPool`;
``batchnorm``
    an ``nn.BatchNorm2d`` (and the activation right after it) becomes a
    :class:`~cnnlab.speed.modules.BatchNormActivation`: native passes in training;
``linear``
    an ``nn.Linear`` becomes a :class:`~cnnlab.speed.modules.SmallLinear`;
``dropout``
    an ``nn.Dropout`` becomes a :class:`~cnnlab.speed.modules.FastDropout`.

Two calls are merged only when the second is the one use of the first's output, so a
value that is also used elsewhere (a residual branch, a feature tap) is left alone.
Activations count as modules (``nn.ReLU()``), functions (``torch.sigmoid``,
``F.relu``) or tensor methods (``x.tanh()``).

The view runs the traced graph, not the model's ``forward``: what the forward does
besides computing (appending to a list, printing) happens once, while tracing, rather
than on every call; train such a model with ``Trainer(speed_up=False)``. A forward
that ``torch.fx`` cannot trace (control flow on tensor values, say), or one that
computes something else in training than in evaluation outside its layers (``if
self.training:``), is run as it is: the model is traced in both modes, and the two
graphs must agree.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch
import torch.nn.functional as F
from torch import fx, nn

from cnnlab.speed.modules import (
    MONOTONIC,
    BatchNormActivation,
    FastDropout,
    OneChannelConv,
    OneChannelConvPool,
    PoolActivation,
    SmallLinear,
    is_one_channel_conv,
    is_pool2,
)

RULES = ("pooling", "conv1", "batchnorm", "linear", "dropout")

_ACTIVATION_MODULES = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
_ACTIVATION_FUNCTIONS: dict[Callable[..., torch.Tensor], str] = {
    torch.relu: "relu",
    F.relu: "relu",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    F.tanh: "tanh",
}


class _Graph:
    """A traced model and lookups over its nodes."""

    def __init__(self, traced: fx.GraphModule) -> None:
        self.traced = traced
        self.modules = dict(traced.named_modules())
        self.added = 0

    def module(self, node: fx.Node | None) -> nn.Module | None:
        if node is None or node.op != "call_module":
            return None
        return self.modules[str(node.target)]

    def activation(self, node: fx.Node | None) -> str | None:
        """``"relu"``, ``"sigmoid"`` or ``"tanh"`` when ``node`` applies one of them to
        its one input, else None."""
        if node is None or len(node.args) != 1:
            return None
        if node.op == "call_module":
            return _ACTIVATION_MODULES.get(type(self.modules[str(node.target)]))  # type: ignore[call-overload]
        if node.op == "call_function" and set(node.kwargs) <= {"inplace"}:
            return _ACTIVATION_FUNCTIONS.get(node.target)  # type: ignore[call-overload]
        if node.op == "call_method" and not node.kwargs and node.target in MONOTONIC:
            return str(node.target)
        return None

    @staticmethod
    def next(node: fx.Node) -> fx.Node | None:
        """The call that is the only use of ``node``'s output, taking it as its only input."""
        if len(node.users) != 1:
            return None
        user = next(iter(node.users))
        return user if user.args == (node,) else None

    def replace(self, chain: list[fx.Node], module: nn.Module) -> None:
        """Run ``module`` on the input of ``chain[0]`` in place of the whole chain."""
        name = f"speed_{self.added}"
        self.added += 1
        self.traced.add_submodule(name, module)
        graph = self.traced.graph
        with graph.inserting_before(chain[0]):
            new = graph.call_module(name, args=(chain[0].args[0],))
        chain[-1].replace_all_uses_with(new)
        for node in reversed(chain):
            graph.erase_node(node)


def _pool_chain(g: _Graph, node: fx.Node) -> tuple[list[fx.Node], str | None] | None:
    """The pooling at or after ``node`` with its activation: [act,] pool [, act]."""
    act = g.activation(node)
    pool = g.next(node) if act else node
    pool_module = g.module(pool)
    if pool is None or pool_module is None or not is_pool2(pool_module):
        return None
    if act:
        return [node, pool], act
    after = g.next(pool)
    act = g.activation(after)
    return ([pool, after], act) if act and after is not None else ([pool], None)


def _rewrite(g: _Graph, node: fx.Node, rules: Collection[str]) -> bool:
    """Apply the first rule that matches at ``node``; whether one did."""
    module = g.module(node)
    if "conv1" in rules and module is not None and is_one_channel_conv(module):
        after = g.next(node)
        pooled = _pool_chain(g, after) if after is not None and "pooling" in rules else None
        if pooled is not None:
            chain, act = pooled
            g.replace([node, *chain], OneChannelConvPool(module, act))  # type: ignore[arg-type]
        else:
            g.replace([node], OneChannelConv(module))  # type: ignore[arg-type]
        return True
    if "pooling" in rules and (pooled := _pool_chain(g, node)) is not None:
        chain, act = pooled
        g.replace(chain, PoolActivation(act))
        return True
    if "batchnorm" in rules and type(module) is nn.BatchNorm2d:
        after = g.next(node)
        act = g.activation(after)
        chain = [node, after] if act and after is not None else [node]
        g.replace(chain, BatchNormActivation(module, act))  # type: ignore[arg-type]
        return True
    if "linear" in rules and type(module) is nn.Linear:
        g.replace([node], SmallLinear(module))
        return True
    if "dropout" in rules and type(module) is nn.Dropout:
        g.replace([node], FastDropout(module))
        return True
    return False


def _trace(model: nn.Module) -> fx.GraphModule | None:
    """``model`` traced by ``torch.fx``, or None when it cannot be, or when its graph in
    training mode differs from its graph in evaluation mode (layers such as dropout keep
    their own modes; only code that reads ``self.training`` itself changes the graph)."""
    was_training = model.training
    try:
        traced = [fx.symbolic_trace(model.train(mode)) for mode in (True, False)]
    except Exception:  # noqa: BLE001 - whatever stops tracing, the model runs as it is
        return None
    finally:
        model.train(was_training)
    return traced[0] if traced[0].code == traced[1].code else None


def speed_up(model: nn.Module, rules: Collection[str] = RULES) -> nn.Module:
    """``model``'s forward with the fast modules swapped in (see the module docstring).

    The result shares every parameter, buffer and layer with ``model`` and follows its
    train/eval mode; ``model`` itself is not changed. It is ``model`` itself when no rule
    applies or the forward cannot be traced. ``rules`` picks which of :data:`RULES` run.
    """
    unknown = set(rules) - set(RULES)
    if unknown:
        raise ValueError(f"unknown rule {sorted(unknown)[0]!r} (rules: {', '.join(RULES)})")
    traced = _trace(model)
    if traced is None:
        return model
    g = _Graph(traced)
    erased: set[fx.Node] = set()
    for node in list(traced.graph.nodes):
        if node in erased:
            continue
        before = set(traced.graph.nodes)
        if _rewrite(g, node, rules):
            erased |= before - set(traced.graph.nodes)
    if not g.added:
        return model
    traced.graph.lint()
    traced.recompile()
    traced.delete_all_unused_submodules()  # the replaced layers live on inside their stand-ins
    return traced
