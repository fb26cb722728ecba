"""Named training recipes: a model and the options that make it shine.

A model's own ``recipe`` (in the registry) is its tutorial's settings; a named recipe
here is cnnlab's answer to a goal — the fastest 99% (``speedrun``), the most accurate
digit recogniser (``mnist-best``), one for handwriting from other pens, scanners and
cameras (``mnist-robust``), a strong Fashion-MNIST model (``fashion-best``), the
quick CIFAR-10 model (``cifar10-fast``) and a bigger one for about an hour or more
(``cifar10-best``).
``cnnlab train --recipe NAME`` uses it; any option given on the command line wins.
Each recipe's measured results are in docs/benchmarks.md. :func:`resolve_config` merges
the user's options with the recipes into the complete configuration of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cnnlab.config import FALLBACKS, TrainConfig
from cnnlab.data.augment import AUGMENT_PRESETS
from cnnlab.errors import CnnlabError
from cnnlab.models import ModelSpec, get_model_spec
from cnnlab.models.modern import ADAMW_ONECYCLE, SPEEDRUN_TRAINING
from cnnlab.models.photos import CIFAR_TRAINING


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


def resolve_config(config: TrainConfig) -> tuple[ModelSpec, TrainConfig]:
    """The model and the complete configuration: the user's options, then the named
    recipe's, then the model's own recipe, then the fallbacks (:meth:`TrainConfig.resolved`).

    A length of training (``epochs`` or ``steps``) is taken whole from the first layer
    that sets one; the named recipe's model arguments apply to the recipe's own model.
    """
    recipe = get_recipe(config.recipe) if config.recipe else None
    model = config.model or (recipe.model if recipe else FALLBACKS["model"])
    spec = get_model_spec(model)
    merged = dict(spec.recipe)
    if recipe is not None:
        if {"epochs", "steps"} & set(recipe.options):
            merged.pop("epochs", None)
            merged.pop("steps", None)
        merged.update(recipe.options)
        if model == recipe.model:
            config = replace(config, model_args={**recipe.model_args, **config.model_args})
    return spec, replace(config, model=model).resolved(merged)


register_recipe(
    Recipe(
        name="speedrun",
        model="speedrun-cnn",
        description="99% MNIST test accuracy in the least wall time: 350 steps of batch 128 "
        "(0.75 epochs) of a small CNN with batch norm, Adam, a one-cycle schedule and "
        "label smoothing.",
        options={**SPEEDRUN_TRAINING, "steps": 350},
    )
)

#: What the accuracy recipes share: one-cycle AdamW, label smoothing, weight averaging,
#: test-time augmentation and a validation split of 5,000 training images.
_ACCURATE: dict[str, Any] = {
    **ADAMW_ONECYCLE,
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
            "augment": AUGMENT_PRESETS["digits"],
        },
    )
)

register_recipe(
    Recipe(
        name="mnist-robust",
        model="vgg-bn",
        description="mnist-best trained for other people's handwriting, scans and photos: "
        "its augmentation adds elastic distortion, width changes, thicker and thinner "
        "strokes, coarse scans, blur, ink level, gamma and noise.",
        model_args={"width": 32},
        options={
            **_ACCURATE,
            "epochs": 30,
            "augment": AUGMENT_PRESETS["digits-robust"],
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
            "augment": AUGMENT_PRESETS["fashion"],
        },
    )
)

register_recipe(
    Recipe(
        name="cifar10-fast",
        model="cifar-net",
        description="CIFAR-10 in little time, with cifar10-airbench's network and recipe: "
        "the data as one tensor, a whitened first layer, shifts and flips on whole batches, "
        "Nesterov SGD with lookahead on a triangular schedule, label smoothing, "
        "flip-and-shift TTA. --dataset cifar10, or --data with a folder of it.",
        options={**CIFAR_TRAINING, "dataset": "cifar10", "epochs": 10, "tta": True},
    )
)

register_recipe(
    Recipe(
        name="cifar10-best",
        model="cifar-net",
        description="A more accurate CIFAR-10 model: cifar10-fast's network made wider "
        "(airbench95's widths) and trained longer.",
        model_args={"widths": [128, 384, 384]},
        options={**CIFAR_TRAINING, "dataset": "cifar10", "epochs": 15, "tta": True},
    )
)
