"""Named training recipes: a model and the options that make it shine.

A model's own ``recipe`` (in the registry) is its tutorial's settings; a named recipe
here is cnnlab's answer to a goal — the fastest 99% (``speedrun``), the most accurate
digit recogniser (``mnist-best``), a strong Fashion-MNIST model (``fashion-best``).
``cnnlab train --recipe NAME`` uses it; any option given on the command line wins.
Each recipe's measured results are in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Recipe:
    """A model id, its arguments and training options (TrainConfig field names)."""

    name: str
    model: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Add ``recipe`` under its name."""
    if recipe.name in RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; unknown names are a :class:`CnnlabError`."""
    try:
        return RECIPES[name]
    except KeyError:
        raise CnnlabError(
            f"unknown recipe {name!r} (known: {', '.join(sorted(RECIPES))})"
        ) from None


def list_recipes() -> list[str]:
    """Names of the registered recipes, sorted."""
    return sorted(RECIPES)


register_recipe(
    Recipe(
        name="speedrun",
        model="speedrun-cnn",
        description="99% MNIST test accuracy in the least wall time: 600 steps of batch 128 "
        "(1.3 epochs) of a small CNN with batch norm, Adam and a one-cycle schedule.",
        options={
            "steps": 600,
            "batch_size": 128,
            "optimizer": "adam",
            "lr": 0.01,
            "schedule": "onecycle",
            "validation_split": 0.0,
        },
    )
)

#: What the accuracy recipes share: one-cycle AdamW, label smoothing, weight averaging,
#: test-time augmentation and a validation split of 5,000 training images.
_ACCURATE: dict[str, Any] = {
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "label_smoothing": 0.1,
    "validation_split": 5000 / 60000,
    "ema": 0.999,
    "tta": True,
}

register_recipe(
    Recipe(
        name="mnist-best",
        model="vgg-bn",
        description="The most accurate single digit recogniser: a VGG-style CNN with batch "
        "norm, affine augmentation, label smoothing, weight averaging and shifted-view TTA.",
        model_args={"width": 32},
        options={
            **_ACCURATE,
            "epochs": 30,
            "augment": {"rotate": 10.0, "scale": 0.1, "shear": 5.0, "translate": 0.1},
        },
    )
)

register_recipe(
    Recipe(
        name="fashion-best",
        model="vgg-bn",
        description="Fashion-MNIST: a wider VGG-style CNN with flips, shifts, random "
        "erasing, label smoothing and weight averaging.",
        model_args={"width": 48},
        options={
            **_ACCURATE,
            "dataset": "fashion-mnist",
            "epochs": 40,
            "augment": {"translate": 0.1, "flip": 0.5, "erase": 0.5},
        },
    )
)
