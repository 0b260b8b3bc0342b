"""``lowrank extract`` (full fine-tune -> peft adapter) and ``lowrank resize`` (adapter -> new rank): parse options,
call :mod:`lowrank.compress`, render the per-module report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from lowrank.compress import (EvalConfig, ExtractConfig, RankTarget, ResizeConfig, extract as run_extract,
                              resize as run_resize)
from lowrank.compress.records import CompressReport
from lowrank.data.instructions import DATA_FILES
from lowrank.outputs import write_text_atomic
from lowrank.render.commands import compress_summary, compress_table
from lowrank_cli.config_options import config_from, options_from, take_fields
from lowrank_cli.progress import rich_progress


def _shared(command):
    """Options common to both commands, in the order --help lists them."""
    options = [
        options_from(RankTarget),
        click.option("--out", required=True, type=click.Path(path_type=Path),
                     help="The new adapter folder (must be new or empty)."),
        click.option("--data", metavar="DATA", help="Evaluate the original and the new adapter on this dataset's "
                     f"held-out split (registry key or {DATA_FILES}) and report both."),
        options_from(EvalConfig),
        click.option("--json", "json_path", metavar="FILE", help="Also write the report JSON here ('-': stdout, "
                     "only it); it is always written as OUT/compress_report.json."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _evaluation(data: str | None, device: str, options: dict) -> EvalConfig | None:
    """The evaluation ``--data`` asks for (its settings taken out of ``options`` either way)."""
    evaluation = take_fields(EvalConfig, options)
    return None if data is None else EvalConfig(data=data, device=device, **evaluation)


def _device(device: str | None) -> str:
    from lowrank import devices

    return devices.choose(device)


@click.command("extract")
@options_from(ExtractConfig, "tuned", "base")
@_shared
@options_from(ExtractConfig, "embeddings", "modules")
@click.option("--save-modules", metavar="NAMES", help="Comma-separated modules carried in full (modules_to_save), "
              "e.g. classifier,LayerNorm [default: task heads and modules the base lacks].")
@options_from(ExtractConfig, "bias", "allow_pickle")
@click.option("--device", help="Where the SVDs and evaluation run [default: cuda when present, else cpu].")
def extract(out, data, json_path, quiet, save_modules, device, **options) -> None:
    """Turn a full fine-tune into a peft LoRA adapter by truncated SVD of each module's W1 - W0.

    Reports per module the kept rank, kept energy and relative Frobenius error, modules whose factors are not
    smaller than the dense delta, and changed tensors the adapter leaves out.
    """
    device = _device(device)
    saved = None if save_modules is None else tuple(s.strip() for s in save_modules.split(",") if s.strip())
    target = config_from(RankTarget, options)
    evaluation = _evaluation(data, device, options)
    config = ExtractConfig(out=out, target=target, save_modules=saved, device=device, evaluation=evaluation,
                           **options)
    with rich_progress(not quiet and json_path != "-") as progress:
        report = run_extract(config, progress)
    _render(report, json_path)


@click.command("resize")
@options_from(ResizeConfig, "adapter")
@_shared
@options_from(ResizeConfig, "base")
@click.option("--device", help="Where evaluation runs [default: cuda when present, else cpu].")
def resize(out, data, json_path, quiet, device, **options) -> None:
    """Change a peft LoRA adapter's rank through the factored SVD of s*B@A (never forming B@A).

    Singular values are split evenly between the new B and A; each module keeps its scaling, and r, lora_alpha,
    rank_pattern and alpha_pattern are rewritten to match (rsLoRA kept).
    """
    target = config_from(RankTarget, options)
    config = ResizeConfig(out=out, target=target, evaluation=_evaluation(data, _device(device), options), **options)
    with rich_progress(not quiet and json_path != "-") as progress:
        report = run_resize(config, progress)
    _render(report, json_path)


def _render(report: CompressReport, json_path: str | None) -> None:
    if json_path is not None:
        text = json.dumps(report.to_dict(), indent=1) + "\n"
        if json_path == "-":
            click.echo(text, nl=False)
            return
        write_text_atomic(json_path, text)
    console = Console(width=110) if not sys.stdout.isatty() else Console()
    console.print(compress_table(report))
    for line in compress_summary(report):
        console.print(line)
