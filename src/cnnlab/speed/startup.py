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
    _done = True
    return changed
