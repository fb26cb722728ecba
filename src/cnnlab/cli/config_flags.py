"""Command-line flags generated from :class:`~cnnlab.config.TrainConfig`'s fields.

Each field becomes one flag: ``--batch-size`` for ``batch_size`` (or the field's own
``flag``), parsed to the field's type and checked by :func:`~cnnlab.config.check_option`
(a bad value is argparse's one-line error, exit 2), with the field's choices, its default
as the argparse default, and a help line that ends in what is used when the flag is left
out. ``cnnlab train``, ``compare``, ``summary`` and ``layers`` take their flags from here,
so an option is described once, in the config.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from dataclasses import Field
from typing import Any

from cnnlab.config import (
    TrainConfig,
    check_option,
    field_default,
    field_type,
    option_fields,
    option_of,
)
from cnnlab.errors import CnnlabError


def flag_name(f: Field[Any]) -> str:
    """The flag of a config field: its own, or ``--`` and the name with dashes."""
    return option_of(f).flag or "--" + f.name.replace("_", "-")


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def default_text(f: Field[Any]) -> str:
    """What ``--help`` says is used when the flag is left out."""
    opt = option_of(f)
    if opt.default_text is not None:
        return opt.default_text
    if opt.fallback is not None:
        return f"recipe, else {_text(opt.fallback)}"
    default = field_default(f)
    return "none" if default is None else _text(default)


def value_parser(f: Field[Any]) -> Callable[[str], Any]:
    """Command-line text -> a checked value of the field's type."""
    opt, kind, flag = option_of(f), field_type(f), flag_name(f)
    convert = opt.parse or kind

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (ValueError, CnnlabError) as exc:
            if kind in (int, float) and opt.parse is None:
                noun = "a whole number" if kind is int else "a number"
                raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
            raise argparse.ArgumentTypeError(str(exc)) from None
        try:
            if not opt.repeatable:
                check_option(f.name, value, flag)
        except CnnlabError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{flag} ")) from None
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


class _MergeDict(argparse.Action):
    """A repeatable flag whose values (one-entry dicts) are merged into one dict."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        merged = dict(getattr(namespace, self.dest) or {})
        merged.update(values)
        setattr(namespace, self.dest, merged)


def add_config_flags(
    parser: argparse.ArgumentParser,
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> None:
    """Add a flag for every :class:`TrainConfig` field (or those in ``only``)."""
    for f in option_fields():
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        opt, kind = option_of(f), field_type(f)
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": field_default(f),
            "help": f"{opt.help} (default: {default_text(f)})",
        }
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = value_parser(f)
            kwargs["metavar"] = opt.metavar
            if opt.choices is not None:
                kwargs["choices"] = opt.choices
                kwargs["metavar"] = None
            if opt.repeatable:
                kwargs["action"] = _MergeDict
        parser.add_argument(flag_name(f), **kwargs)


def changed_flags(config: TrainConfig) -> list[str]:
    """The flags of the fields ``config`` sets to something other than their defaults."""
    return [flag_name(f) for f in option_fields() if getattr(config, f.name) != field_default(f)]


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the parsed flags describe (fields without a flag keep
    their defaults)."""
    given = {f.name: getattr(args, f.name) for f in option_fields() if hasattr(args, f.name)}
    return TrainConfig(**given)
