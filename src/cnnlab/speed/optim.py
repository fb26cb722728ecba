"""Adam and AdamW with a shorter road to torch's fused kernel.

On the tutorials' small networks, the Python bookkeeping of ``torch.optim.Adam(fused=True)``
around its one kernel call cost more than the update itself; :class:`LeanAdam` and
:class:`LeanAdamW` keep that bookkeeping between steps (``benchmarks/step_parts.py``:
0.057 ms against 0.100 ms a step on ``seed004-lenet-max``), with the same arithmetic and
the same ``state_dict`` as torch's.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

__all__ = ["LeanAdam", "LeanAdamW"]


class _LeanFusedStep(torch.optim.Optimizer):
    """Adam's and AdamW's fused step with a shorter road to the kernel.

    With ``fused=True`` every step of torch's Adam walks its parameter groups in Python,
    rebuilds the lists of parameters, gradients and moments and sorts them by device
    and dtype before one fused kernel call; on the tutorials' small networks that
    bookkeeping cost more than the update itself. After the first step (torch's own,
    which creates the moments) this keeps the lists and calls the same kernel
    directly: the same arithmetic, the same ``state_dict``. Anything unusual (a closure,
    a parameter without a gradient, amsgrad, a gradient scaler) takes torch's path.
    """

    _kernel: Any = None  # torch._fused_adam_ or torch._fused_adamw_, where torch has it

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lists: list[tuple[dict[str, Any], list, list, list, Any]] | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore torch's state dict, then rebuild the kept lists on the next step."""
        super().load_state_dict(state_dict)
        self._lists = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As torch's; the kept lists are rebuilt on the next step."""
        super().add_param_group(param_group)
        self._lists = None

    def _build_lists(self) -> list[tuple[dict[str, Any], list, list, list, Any]] | None:
        lists = []
        for group in self.param_groups:
            if not group.get("fused") or group["amsgrad"] or group["maximize"]:
                return None
            if (
                group.get("differentiable")
                or group.get("capturable")
                or torch.is_tensor(group["lr"])
            ):
                return None
            params = list(group["params"])
            states = [self.state.get(p, {}) for p in params]
            if any("exp_avg" not in st for st in states):
                return None  # moments not created yet: torch's first step does that
            if len({(p.device, p.dtype) for p in params}) > 1:
                return None
            moments = [st["exp_avg"] for st in states]
            squares = [st["exp_avg_sq"] for st in states]
            # The step counters become views of one tensor, so one add_ counts them all
            # (and torch's own step, which adds to each view, still counts each once).
            counters = torch.stack([st["step"].detach() for st in states])
            for i, st in enumerate(states):
                st["step"] = counters[i]
            lists.append(
                (group, params, moments, squares, (counters, [st["step"] for st in states]))
            )
        return lists

    def _torch_step(self, closure: Any) -> Any:
        """torch's own step. Its wrapper sets the grad mode and marks graph breaks for
        torch.compile, importing ``torch._dynamo`` (about 2 s on a small CPU) to do so;
        while nothing has loaded dynamo nothing is compiling, so the wrapped step runs
        directly, in the grad mode the wrapper would set."""
        step = super().step
        plain = getattr(step, "__wrapped__", None)
        if plain is None or "torch._dynamo" in sys.modules:
            return step(closure)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, closure)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One Adam step over every parameter, as ``torch.optim.Adam.step``."""
        lean = (
            closure is None
            and self._kernel is not None
            and getattr(self, "grad_scale", None) is None
            and getattr(self, "found_inf", None) is None
        )
        if lean and self._lists is None:
            self._lists = self._build_lists()
        if not lean or self._lists is None:
            return self._torch_step(closure)
        work = []
        for group, params, moments, squares, counters in self._lists:
            grads = [p.grad for p in params]
            if any(g is None for g in grads):
                self._lists = None
                return self._torch_step(closure)
            work.append((group, params, grads, moments, squares, counters))
        for group, params, grads, moments, squares, (counters, steps) in work:
            if not params:
                continue
            beta1, beta2 = group["betas"]
            counters.add_(1)
            self._kernel(
                params,
                grads,
                moments,
                squares,
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )
        return None


class LeanAdam(_LeanFusedStep, torch.optim.Adam):
    """``torch.optim.Adam`` with the lean fused step of :class:`_LeanFusedStep`."""

    _kernel = getattr(torch, "_fused_adam_", None)


class LeanAdamW(_LeanFusedStep, torch.optim.AdamW):
    """``torch.optim.AdamW`` with the lean fused step of :class:`_LeanFusedStep`."""

    _kernel = getattr(torch, "_fused_adamw_", None)
