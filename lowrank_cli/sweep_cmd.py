"""`lowrank sweep`: a rank grid x seeds (and full fine-tuning), the held-out metric per rank, r*."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from lowrank.errors import LowrankError
from lowrank.training.config import TrainConfig
from lowrank.advice.sweep import SweepConfig, run_sweep
from lowrank.render.commands import sweep_table
from lowrank_cli.data_options import DATA_FILES, loss_on_option
from lowrank_cli.progress import rich_progress


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise LowrankError(f"expected comma-separated integers, got {text!r}") from None


@click.command()
@click.option("--model", required=True, help="Registry key or local Hugging Face folder.")
@click.option("--data", required=True, help=f"Registry key or {DATA_FILES}.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder of the runs and sweep.json.")
@click.option("--ranks", default="1,2,4,8,16,32,64", show_default=True, help="LoRA ranks of the grid.")
@click.option("--seeds", default="0,1,2", show_default=True, help="Training seeds.")
@click.option("--full/--no-full", default=True, show_default=True, help="Also fully fine-tune at every seed.")
@click.option("--lora-lr", type=float, help="LoRA learning rate. [default: lowrank train's]")
@click.option("--full-lr", type=float, help="Full fine-tuning learning rate. [default: lowrank train's]")
@click.option("--targets", default="auto", show_default=True, help="LoRA targets, as for lowrank train.")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--steps", type=int, help="Stop each run after this many optimizer steps.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--max-length", type=int, default=128, show_default=True)
@loss_on_option()
@click.option("--train-samples", type=int, help="Train on a fixed sample of N training examples.")
@click.option("--eval-samples", type=int, help="Evaluate on a fixed sample of N held-out examples.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Runs trained at once (processes).")
@click.option("--signals/--no-signals", default=True, show_default=True,
              help="Measure each adapter's sufficiency signals (gradient outside its subspace).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep(model, data, out, ranks, seeds, full, lora_lr, full_lr, targets, epochs, steps, batch_size, max_length,
          loss_on, train_samples, eval_samples, jobs, signals, device, quiet) -> None:
    """Train every rank of a grid at several seeds (and full fine-tuning): the held-out metric per rank, mean +- sd,
    and r*, the smallest rank within noise of the best. Finished runs in OUT are reused."""
    base = TrainConfig(model=model, data=data, method="lora", out=out, targets=targets, epochs=epochs,
                       max_steps=steps, batch_size=batch_size, max_length=max_length, loss_on=loss_on,
                       max_train_samples=train_samples,
                       eval_samples=eval_samples, device=device)
    config = SweepConfig(base=base, ranks=int_list(ranks), seeds=int_list(seeds), full=full, lora_lr=lora_lr,
                         full_lr=full_lr, jobs=jobs, signals=signals)
    with rich_progress(enabled=not quiet) as progress:
        table = run_sweep(config, progress)
    Console().print(sweep_table(table, f"lowrank sweep: {model} on {data}"))
