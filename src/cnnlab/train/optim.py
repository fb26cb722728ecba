"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cnnlab.config import DEFAULTS, OPTIMIZERS, SCHEDULES, check_option
from cnnlab.errors import CnnlabError
from cnnlab.speed.optim import LeanAdam, LeanAdamW
from cnnlab.speed.startup import defer_dynamo_import

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "SCHEDULES", "lr_factor", "make_optimizer"]

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
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    lr: float | None = DEFAULTS.lr,
    weight_decay: float = DEFAULTS.weight_decay,  # type: ignore[assignment]
    momentum: float = DEFAULTS.momentum,  # type: ignore[assignment]
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (one of :data:`OPTIMIZERS`); ``lr=None`` uses its usual
    rate (:data:`DEFAULT_LR`).

    ``sgd`` uses ``momentum`` (pass 0 for plain SGD); ``nesterov`` is SGD with Nesterov
    momentum, which needs some. Fused kernels are used where torch has them for the
    device, multi-tensor (foreach) ones elsewhere. ``params`` may be parameter groups;
    a group's ``lr_scale`` multiplies its learning rate and divides its weight decay, so
    the decay per step stays that of the others.
    """
    check_option("optimizer", name)
    defer_dynamo_import()  # torch's optimizers would import torch.compile's machinery
    lr = DEFAULT_LR[name] if lr is None else lr
    check_option("lr", lr)
    check_option("weight_decay", weight_decay)
    check_option("momentum", momentum)
    if name == "nesterov" and momentum == 0:
        raise CnnlabError("nesterov needs a momentum above 0")
    params = _scaled_groups(list(params), lr, weight_decay)
    if name in ("sgd", "nesterov"):
        return _build(
            torch.optim.SGD,
            params,
            lr=lr,
            momentum=momentum,
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


def _scaled_groups(params: list[Any], lr: float, weight_decay: float) -> list[Any]:
    if not params or not isinstance(params[0], dict):
        return params
    groups = []
    for group in params:
        scale = float(group.get("lr_scale", 1.0))
        groups.append({**group, "lr": lr * scale, "weight_decay": weight_decay / scale})
    return groups


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
    follows a cosine down to 1/10,000 of it; ``triangle`` rises linearly from 0.2 to
    1 over the first 23%, then falls linearly to 0.07.
    """
    check_option("schedule", schedule)
    total = max(1, total_steps)
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "step":
        return lambda step: 0.1 ** ((step >= 0.5 * total) + (step >= 0.75 * total))
    if schedule == "triangle":
        # cifar10-airbench's: from 0.2 up to the peak at 23% of training, then straight
        # down to 0.07 at the end
        peak = max(1, int(0.23 * total))
        return lambda step: (
            0.2 + 0.8 * step / peak
            if step < peak
            else 1.0 - 0.93 * min(1.0, (step - peak) / max(1, total - peak))
        )
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    warm = max(1, int(0.25 * total))

    def onecycle(step: int) -> float:
        if step < warm:
            return 1 / 25 + (1 - 1 / 25) * step / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))

    return onecycle
