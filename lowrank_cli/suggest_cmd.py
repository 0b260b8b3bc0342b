"""`lowrank suggest-rank`: per-module LoRA ranks before training, as a peft LoraConfig file."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from lowrank.advice.planning.config import SuggestConfig
from lowrank.errors import LowrankError
from lowrank.render.commands import suggest_table
from lowrank.train_config import TrainConfig
from lowrank_cli.config_options import options_from
from lowrank_cli.planned_runs import PLANNED_RUN_HELPS


@click.command("suggest-rank")
@options_from(TrainConfig, "model", "data", "targets", helps=PLANNED_RUN_HELPS)
@options_from(SuggestConfig)
@options_from(TrainConfig, "epochs", "lr", "batch_size", "max_length", "loss_on", "seed", "device",
              helps={**PLANNED_RUN_HELPS, "epochs": "Epochs of the planned run.",
                     "lr": "Learning rate of the planned run (the probe's). [default: lowrank train's]"})
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The peft LoraConfig fields as JSON (peft.LoraConfig(**json.load(f)); lowrank train --config).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the evidence as JSON.")
def suggest_rank(out, json_path, **options) -> None:
    """Choose each target module's LoRA rank before training, under a parameter budget, from the gradient at
    initialization or a short probe; writes a LoraConfig that peft and `lowrank train --config` accept."""
    from lowrank.api import suggest_config
    from lowrank.advice.planning.suggest import suggest
    from lowrank.outputs import write_text_atomic

    for path, option in ((out, "--out"), (json_path, "--json")):
        if path is not None and (path.is_dir() or not path.parent.is_dir()):
            raise LowrankError(f"{option} {path}: expected a file path in an existing folder")
    result = suggest(suggest_config(**options))
    write_text_atomic(out, json.dumps(result.lora_config, indent=1) + "\n")
    if json_path is not None:
        write_text_atomic(json_path, json.dumps(result.to_dict(), indent=1) + "\n")
    Console().print(suggest_table(result, f"lowrank suggest-rank: {options['model']} on {options['data']}"))
    click.echo(f"wrote {out}", err=True)
