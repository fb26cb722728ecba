"""The model registry: each model is a small factory registered under its own name.

A registered factory returns a plain ``torch.nn.Module`` and takes at least
``in_channels`` and ``num_classes``. Its id is its function's name with dashes
(``seed000_cnn`` is ``seed000-cnn``), so each model has one name. Beside it the registry
keeps what the data pipeline needs to feed the model (input channels and size, how to
fit 28×28 digits into it), where the architecture comes from and its training recipe.
The model modules register their factories when :mod:`cnnlab.models` is imported.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model id.

    ``input_size`` is (channels, height, width). ``fit`` says how the pipeline brings
    28×28×1 digits to that size: ``"pad"`` adds a zero border (LeNet-5's 32×32, as in
    the original paper), ``"resize"`` interpolates (AlexNet's 227×227); channels are
    repeated when the model wants RGB.
    """

    name: str
    factory: Callable[..., nn.Module]
    input_size: tuple[int, int, int] = (1, 28, 28)
    fit: str = "resize"
    source: str = ""
    description: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    #: Called as ``data_init(model, images)`` with normalised training images (floats
    #: N×C×H×W) when a run starts from scratch: for layers set from the data.
    data_init: Callable[[nn.Module, torch.Tensor], None] | None = None

    def create(self, **kwargs: Any) -> nn.Module:
        """Build the model, checking keyword arguments against the factory's signature."""
        params = inspect.signature(self.factory).parameters
        unknown = sorted(set(kwargs) - set(params))
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            allowed = ", ".join(params) or "none"
            raise CnnlabError(
                f"model {self.name!r} takes no argument {unknown[0]!r} (its arguments: {allowed})"
            )
        return self.factory(**kwargs)

    def arguments(self) -> dict[str, Any]:
        """The factory's keyword arguments with their defaults."""
        return {
            name: p.default
            for name, p in inspect.signature(self.factory).parameters.items()
            if p.default is not inspect.Parameter.empty
        }


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    *,
    input_size: tuple[int, int, int] = (1, 28, 28),
    fit: str = "resize",
    source: str = "",
    recipe: dict[str, Any] | None = None,
    data_init: Callable[[nn.Module, torch.Tensor], None] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers a model factory under its function's name with dashes.

    The factory must take ``in_channels`` (defaulting to ``input_size``'s channels) and
    ``num_classes``; its docstring's first paragraph is the model's description.
    """
    if fit not in ("pad", "resize"):
        raise ValueError(f"fit must be 'pad' or 'resize', not {fit!r}")

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__.replace("_", "-")
        if name in _REGISTRY:
            raise ValueError(f"model id {name!r} is registered twice")
        params = inspect.signature(factory).parameters
        if "num_classes" not in params or "in_channels" not in params:
            raise ValueError(f"model {name!r}: the factory must take in_channels and num_classes")
        if params["in_channels"].default != input_size[0]:
            raise ValueError(f"model {name!r}: in_channels must default to {input_size[0]}")
        doc = inspect.getdoc(factory) or ""
        _REGISTRY[name] = ModelSpec(
            name=name,
            factory=factory,
            input_size=input_size,
            fit=fit,
            source=source,
            description=doc.split("\n\n", 1)[0].replace("\n", " "),
            recipe=dict(recipe or {}),
            data_init=data_init,
        )
        return factory

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered model ids matching a shell-style ``pattern`` (e.g. ``"seed004*"``)."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for ``name``; an unknown id is a :class:`CnnlabError`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = [n for n in _REGISTRY if name.lower() in n.lower()]
        hint = f"; did you mean {', '.join(close[:3])}?" if close else ""
        raise CnnlabError(
            f"unknown model {name!r}{hint} (run 'cnnlab models' to list all)"
        ) from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` as a plain ``torch.nn.Module``."""
    return get_model_spec(name).create(**kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
