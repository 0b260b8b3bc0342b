"""Command-line options declared where the setting lives: :func:`option` is a :func:`dataclasses.field` of a config
dataclass whose metadata (an :class:`OptionSpec`) says how the field is given on the command line, so that a new
option is one field declaration. The option's name is ``--`` and the field's name with ``-`` for ``_`` unless
``flag`` names it, its type follows the annotation, and a field with no default is required. The library never
reads the metadata (lowrank_cli turns it into click options), so lowrank imports no command-line library."""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any

METADATA_KEY = "lowrank.option"


@dataclass(frozen=True)
class OptionSpec:
    """How one field is given on the command line.

    Args:
        help: the ``--help`` text.
        flag: the declaration when it is not ``--field-name``: a historical name (``"--steps"``), an on/off pair
            (``"--bf16/--no-bf16"``), or a flag that turns a default-True field off (``"--no-base-metrics"``).
        choices: the values accepted.
        minimum: the smallest integer accepted.
        metavar: the value's name in ``--help``.
        cli_default: the command line's default for a field that has none in Python (``TrainConfig.method``);
            None: the field's own.
        argument: a positional argument instead of an option.
        multiple: the option may be repeated; the field holds a tuple of the values.
        listed_after: ``--help`` lists the option after this field's (a field declared last to keep the order of
            files that record the config, listed beside its kin).
    """

    help: str | None = None
    flag: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    metavar: str | None = None
    cli_default: Any = None
    argument: bool = False
    multiple: bool = False
    listed_after: str | None = None


def option(default: Any = MISSING, help: str | None = None, **spec: Any) -> Any:  # noqa: A002 - click's word
    """A dataclass field with ``default`` that is also a command-line option (``spec``: :class:`OptionSpec`'s
    other arguments)."""
    return dataclasses.field(default=default, metadata={METADATA_KEY: OptionSpec(help=help, **spec)})


def option_spec(field: dataclasses.Field) -> OptionSpec | None:
    """The field's :class:`OptionSpec`; None for a field that is no command-line option."""
    return field.metadata.get(METADATA_KEY)
