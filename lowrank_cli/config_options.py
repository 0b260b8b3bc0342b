"""click options generated from the fields of lowrank's config dataclasses (:func:`lowrank.options.option`): a
command takes :func:`options_from` a config, receives the values under the fields' names and builds the config
from them (:func:`config_from`)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Callable

import click

from lowrank.options import OptionSpec, option_spec


def options_from(config: type, *names: str, start: str | None = None, stop: str | None = None,
                 helps: dict[str, str | None] | None = None) -> Callable:
    """A decorator adding ``config``'s options to a click command, in the order ``--help`` lists them: the fields
    ``names`` in that order, or else every option field from ``start`` up to (not including) ``stop``. ``helps``
    replaces a field's help text where the command words it differently."""
    listed = _listed_fields(config)
    order = list(listed)
    chosen = names or order[order.index(start) if start else 0: order.index(stop) if stop else len(order)]
    hints = typing.get_type_hints(config)
    helps = helps or {}

    def decorate(command: Callable) -> Callable:
        for name in reversed(chosen):
            command = _parameter(listed[name], hints[name], helps.get(name, option_spec(listed[name]).help))(command)
        return command

    return decorate


def config_from(config: type, options: dict[str, Any], **settings: Any) -> Any:
    """``config`` built from ``settings`` and its fields' values in ``options`` (:func:`take_fields`)."""
    return config(**take_fields(config, options), **settings)


def take_fields(config: type, options: dict[str, Any]) -> dict[str, Any]:
    """The values in ``options`` under ``config``'s field names, taken out of ``options``."""
    names = {field.name for field in dataclasses.fields(config)}
    return {name: options.pop(name) for name in list(options) if name in names}


def _listed_fields(config: type) -> dict[str, dataclasses.Field]:
    """The option fields by name, in ``--help`` order: declaration order, each ``listed_after`` field moved."""
    fields = [field for field in dataclasses.fields(config) if option_spec(field)]
    order = [field.name for field in fields if not option_spec(field).listed_after]
    for field in fields:
        after = option_spec(field).listed_after
        if after:
            order.insert(order.index(after) + 1, field.name)
    by_name = {field.name: field for field in fields}
    return {name: by_name[name] for name in order}


def _parameter(field: dataclasses.Field, annotation: Any, help_text: str | None) -> Callable:
    """The click option (or argument) of one field."""
    spec = option_spec(field)
    value_type = _click_type(_value_class(annotation), spec)
    if spec.argument:
        return click.argument(field.name, metavar=spec.metavar, **({"type": value_type} if value_type else {}))
    default = field.default if spec.cli_default is None else spec.cli_default
    settings: dict[str, Any] = {"help": help_text}
    if spec.metavar:
        settings["metavar"] = spec.metavar
    if value_type is bool:
        settings.update(_flag(spec, default))
    else:
        if value_type is not None:
            settings["type"] = value_type
        if spec.multiple:
            settings["multiple"] = True
        elif default is MISSING:
            settings["required"] = True
        elif default is not None:
            settings.update(default=default, show_default=True)
    return click.option(spec.flag or "--" + field.name.replace("_", "-"), field.name, **settings)


def _flag(spec: OptionSpec, default: bool) -> dict[str, Any]:
    """An on/off pair shows its default; a lone flag sets the field, or clears a field that defaults to True."""
    if spec.flag and "/" in spec.flag:
        return {"default": default, "show_default": True}
    return {"is_flag": True, "flag_value": False, "default": True} if default else {"is_flag": True}


def _value_class(annotation: Any) -> Any:
    """``int`` for ``int | None``, ``str`` for ``tuple[str, ...]``; else the annotation itself."""
    if isinstance(annotation, types.UnionType):
        (annotation,) = [part for part in typing.get_args(annotation) if part is not type(None)]
    if typing.get_origin(annotation) is tuple:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _click_type(value_class: Any, spec: OptionSpec) -> Any:
    """The click type of an option's values; None for plain text (click's default)."""
    if spec.choices is not None:
        return click.Choice(spec.choices)
    if value_class is int and spec.minimum is not None:
        return click.IntRange(min=spec.minimum)
    if value_class is Path:
        return click.Path(path_type=Path)
    return None if value_class is str else value_class
