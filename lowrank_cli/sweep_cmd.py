"""`lowrank sweep`: a rank grid x seeds (and full fine-tuning), the held-out metric per rank, r*."""

from __future__ import annotations

import click
from rich.console import Console

from lowrank.errors import LowrankError
from lowrank.train_config import TrainConfig
from lowrank.advice.sweep import SweepConfig, run_sweep
from lowrank.render.commands import sweep_table
from lowrank_cli.config_options import config_from, options_from
from lowrank_cli.planned_runs import PLANNED_RUN_HELPS
from lowrank_cli.progress import rich_progress


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LowrankError(f"expected comma-separated integers, got {text!r}") from None


@click.command()
@options_from(TrainConfig, "model", "data", "out",
              helps={**PLANNED_RUN_HELPS, "out": "Folder of the runs and sweep.json."})
@click.option("--ranks", default="1,2,4,8,16,32,64", show_default=True, help="LoRA ranks of the grid.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds.")
@options_from(SweepConfig, stop="jobs")
@options_from(TrainConfig, "targets", "epochs", "max_steps", "batch_size", "max_length", "loss_on",
              "max_train_samples", "eval_samples", helps={**PLANNED_RUN_HELPS, "max_steps": "Stop each run after this many optimizer steps."})
@options_from(SweepConfig, start="jobs")
@options_from(TrainConfig, "device")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep(ranks, seeds, quiet, **options) -> None:
    """Train every rank of a grid at several seeds (and full fine-tuning): the held-out metric per rank, mean +- sd,
    and r*, the smallest rank within noise of the best. Finished runs in OUT are reused."""
    base = config_from(TrainConfig, options, method="lora")
    config = config_from(SweepConfig, options, base=base, ranks=int_list(ranks), seeds=int_list(seeds))
    with rich_progress(enabled=not quiet) as progress:
        table = run_sweep(config, progress)
    Console().print(sweep_table(table, f"lowrank sweep: {base.model} on {base.data}"))
