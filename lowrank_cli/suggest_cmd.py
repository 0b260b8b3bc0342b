"""`lowrank suggest-rank`: per-module LoRA ranks before training, as a peft LoraConfig file."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from lowrank.advice.planning.registry import SIGNALS, summary
from lowrank.errors import LowrankError
from lowrank.render.commands import suggest_table
from lowrank_cli.data_options import DATA_FILES, loss_on_option


@click.command("suggest-rank")
@click.option("--model", required=True, help="Registry key or local Hugging Face folder.")
@click.option("--data", required=True, help=f"Registry key or {DATA_FILES}.")
@click.option("--targets", default="auto", show_default=True, help="LoRA targets, as for lowrank train.")
@click.option("--budget", type=int, help="Trainable LoRA parameters to spend.")
@click.option("--rank", type=int, help="Spend what this rank on every target module costs.")
@click.option("--signal", type=click.Choice(list(SIGNALS)), default="gradient", show_default=True,
              help=" ".join(f"{name}: {summary(name)}" for name in SIGNALS))
@click.option("--examples", type=int, default=256, show_default=True, help="Training examples for the gradient.")
@click.option("--probe-rank", type=int, default=64, show_default=True)
@click.option("--probe-fraction", type=float, default=0.1, show_default=True,
              help="Probe steps as a fraction of the planned run's.")
@click.option("--epochs", type=int, default=3, show_default=True, help="Epochs of the planned run.")
@click.option("--lr", type=float, help="Learning rate of the planned run (the probe's). [default: lowrank train's]")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--max-length", type=int, default=128, show_default=True)
@loss_on_option()
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The peft LoraConfig fields as JSON (peft.LoraConfig(**json.load(f)); lowrank train --config).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the evidence as JSON.")
def suggest_rank(model, data, targets, budget, rank, signal, examples, probe_rank, probe_fraction, epochs, lr,
                 batch_size, max_length, loss_on, seed, device, out, json_path) -> None:
    """Choose each target module's LoRA rank before training, under a parameter budget, from the gradient at
    initialization or a short probe; writes a LoraConfig that peft and `lowrank train --config` accept."""
    from lowrank.api import suggest_config
    from lowrank.advice.planning.suggest import suggest
    from lowrank.outputs import write_text_atomic

    for path, option in ((out, "--out"), (json_path, "--json")):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            raise LowrankError(f"{option} {path}: expected a file path in an existing folder")
    result = suggest(suggest_config(model, data, budget, rank, targets=targets, signal=signal, examples=examples,
                                    probe_rank=probe_rank, probe_fraction=probe_fraction, epochs=epochs, lr=lr,
                                    batch_size=batch_size, max_length=max_length, loss_on=loss_on, seed=seed,
                                    device=device))
    write_text_atomic(out, json.dumps(result.lora_config, indent=1) + "\n")
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result.to_dict(), indent=1) + "\n")
    Console().print(suggest_table(result, f"lowrank suggest-rank: {model} on {data}"))
    click.echo(f"wrote {out}", err=True)
