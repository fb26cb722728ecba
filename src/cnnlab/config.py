"""Every option of a training run, with its default, its check and its help, in one place.

:class:`TrainConfig` is the one source of the training options:

- ``cnnlab train``'s flags are generated from its fields (:mod:`cnnlab.cli.config_flags`):
  each flag's name, type, choices, default and help come from the field;
- :meth:`TrainConfig.resolved` fills what the user left out from the recipes, then from
  each field's ``fallback``;
- :func:`check_option` is the one check of a value, used by the flags, by the config and
  by :class:`~cnnlab.train.Trainer`;
- :data:`DEFAULTS` (every field at its fallback) gives the Trainer its keyword defaults,
  and the Trainer takes exactly the fields its signature names.

Adding an option therefore touches this file, the code that uses the option and a test.
This module imports nothing heavy, so ``cnnlab --help`` stays quick.
"""

from __future__ import annotations

import copy
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from cnnlab.errors import CnnlabError

OPTIMIZERS = ("sgd", "nesterov", "adagrad", "adadelta", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "triangle")
PRECISIONS = ("auto", "fp32", "bf16")

#: A check: the value -> what is wrong with it ("must be positive"), or None when it is fine.
Check = Callable[[Any], "str | None"]


def at_least(low: int) -> Check:
    """A check: a whole number of at least ``low``."""
    return lambda v: None if v >= low else f"must be at least {low}"


def positive(v: float) -> str | None:
    """A check: a finite number above 0."""
    return None if math.isfinite(v) and v > 0 else "must be positive"


def non_negative(v: float) -> str | None:
    """A check: a finite number of at least 0."""
    return None if math.isfinite(v) and v >= 0 else "must be at least 0"


def fraction(v: float) -> str | None:
    """A check: a number in [0, 1)."""
    return None if 0 <= v < 1 else "must be in [0, 1)"


def finite(v: float) -> str | None:
    """A check: any finite number."""
    return None if math.isfinite(v) else "must be a finite number"


@dataclass(frozen=True)
class Option:
    """What :class:`TrainConfig` knows of one field besides its type and default."""

    help: str
    #: The value when neither the user nor a recipe sets the field (``None``: stays unset).
    fallback: Any = None
    #: How ``--help`` words the default, where "recipe, else <fallback>" does not fit.
    default_text: str | None = None
    choices: tuple[str, ...] | None = None
    check: Check | None = None
    #: Command-line text -> value, where the field's type alone cannot say (a dict).
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    #: The flag, when it is not ``--`` and the field's name with dashes.
    flag: str | None = None
    #: Whether the flag may be given several times, each adding to a dict.
    repeatable: bool = False


def _option(default: Any = None, **meta: Any) -> Any:
    factory = meta.pop("factory", None)
    metadata = {"option": Option(**meta)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _key_value(text: str) -> dict[str, Any]:
    """``--arg KEY=VALUE``: the value read as JSON when it can be (numbers, true, null)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    try:
        return {key.strip(): json.loads(value)}
    except json.JSONDecodeError:
        return {key.strip(): value}


def _augment(text: str) -> dict[str, float]:
    from cnnlab.data.augment import Augment  # torch: only when the flag is given

    return Augment.parse(text).to_dict()


@dataclass
class TrainConfig:
    """What to train and how. ``None`` means "the recipe's value, else the fallback".

    Values are filled in this order (:meth:`resolved`): what the user set, then the
    named recipe (``--recipe``, see ``cnnlab recipes``), then the model's own recipe
    (the tutorial's settings, see ``cnnlab models -v``), then each field's fallback.
    Training ``seed002-cnn`` without options therefore uses batch 200, 10 epochs and
    one-hot labels, as its tutorial does.
    """

    model: str | None = _option(
        help="model id (see 'cnnlab models')",
        fallback="seed000-cnn",
        default_text="the recipe's model, else seed000-cnn",
    )
    model_args: dict[str, Any] = _option(
        factory=dict,
        help="model argument, e.g. --arg width=48 (repeatable)",
        parse=_key_value,
        metavar="KEY=VALUE",
        flag="--arg",
        repeatable=True,
        default_text="the model's own",
    )
    init_from: str | None = _option(
        help="start from the weights of this run folder (fine-tuning): every tensor whose "
        "shape fits is copied, so a run on other classes gives all but its last layer; "
        "give the same --model and --arg as that run",
        metavar="RUN",
    )
    recipe: str | None = _option(
        help="a named recipe: model and options (see 'cnnlab recipes'); options given here win",
        metavar="NAME",
    )
    dataset: str | None = _option(
        help="dataset: mnist, fashion-mnist, kmnist, cifar10 or digits", fallback="mnist"
    )
    data: str | None = _option(
        help="train on a folder of your own images instead of --dataset: PATH/<class>/... "
        "(a seeded 20 percent of each class held out as the test split) or PATH/train/<class>/... "
        "with PATH/test/ or PATH/val/ as the test split",
        metavar="PATH",
    )
    image_size: int | None = _option(
        help="with --data: the side the images are brought to",
        check=at_least(1),
        default_text="the model's input size",
        metavar="N",
    )
    channels: int | None = _option(
        help="with --data: 3 (colour) or 1 (grey)",
        metavar="{1,3}",
        fallback=3,
        check=lambda v: None if v in (1, 3) else "must be 1 or 3",
    )
    resize: str | None = _option(
        help="with --data: pad (keep the aspect ratio, black border), squish (stretch) or "
        "crop (keep the aspect ratio, cut the centre)",
        fallback="pad",
        choices=("pad", "squish", "crop"),
    )
    strict: bool | None = _option(
        help="with --data: stop at the first unreadable image file instead of skipping it",
        fallback=False,
        default_text="off: skip and name each one",
    )
    epochs: int | None = _option(
        help="epochs; with --resume, how many more", fallback=5, check=at_least(1)
    )
    steps: int | None = _option(
        help="total optimizer steps instead of epochs (seed003 trains 20,000)",
        check=at_least(1),
        default_text="recipe, else none: epochs count",
    )
    batch_size: int | None = _option(
        help="batch size: the global batch; with several processes (--nproc, torchrun) each "
        "takes an equal share of every batch, so it must divide by their number",
        fallback=64,
        check=at_least(1),
    )
    optimizer: str | None = _option(help="optimizer", fallback="adam", choices=OPTIMIZERS)
    lr: float | None = _option(
        help="learning rate",
        check=positive,
        default_text="recipe, else the optimizer's usual one",
    )
    weight_decay: float | None = _option(help="weight decay", fallback=0.0, check=non_negative)
    momentum: float | None = _option(
        help="momentum of sgd and nesterov", fallback=0.9, check=non_negative
    )
    schedule: str | None = _option(
        help="learning-rate schedule", fallback="constant", choices=SCHEDULES
    )
    labels: str | None = _option(
        help="sparse integer or one-hot labels", fallback="int", choices=("int", "onehot")
    )
    label_smoothing: float | None = _option(help="label smoothing", fallback=0.0, check=fraction)
    validation_split: float | None = _option(
        help="fraction of the training set held out for validation",
        fallback=0.2,
        check=fraction,
    )
    stratify: bool | None = _option(
        help="hold the validation split out of each class in proportion (runs saved "
        "before this option keep the plain random split they trained with)",
        fallback=True,
        default_text="on",
    )
    validation: str = _option(
        "split",
        help="what the per-epoch validation figures come from: the held-out split, or the "
        "test set (as seed004 does; then never used for choosing anything)",
        choices=("split", "test"),
    )
    augment: dict[str, float] | None = _option(
        help="batch augmentation: a preset (digits, digits-elastic, fashion, cifar, photos, "
        "none) and/or key=value pairs of rotate (degrees), scale, shear (degrees), translate "
        "(fraction), elastic (pixels), elastic_sigma, flip and erase (probabilities), crop "
        "(pixels, or a fraction of the side below 1) and jitter (colour), e.g. "
        "'rotate=10,scale=0.1,translate=0.1'",
        fallback={},
        default_text="recipe, else none",
        parse=_augment,
        metavar="SPEC",
    )
    ema: float | None = _option(
        help="keep an exponential moving average of the weights with this decay, e.g. "
        "0.999, and use it for validation, test and the saved weights",
        fallback=0.0,
        default_text="recipe, else off",
        check=fraction,
        metavar="DECAY",
    )
    lookahead: bool | None = _option(
        help="lookahead: every 5 steps pull the weights back towards a slow copy of them, "
        "more strongly as training ends, and finish on the slow copy",
        fallback=False,
        default_text="recipe, else off",
    )
    bias_lr_scale: float | None = _option(
        help="train batch-norm shifts at this multiple of the learning rate (their weight "
        "decay divided by it)",
        fallback=1.0,
        check=positive,
        metavar="FACTOR",
    )
    tta: bool | None = _option(
        help="test-time augmentation for the test figures: average over one-pixel shifts; "
        "metrics.json keeps the plain figures too",
        fallback=False,
        default_text="recipe, else off",
    )
    early_stopping: int | None = _option(
        help="stop when validation accuracy has not improved for this many epochs (0: never)",
        fallback=0,
        check=at_least(0),
        metavar="PATIENCE",
    )
    select: str | None = _option(
        help="keep the last epoch's weights, or those of the best validation accuracy",
        fallback="last",
        choices=("last", "best"),
    )
    precision: str | None = _option(
        help="arithmetic: bf16 autocast or fp32; auto is bf16 where the hardware computes "
        "bf16 natively (CUDA GPUs that support it, CPUs with AVX-512 BF16 or AMX), else fp32",
        fallback="auto",
        choices=PRECISIONS,
    )
    compile: bool | None = _option(
        help="run the model through torch.compile (pays off on GPUs; slower on the CPUs measured)",
        fallback=False,
        default_text="recipe, else off",
    )
    sync_bn: bool | None = _option(
        help="with several processes, batch norm normalises by the statistics of the global "
        "batch (SyncBatchNorm), as one process would; off: each process by its own share",
        fallback=True,
        default_text="on",
    )
    seed: int = _option(0, help="random seed: same seed, same weights")
    device: str = _option(
        "auto",
        help="auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps",
    )
    mean: float | None = _option(
        help="subtracted from the pixels after scaling them to 0-1", fallback=0.0, check=finite
    )
    std: float | None = _option(
        help="divides the pixels after the mean is subtracted", fallback=1.0, check=positive
    )
    normalize: str | None = _option(
        help="how pixels are normalised: auto (photos, i.e. folders and CIFAR-10, by the "
        "per-channel mean and std of their training images, kept in the run folder; digit "
        "sets by --mean and --std), data (always the training images' statistics) or fixed "
        "(always --mean and --std)",
        fallback="auto",
        choices=("auto", "data", "fixed"),
    )
    tensorboard: bool = _option(
        False,
        help="log the run for TensorBoard: loss, accuracy and learning rate per step and per "
        "epoch, weight and gradient histograms, the first convolution's kernels, misclassified "
        "validation images, the model graph and the hyper-parameters with the final figures "
        "(needs pip install 'cnnlab[tensorboard]'; view with tensorboard --logdir runs)",
        default_text="off",
    )
    tensorboard_dir: str | None = _option(
        help="log for TensorBoard (as --tensorboard) into DIR/<run folder name>, so that runs "
        "logged to one DIR show side by side",
        default_text="tensorboard/ inside the run folder",
        metavar="DIR",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                check_option(f.name, value, f"--{f.name.replace('_', '-')}")

    def resolved(self, recipe: dict[str, Any]) -> TrainConfig:
        """A copy with every ``None`` filled from ``recipe``, then from the fallbacks.

        The length of training is taken whole: when the user gives ``epochs`` or
        ``steps``, neither comes from the recipe. A recipe's ``lr`` is used only with
        the recipe's optimizer.
        """
        values = asdict(self)
        user_length = self.epochs is not None or self.steps is not None
        for key, value in values.items():
            if value is not None or key not in recipe or key == "lr":
                continue
            if key in ("epochs", "steps") and user_length:
                continue
            values[key] = recipe[key]
        if values["lr"] is None and values["optimizer"] == recipe.get("optimizer"):
            values["lr"] = recipe.get("lr")
        for key, fallback in FALLBACKS.items():
            if values[key] is None and not (key == "epochs" and values["steps"]):
                values[key] = copy.deepcopy(fallback)
        cfg = TrainConfig(**values)
        cfg.check_combination()
        return cfg

    def check_combination(self) -> None:
        """Reject options that cannot work together (each one alone is checked on creation)."""
        chooses = self.select == "best" or bool(self.early_stopping)
        if chooses and self.validation == "test":
            raise CnnlabError(
                "--select best and --early-stopping choose on the validation split, "
                "never the test set; drop --validation test"
            )
        if chooses and self.validation_split == 0:
            raise CnnlabError(
                "--select best and --early-stopping need a validation split "
                "(--validation-split > 0)"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def option_fields() -> list[Field[Any]]:
    """The fields of :class:`TrainConfig`, in order."""
    return list(fields(TrainConfig))


def option_of(f: Field[Any]) -> Option:
    """The :class:`Option` of a :class:`TrainConfig` field."""
    return f.metadata["option"]


def field_default(f: Field[Any]) -> Any:
    """A field's default value (a fresh one for fields with a factory)."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def field_type(f: Field[Any]) -> type:
    """A field's value type, ``Optional`` taken off: int, float, str, bool or dict."""
    hint = _HINTS[f.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def check_option(name: str, value: Any, label: str | None = None) -> None:
    """Raise a :class:`CnnlabError` naming ``label`` (default ``name``) when ``value`` is
    not a valid setting of the option ``name``."""
    f = _FIELDS[name]
    opt, kind, label = option_of(f), field_type(f), label or name
    accepted = (int, float) if kind is float else kind
    if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
        raise CnnlabError(f"{label} must be {kind.__name__}, not {value!r}")
    if opt.choices is not None and value not in opt.choices:
        raise CnnlabError(f"{label} must be one of {', '.join(opt.choices)}, not {value!r}")
    problem = opt.check(value) if opt.check is not None else None
    if problem:
        raise CnnlabError(f"{label} {problem}, not {value!r}")


_HINTS = typing.get_type_hints(TrainConfig)
_FIELDS = {f.name: f for f in fields(TrainConfig)}
#: The fallback of every field that has one.
FALLBACKS: dict[str, Any] = {
    f.name: option_of(f).fallback for f in fields(TrainConfig) if option_of(f).fallback is not None
}
#: Every option at its built-in value: what training uses when nothing else is said.
DEFAULTS = TrainConfig(
    **{f.name: FALLBACKS.get(f.name, field_default(f)) for f in fields(TrainConfig)}
)
