"""TrainConfig is the one source of the training options: flags, defaults, checks, Trainer."""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import fields

import pytest
import torch

from cnnlab.cli import build_parser
from cnnlab.cli.config_flags import config_from_args, default_text, flag_name
from cnnlab.config import (
    DEFAULTS,
    FALLBACKS,
    TrainConfig,
    check_option,
    field_default,
    field_type,
    option_of,
)
from cnnlab.errors import CnnlabError
from cnnlab.train import Trainer
from cnnlab.train.trainer import trainer_options

#: `cnnlab train` flags that are about the run, not the training configuration.
RUN_FLAGS = {"data_dir", "fallback_dataset", "threads", "out", "resume", "quiet", "json", "nproc"}
#: A valid command-line value for each dict option (other kinds are derived).
DICT_EXAMPLES = {"model_args": "width=48", "augment": "rotate=10"}


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def example(f) -> list[str]:
    """Command-line words that set field ``f`` to a valid value."""
    kind, opt = field_type(f), option_of(f)
    if kind is bool:
        return [flag_name(f)]
    text = {int: "3", float: "0.5", dict: DICT_EXAMPLES.get(f.name)}.get(kind)
    if kind is str:
        text = opt.choices[-1] if opt.choices else "x"
    return [flag_name(f), str(text)]


def test_every_field_has_exactly_one_train_flag_with_its_default_type_and_choices() -> None:
    train = subparser("train")
    actions = [a for a in train._actions if a.dest != "help"]
    for f in fields(TrainConfig):
        mine = [a for a in actions if a.dest == f.name]
        assert len(mine) == 1, f"{f.name}: {len(mine)} flags"
        action, opt = mine[0], option_of(f)
        assert action.option_strings[0] == flag_name(f)  # booleans add --no-NAME
        assert len(action.option_strings) == (2 if field_type(f) is bool else 1)
        assert action.default == field_default(f), f.name
        assert (tuple(action.choices) if action.choices else None) == opt.choices, f.name
        value = getattr(train.parse_args(example(f)), f.name)
        assert isinstance(value, field_type(f)) and not (
            isinstance(value, bool) and field_type(f) is not bool
        ), f"{f.name}: parsed {value!r}"
        assert action.help.startswith(opt.help) and default_text(f) in action.help, f.name


def test_every_train_flag_is_a_field_or_a_run_option() -> None:
    names = {f.name for f in fields(TrainConfig)}
    for action in subparser("train")._actions:
        if action.dest != "help":
            assert action.dest in names | RUN_FLAGS, f"{action.option_strings}: no field"


def test_no_flags_give_the_default_config_and_flags_reach_it() -> None:
    train = subparser("train")
    assert config_from_args(train.parse_args([])) == TrainConfig()
    args = train.parse_args(["--epochs", "7", "--arg", "width=48", "--arg", "blocks=2",
                             "--no-tta", "--validation", "test", "--mean", "0.5"])  # fmt: skip
    cfg = config_from_args(args)
    assert cfg.epochs == 7 and cfg.model_args == {"width": 48, "blocks": 2}
    assert cfg.tta is False and cfg.validation == "test" and cfg.mean == 0.5


def test_compare_takes_the_same_flags_for_every_entry() -> None:
    compare = subparser("compare")
    dests = {a.dest for a in compare._actions}
    assert {f.name for f in fields(TrainConfig)} - dests == {"model", "recipe", "model_args"}
    cfg = config_from_args(compare.parse_args(["a", "--epochs", "2", "--ema", "0.9"]))
    assert cfg.epochs == 2 and cfg.ema == 0.9 and cfg.model is None


@pytest.mark.parametrize(
    ("name", "bad", "problem"),
    [
        ("epochs", 0, "must be at least 1"),
        ("lr", -3.0, "must be positive"),
        ("lr", float("nan"), "must be positive"),
        ("ema", 1.0, "must be in [0, 1)"),
        ("label_smoothing", 1.5, "must be in [0, 1)"),
        ("optimizer", "rmsprop", "must be one of sgd"),
        ("batch_size", True, "must be int"),
        ("std", 0.0, "must be positive"),
    ],
)
def test_one_check_for_flags_config_and_trainer(name: str, bad, problem: str) -> None:
    with pytest.raises(CnnlabError, match=re.escape(f"--{name.replace('_', '-')} {problem}")):
        TrainConfig(**{name: bad})
    with pytest.raises(CnnlabError, match="^" + re.escape(f"{name} {problem}")):
        check_option(name, bad)
    f = next(f for f in fields(TrainConfig) if f.name == name)
    if field_type(f) in (int, float) and not isinstance(bad, bool) and bad == bad:
        with pytest.raises(SystemExit):
            subparser("train").parse_args([flag_name(f), str(bad)])
    if name in inspect.signature(Trainer).parameters:
        with pytest.raises(CnnlabError, match=re.escape(problem)):
            Trainer(torch.nn.Linear(784, 10), progress=False, **{name: bad})


def test_trainer_defaults_and_keys_come_from_the_config() -> None:
    params = inspect.signature(Trainer).parameters
    shared = {f.name for f in fields(TrainConfig)} & set(params) - {"model"}
    assert shared >= {"optimizer", "lr", "momentum", "ema", "tta", "precision", "schedule"}
    for name in shared:
        assert params[name].default == getattr(DEFAULTS, name), name
    resolved = TrainConfig(optimizer="sgd", momentum=0.5).resolved({})
    assert trainer_options(resolved).keys() == shared
    trainer = Trainer.from_config(torch.nn.Linear(784, 10), resolved, progress=False)
    assert trainer.optimizer.param_groups[0]["momentum"] == 0.5


def test_fallbacks_fill_only_what_recipe_and_user_leave() -> None:
    cfg = TrainConfig(batch_size=32).resolved({"batch_size": 200, "epochs": 10})
    assert cfg.batch_size == 32 and cfg.epochs == 10
    assert all(getattr(cfg, k) is not None for k in FALLBACKS if k != "epochs")
    assert TrainConfig(steps=100).resolved({"epochs": 10}).epochs is None  # length taken whole
    resolved = TrainConfig().resolved({})
    resolved.augment["rotate"] = 1.0  # a resolved config's dict is its own
    assert TrainConfig().resolved({}).augment == {}
