"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cnnlab.errors import CnnlabError

OPTIMIZERS = ("sgd", "nesterov", "adagrad", "adadelta", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")

# Each optimizer's usual learning rate, used when none is given.
DEFAULT_LR = {
    "sgd": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.01,
    "adadelta": 1.0,
    "adam": 1e-3,
    "adamw": 1e-3,
}


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float | None = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (one of :data:`OPTIMIZERS`); ``lr=None`` uses its default.

    ``sgd`` uses ``momentum`` (0.9 unless given; pass 0 for plain SGD); ``nesterov``
    is SGD with Nesterov momentum. Fused kernels are used where torch has them for the
    device, multi-tensor (foreach) ones elsewhere.
    """
    if name not in OPTIMIZERS:
        raise CnnlabError(f"unknown optimizer {name!r} (choose from {', '.join(OPTIMIZERS)})")
    lr = DEFAULT_LR[name] if lr is None else lr
    if not lr > 0:
        raise CnnlabError(f"learning rate must be positive, not {lr}")
    if weight_decay < 0:
        raise CnnlabError(f"weight decay must not be negative, not {weight_decay}")
    params = list(params)
    if name in ("sgd", "nesterov"):
        return _build(
            torch.optim.SGD,
            params,
            lr=lr,
            momentum=(momentum or 0.9) if name == "nesterov" else momentum,
            nesterov=name == "nesterov",
            weight_decay=weight_decay,
        )
    if name == "adagrad":
        return _build(torch.optim.Adagrad, params, lr=lr, weight_decay=weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "adam":
        return _build(LeanAdam, params, lr=lr, weight_decay=weight_decay)
    return _build(LeanAdamW, params, lr=lr, weight_decay=weight_decay)


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
            return super().step(closure)
        work = []
        for group, params, moments, squares, counters in self._lists:
            grads = [p.grad for p in params]
            if any(g is None for g in grads):
                self._lists = None
                return super().step(closure)
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


def _build(
    cls: type[torch.optim.Optimizer], params: list, **kwargs: object
) -> torch.optim.Optimizer:
    """The fused implementation (2–4× faster than foreach on the CPU measured, see
    ``benchmarks/step_parts.py``) where this torch and device have it, else foreach."""
    try:
        return cls(params, fused=True, **kwargs)  # type: ignore[call-arg]
    except (RuntimeError, TypeError, ValueError):
        return cls(params, foreach=True, **kwargs)  # type: ignore[call-arg]


def lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate at each optimizer step.

    ``step`` divides by 10 at 50% and 75% of training; ``cosine`` decays to zero;
    ``onecycle`` warms up linearly over the first 25% from 1/25 of the peak, then
    follows a cosine down to 1/10,000 of it.
    """
    if schedule not in SCHEDULES:
        raise CnnlabError(f"unknown schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")
    total = max(1, total_steps)
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "step":
        return lambda step: 0.1 ** ((step >= 0.5 * total) + (step >= 0.75 * total))
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    warm = max(1, int(0.25 * total))

    def onecycle(step: int) -> float:
        if step < warm:
            return 1 / 25 + (1 - 1 / 25) * step / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))

    return onecycle
