"""The ``lowrank`` command group and the one place where library errors become ``Error:`` lines."""

from __future__ import annotations

import os
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

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        _one_process_unless_distributed(name)
        return name, command, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LowrankError as error:
            _fail(str(error), True)
            ctx.exit(getattr(error, "exit_code", 2))  # 2: bad input; a run stopped by a signal: 128 + signal
        except KeyboardInterrupt:
            _fail("interrupted", False)
            ctx.exit(130)
        except Exception as error:  # noqa: BLE001 - only on several processes: a peer's failure breaks collectives
            if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                raise
            _fail(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}", False)
            ctx.exit(1)


DISTRIBUTED = ("train", "analyze")  # the commands that share their work across torchrun's processes


def _one_process_unless_distributed(name: str | None) -> None:
    """Under torchrun every process would run any other command in full, all writing the same files: refused."""
    if name and name not in DISTRIBUTED and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LowrankError(f"lowrank {name} runs on one process; of the commands only "
                           f"{' and '.join(DISTRIBUTED)} run under torchrun (WORLD_SIZE is "
                           f"{os.environ['WORLD_SIZE']})")


def _fail(message: str, input_error: bool) -> None:
    """One ``Error:`` line on stderr; a worker of ``--nproc`` leaves it to the launcher instead. Under torchrun
    each failing rank names itself. (lowrank.distributed, and torch with it, is imported only here: ``--help``
    stays fast.)"""
    from lowrank import distributed

    if distributed.leave_error(message, input_error):
        return
    world = distributed.from_environment()
    click.echo(f"Error: {f'rank {world.rank}: ' if world.distributed else ''}{message}", err=True)


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
