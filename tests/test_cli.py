"""The command group as a whole: every command has help text and is documented in the README."""

from __future__ import annotations

from pathlib import Path

from lowrank_cli.commands import ALL

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_command_has_help_and_appears_in_the_readme(invoke):
    assert ALL
    for command in ALL:
        result = invoke(command.name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout
        assert command.help and len(command.help) > 20, command.name
        assert f"lowrank {command.name}" in README, f"README does not document `lowrank {command.name}`"


def test_version_and_group_help(invoke):
    assert invoke("--version").stdout.startswith("lowrank, version")
    assert all(c.name in invoke("--help").stdout for c in ALL)


def test_usage_errors_are_one_error_line(invoke):
    for args in (["train", "--method", "qlora"], ["analyze"], ["train", "--no-such-option"], ["nonsense"]):
        result = invoke(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), result.stderr


def test_under_torchrun_only_train_and_analyze_run():
    """torchrun would run any other command once per process, each writing the same files: one Error line."""
    from click.testing import CliRunner

    from lowrank_cli.main import _register, cli

    _register()
    runner = CliRunner()
    for command in ("sweep", "suggest-rank", "intrinsic-dim", "extract", "resize"):
        result = runner.invoke(cli, [command, "--help"], env={"WORLD_SIZE": "2", "RANK": "1"})
        assert result.exit_code == 2
        assert result.output == (f"Error: rank 1: lowrank {command} runs on one process; of the commands only train "
                                 "and analyze run under torchrun (WORLD_SIZE is 2)\n")
    assert runner.invoke(cli, ["train", "--help"], env={"WORLD_SIZE": "2", "RANK": "1"}).output.startswith("Usage")
