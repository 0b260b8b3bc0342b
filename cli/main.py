"""The ``lowrank`` command group and the one place where library errors become ``Error:`` lines."""

from __future__ import annotations

import sys

import click

from lowrank import __version__
from lowrank.errors import LowrankError


class LowrankGroup(click.Group):
    """A click group that turns :class:`LowrankError` and click's usage errors into one ``Error:`` line and exit
    status 2 (click's own rendering prints a multi-line usage block first)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as error:
            hint = f" (see '{error.ctx.command_path} --help')" if getattr(error, "ctx", None) else ""
            click.echo(f"Error: {error.format_message()}{hint}", err=True)
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LowrankError as error:
            click.echo(f"Error: {error}", err=True)
            ctx.exit(getattr(error, "exit_code", 2))  # 2: bad input; a run stopped by a signal: 128 + signal
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=LowrankGroup)
@click.version_option(__version__, prog_name="lowrank")
def cli() -> None:
    """Train LoRA adapters and measure how low-rank fine-tuning updates really are."""


def _register() -> None:
    from lowrank_cli import commands

    for command in commands.ALL:
        cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    _register()
    cli(prog_name="lowrank")


if __name__ == "__main__":
    main()
