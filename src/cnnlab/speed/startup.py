"""Start-up costs a training run need not pay: importing torch.compile's machinery.

torch marks a few ``torch.optim.Optimizer`` methods (``add_param_group``, ``zero_grad``,
``state_dict``, ``load_state_dict``) as never to be compiled. The marker imports
``torch._dynamo`` the first time each of them runs, and that import took 1.9 s of an
8 s ``cnnlab train`` process on a 2-core CPU: a quarter of the process, spent on a
compiler nothing in the process uses.

:func:`defer_dynamo_import` gives those markers a lazy stand-in. While ``torch._dynamo``
has not been imported by anything else, nothing can be compiling, so the method runs
as it is; once something has imported it (``torch.compile``, ``--compile``), the stand-in
builds torch's own marker and uses it from then on. Compiled code therefore sees the
same thing as before, and uncompiled code skips the import.

The ``step`` of SGD, Adagrad, Adadelta and torch's other optimizers is wrapped by
``_use_grad_for_differentiable``, which imports ``torch._dynamo`` on every call to mark
graph breaks around the step. The same stand-in applies: until dynamo is loaded the
step runs directly, in the grad mode the wrapper would set.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["defer_dynamo_import"]

#: The Optimizer methods torch wraps with its lazy ``_disable_dynamo`` marker.
_MARKED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_done = False


def _lazy_disable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` itself until ``torch._dynamo`` is loaded, then ``torch._dynamo.disable(fn)``."""
    disabled: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if not disabled:
            if "torch._dynamo" not in sys.modules:
                return fn(*args, **kwargs)
            import torch._dynamo

            disabled.append(torch._dynamo.disable(fn, recursive=True, wrapping=False))
        return disabled[0](*args, **kwargs)

    return call


def _lazy_grad_mode_step(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for torch's ``_use_grad`` wrapper of an optimizer's ``step``: the
    wrapped step in the optimizer's grad mode, or the wrapper once dynamo is loaded."""
    plain = wrapper.__wrapped__  # type: ignore[attr-defined]

    @functools.wraps(plain)
    def step(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" in sys.modules:
            return wrapper(self, *args, **kwargs)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, *args, **kwargs)

    return step


def _defer_step_wrappers() -> bool:
    """Give every torch optimizer whose ``step`` is torch's ``_use_grad`` wrapper the lazy
    stand-in. A class whose ``step`` torch has already hooked (an instance exists) is left
    as it is: the hook holds the wrapper."""
    changed = False
    for cls in vars(torch.optim).values():
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            continue
        step = cls.__dict__.get("step")
        code = getattr(step, "__code__", None)
        if code is None or code.co_name != "_use_grad" or getattr(step, "hooked", False):
            continue
        if not code.co_filename.endswith("optimizer.py") or not hasattr(step, "__wrapped__"):
            continue
        cls.step = _lazy_grad_mode_step(step)  # type: ignore[method-assign]
        changed = True
    return changed


def defer_dynamo_import() -> bool:
    """Let torch's optimizers run without importing ``torch._dynamo`` (see the module
    docstring); once per process. Returns whether any method was changed: False when
    dynamo is already loaded or this torch marks its methods differently."""
    global _done
    if _done or "torch._dynamo" in sys.modules:
        return False
    changed = False
    for name in _MARKED:
        inner = getattr(torch.optim.Optimizer, name, None)
        fn = getattr(inner, "__wrapped__", None)
        code = getattr(inner, "__code__", None)
        # Only torch's own lazy marker (torch/_compile.py) reads ``__dynamo_disable``.
        if fn is None or code is None or not code.co_filename.endswith("_compile.py"):
            continue
        if getattr(fn, "__dynamo_disable", None) is None:
            fn.__dynamo_disable = _lazy_disable(fn)
            changed = True
    changed = _defer_step_wrappers() or changed
    _done = True
    return changed
