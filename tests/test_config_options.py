"""lowrank_cli.config_options: click options made from config fields declared with lowrank.options.option."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import click
import pytest

from lowrank.options import option, option_spec
from lowrank.train_config import TrainConfig
from lowrank_cli.config_options import config_from, options_from, take_fields
from lowrank_cli.train_cmd import train


@dataclass(frozen=True)
class Toy:
    name: str = option(argument=True, metavar="NAME")
    out: Path = option(help="Where.")
    mode: str = option(choices=("a", "b"), cli_default="a")
    size: int = option(4, "How big.", minimum=2)
    tags: tuple[str, ...] = option((), "Repeatable.", multiple=True)
    checks: bool = option(True, "Skip the checks.", flag="--no-checks")
    colour: bool = option(True, "In colour.", flag="--colour/--plain")
    unlisted: int = 0
    late: float | None = option(None, "Declared last, listed after size.", listed_after="size")


@click.command()
@options_from(Toy, helps={"out": "Where, in this command."})
def toy(**options):
    return Toy(**options)


def parse(command: click.Command, args: list[str]) -> dict:
    return command.make_context(command.name, args).params


def test_each_field_is_its_option_in_listed_order():
    assert [param.name for param in toy.params] == ["name", "out", "mode", "size", "late", "tags", "checks", "colour"]
    by_name = {param.name: param for param in toy.params}
    assert by_name["out"].required and by_name["out"].help == "Where, in this command."
    assert isinstance(by_name["out"].type, click.Path)
    assert by_name["mode"].default == "a" and tuple(by_name["mode"].type.choices) == ("a", "b")
    assert by_name["size"].type.min == 2 and by_name["size"].show_default
    assert by_name["colour"].secondary_opts == ["--plain"]


def test_parsed_values_build_the_config():
    defaults = Toy(**parse(toy, ["x", "--out", "o"]))
    assert defaults == Toy(name="x", out=Path("o"), mode="a", size=4, tags=(), checks=True, colour=True, late=None)
    given = Toy(**parse(toy, ["x", "--out", "o", "--mode", "b", "--size", "3", "--tags", "p", "--tags", "q",
                              "--no-checks", "--plain", "--late", "0.5"]))
    assert given == Toy(name="x", out=Path("o"), mode="b", size=3, tags=("p", "q"), checks=False, colour=False,
                        late=0.5)
    with pytest.raises(click.BadParameter):
        parse(toy, ["x", "--out", "o", "--size", "1"])


def test_train_keeps_the_historical_names():
    flags = {param.name: param.opts[0] for param in train.params}
    assert {name: flags[name] for name in ("use_rslora", "max_steps", "max_train_samples", "compile", "nonfinite",
                                           "checkpointing")} \
        == {"use_rslora": "--rslora", "max_steps": "--steps", "max_train_samples": "--train-samples",
            "compile": "--compile", "nonfinite": "--on-nonfinite", "checkpointing": "--checkpointing"}
    declared = {field.name for field in fields(TrainConfig) if option_spec(field)}
    assert declared <= set(flags)
    names = [param.name for param in train.params]
    assert names.index("checkpointing") == names.index("compile") + 1  # listed beside its kin, declared last


def test_config_from_takes_only_the_configs_fields():
    options = {"name": "x", "out": Path("o"), "mode": "b", "other": 1}
    assert config_from(Toy, options, size=5) == Toy(name="x", out=Path("o"), mode="b", size=5)
    assert options == {"other": 1}
    assert take_fields(Toy, {"size": 2, "json": None}) == {"size": 2}
