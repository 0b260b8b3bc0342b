"""`lowrank train`: LoRA or full fine-tuning of a model on a dataset, written in peft / Hugging Face format (an
MLP folder for a fully fine-tuned ``mlp:`` network on image data)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console

from lowrank.adapters.lora_file import read_lora_file
from lowrank.render.commands import train_table
from lowrank.training.loop import TrainConfig, train as run_training
from lowrank_cli.config_options import options_from
from lowrank_cli.launching import is_main, nproc_option, relaunched
from lowrank_cli.progress import rich_progress


@click.command()
@options_from(TrainConfig, stop="epochs")
@click.option("--config", "lora_file", type=click.Path(path_type=Path), help="A peft LoraConfig as JSON (e.g. from "
              "lowrank suggest-rank): sets r, alpha, targets, rank_pattern, alpha_pattern, rsLoRA and dropout, "
              "overriding those options.")
@options_from(TrainConfig, start="epochs")
@nproc_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(lora_file, nproc, quiet, **options) -> None:
    """Train a LoRA adapter (peft format) or fully fine-tune (Hugging Face folder); metrics go to OUT/metrics.json.
    Under torchrun (or with --nproc) every process trains its shard of each batch; rank 0 writes."""
    if relaunched(nproc):
        return
    config = TrainConfig(**options)
    if lora_file is not None:
        config = replace(config, **read_lora_file(lora_file))
    with rich_progress(enabled=not quiet and is_main()) as progress:
        metrics = run_training(config, progress)
    if is_main():
        Console(stderr=True).print(train_table(metrics, config.out))
        for backoff in metrics["lr_backoffs"]:
            click.echo(f"Note: at learning rate {backoff['lr']:g}, chosen by lowrank, {backoff['reason']} (step "
                       f"{backoff['step']}); trained again from the start at half the rate", err=True)
        if metrics["collapsed"]:
            click.echo(f"Warning: the run collapsed: {metrics['collapsed']}; lower the learning rate (--lr)",
                       err=True)
