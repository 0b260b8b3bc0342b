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
from lowrank.outputs import write_text_atomic
from lowrank.render.commands import compress_summary, compress_table
from lowrank_cli.data_options import DATA_FILES, loss_on_option
from lowrank_cli.progress import rich_progress



def _shared(command):
    """Options common to both commands, in the order --help lists them."""
    options = [
        click.option("--rank", type=int, help="Keep this rank per module (capped at what the module has)."),
        click.option("--energy", type=float, help="Keep, per module, the fewest singular directions holding this "
                     "fraction in (0, 1] of ||dW||_F^2; ranks differ per module (rank_pattern / alpha_pattern)."),
        click.option("--out", required=True, type=click.Path(path_type=Path),
                     help="The new adapter folder (must be new or empty)."),
        click.option("--data", metavar="DATA", help="Evaluate the original and the new adapter on this dataset's "
                     f"held-out split (registry key or {DATA_FILES}) and report both."),
        click.option("--max-length", type=int, default=128, show_default=True, help="Tokens per example (--data)."),
        loss_on_option(),
        click.option("--batch-size", type=int, default=64, show_default=True, help="Evaluation batch size."),
        click.option("--eval-samples", type=int, help="Evaluate on the first N held-out examples only."),
        click.option("--json", "json_path", metavar="FILE", help="Also write the report JSON here ('-': stdout, "
                     "only it); it is always written as OUT/compress_report.json."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _evaluation(data, max_length, loss_on, batch_size, eval_samples, device) -> EvalConfig | None:
    if data is None:
        return None
    return EvalConfig(data=data, max_length=max_length, batch_size=batch_size, limit=eval_samples, device=device,
                      loss_on=loss_on)


def _device(device: str | None) -> str:
    from lowrank import devices

    return devices.choose(device)


@click.command("extract")
@click.argument("tuned", metavar="TUNED")
@click.option("--base", required=True, metavar="MODEL", help="The pre-trained model TUNED started from (folder, "
              "safetensors file or registry key): dW = W1 - W0.")
@_shared
@click.option("--embeddings", is_flag=True, help="Also extract embedding deltas (lora_embedding_A/B).")
@click.option("--modules", metavar="REGEX", help="Extract only modules whose name matches this regular expression.")
@click.option("--save-modules", metavar="NAMES", help="Comma-separated modules carried in full (modules_to_save), "
              "e.g. classifier,LayerNorm [default: task heads and modules the base lacks].")
@click.option("--bias", type=click.Choice(["none", "all"]), default="none", show_default=True,
              help="all: carry every bias of TUNED (peft bias='all').")
@click.option("--allow-pickle", is_flag=True, help="Read .bin/.pt checkpoints with torch.load(weights_only=True).")
@click.option("--device", help="Where the SVDs and evaluation run [default: cuda when present, else cpu].")
def extract(tuned, base, rank, energy, out, data, max_length, loss_on, batch_size, eval_samples, json_path, quiet,
            embeddings, modules, save_modules, bias, allow_pickle, device) -> None:
    """Turn a full fine-tune into a peft LoRA adapter by truncated SVD of each module's W1 - W0.

    Reports per module the kept rank, kept energy and relative Frobenius error, modules whose factors are not
    smaller than the dense delta, and changed tensors the adapter leaves out.
    """
    device = _device(device)
    saved = None if save_modules is None else tuple(s.strip() for s in save_modules.split(",") if s.strip())
    config = ExtractConfig(tuned=tuned, base=base, out=out, target=RankTarget(rank=rank, energy=energy),
                           embeddings=embeddings, modules=modules, save_modules=saved, bias=bias,
                           allow_pickle=allow_pickle, device=device,
                           evaluation=_evaluation(data, max_length, loss_on, batch_size, eval_samples, device))
    with rich_progress(not quiet and json_path != "-") as progress:
        report = run_extract(config, progress)
    _render(report, json_path)


@click.command("resize")
@click.argument("adapter", metavar="ADAPTER")
@_shared
@click.option("--base", metavar="MODEL", help="Base model for --data [default: the adapter's base_model_name_or_path].")
@click.option("--device", help="Where evaluation runs [default: cuda when present, else cpu].")
def resize(adapter, rank, energy, out, data, max_length, loss_on, batch_size, eval_samples, json_path, quiet, base,
           device) -> None:
    """Change a peft LoRA adapter's rank through the factored SVD of s*B@A (never forming B@A).

    Singular values are split evenly between the new B and A; each module keeps its scaling, and r, lora_alpha,
    rank_pattern and alpha_pattern are rewritten to match (rsLoRA kept).
    """
    config = ResizeConfig(adapter=adapter, out=out, target=RankTarget(rank=rank, energy=energy), base=base,
                          evaluation=_evaluation(data, max_length, loss_on, batch_size, eval_samples,
                                                 _device(device)))
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
