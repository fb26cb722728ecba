"""The training configuration: every option of a run, with its default, in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cnnlab.errors import CnnlabError


@dataclass
class TrainConfig:
    """What to train and how. ``None`` means "the recipe's value, else the default".

    Values are filled in this order (:meth:`resolved`): what the user set, then the
    named recipe (``--recipe``, see ``cnnlab recipes``), then the model's own recipe
    (the tutorial's settings, see ``cnnlab models -v``), then :attr:`DEFAULTS`. Training
    ``seed002-cnn`` without options therefore uses batch 200, 10 epochs and one-hot
    labels, as seed002 does.
    """

    model: str | None = None  # default seed000-cnn, or the recipe's model
    model_args: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None  # a named recipe: model + options
    dataset: str | None = None  # default mnist
    epochs: int | None = None  # default 5
    steps: int | None = None  # total optimizer steps; overrides epochs when set
    batch_size: int | None = None  # default 64
    optimizer: str | None = None  # default adam
    lr: float | None = None  # default: the optimizer's usual rate
    weight_decay: float | None = None  # default 0
    momentum: float = 0.9
    schedule: str | None = None  # default constant
    labels: str | None = None  # "int" (default) or "onehot"
    label_smoothing: float | None = None  # default 0
    validation_split: float | None = None  # default 0.2
    validation: str = "split"  # "split" or "test" (report test metrics each epoch)
    augment: dict[str, float] | None = None  # Augment settings; default none
    ema: float | None = None  # EMA decay of the weights; default 0 (off)
    tta: bool | None = None  # test-time augmentation for the test figures; default off
    early_stopping: int | None = None  # patience in epochs on val_accuracy; default 0 (off)
    select: str | None = None  # "last" (default) or "best" (best val_accuracy epoch)
    precision: str | None = None  # "auto" (default), "fp32" or "bf16"
    compile: bool | None = None  # torch.compile the model; default off
    seed: int = 0
    device: str = "auto"
    mean: float | None = None  # subtracted after scaling pixels to 0–1; default 0
    std: float | None = None  # divides after the mean; default 1

    DEFAULTS = {
        "model": "seed000-cnn",
        "dataset": "mnist",
        "epochs": 5,
        "batch_size": 64,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "schedule": "constant",
        "labels": "int",
        "label_smoothing": 0.0,
        "validation_split": 0.2,
        "augment": {},
        "ema": 0.0,
        "tta": False,
        "early_stopping": 0,
        "select": "last",
        "precision": "auto",
        "compile": False,
        "mean": 0.0,
        "std": 1.0,
    }

    def resolved(self, recipe: dict[str, Any]) -> TrainConfig:
        """A copy with every ``None`` filled from ``recipe``, then :attr:`DEFAULTS`.

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
        for key, value in self.DEFAULTS.items():
            if values.get(key) is None and not (key == "epochs" and values["steps"]):
                values[key] = value
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Reject values that cannot work, with a message naming the option."""
        if self.epochs is not None and self.epochs < 1:
            raise CnnlabError(f"--epochs must be at least 1, not {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise CnnlabError(f"--steps must be at least 1, not {self.steps}")
        if self.batch_size is not None and self.batch_size < 1:
            raise CnnlabError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.validation_split is not None and not 0 <= self.validation_split < 1:
            raise CnnlabError(f"--validation-split must be in [0, 1), not {self.validation_split}")
        if self.validation not in ("split", "test"):
            raise CnnlabError(f"validation must be 'split' or 'test', not {self.validation!r}")
        if self.lr is not None and not self.lr > 0:
            raise CnnlabError(f"--lr must be positive, not {self.lr}")
        if self.std is not None and self.std <= 0:
            raise CnnlabError(f"--std must be positive, not {self.std}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise CnnlabError(f"--ema must be in [0, 1), not {self.ema}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise CnnlabError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}")
        if self.early_stopping is not None and self.early_stopping < 0:
            raise CnnlabError(f"--early-stopping must be >= 0, not {self.early_stopping}")
        if self.select is not None and self.select not in ("last", "best"):
            raise CnnlabError(f"--select must be 'last' or 'best', not {self.select!r}")
        needs_val = (self.select == "best" or (self.early_stopping or 0) > 0) and (
            self.validation == "split" and self.validation_split == 0
        )
        if needs_val:
            raise CnnlabError(
                "--select best and --early-stopping need a validation split "
                "(--validation-split > 0)"
            )
        if self.validation == "test" and (self.select == "best" or self.early_stopping):
            raise CnnlabError(
                "--select best and --early-stopping choose on the validation split, "
                "never the test set; drop --validation-test"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
