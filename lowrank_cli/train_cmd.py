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
from lowrank_cli.data_options import DATA_FILES, loss_on_option
from lowrank_cli.launching import is_main, nproc_option, relaunched
from lowrank_cli.progress import rich_progress


@click.command()
@click.option("--model", required=True, help="Registry key (minilm-l6, smollm2-135m), a local Hugging Face folder, "
              "mlp:784,200,10 (a new fully connected network from --seed) or a folder a full MLP run wrote.")
@click.option("--data", required=True, help=f"Registry key (reuters-r8, reuters-r52, 20newsgroups) or {DATA_FILES}; "
              "for an MLP an image set (digits, mnist-5k, fashion-mnist, .npz/.csv file).")
@click.option("--method", type=click.Choice(["lora", "full"]), default="lora", show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (must be empty or new).")
@click.option("--task", type=click.Choice(["auto", "classification", "lm"]), default="auto", show_default=True,
              help="auto: language modelling for causal LMs, else classification.")
@click.option("--rank", type=int, default=8, show_default=True, help="LoRA rank r.")
@click.option("--alpha", type=float, help="LoRA alpha; the update is scaled by alpha/r. [default: 8, so that the default learning rate suits every rank]")
@click.option("--targets", default="auto", show_default=True,
              help="Module suffixes (query,value), 're:<regex>', or all-linear; auto: attention query and value "
              "(MLP: every hidden layer, the last layer trained in full).")
@click.option("--rslora", is_flag=True, help="Scale by alpha/sqrt(r) (rank-stabilized LoRA).")
@click.option("--dropout", type=float, default=0.0, show_default=True, help="Dropout on the LoRA branch input.")
@click.option("--init", type=click.Choice(["kaiming", "gaussian"]), default="kaiming", show_default=True,
              help="Initialization of A (B starts at zero).")
@click.option("--config", "lora_file", type=click.Path(path_type=Path), help="A peft LoraConfig as JSON (e.g. from "
              "lowrank suggest-rank): sets r, alpha, targets, rank_pattern, alpha_pattern, rsLoRA and dropout, "
              "overriding those options.")
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--steps", type=int, help="Stop after this many optimizer steps.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--grad-accum", type=int, default=1, show_default=True, help="Micro-batches per optimizer step.")
@click.option("--max-length", type=int, default=128, show_default=True, help="Tokens per example (LM of plain "
              "text: per block).")
@loss_on_option()
@click.option("--lr", type=float, help="Peak learning rate. [default: 2e-3 LoRA, 5e-5 full; LM 1e-3 / 2e-5; "
              "MLP 1e-2 / 3e-3]")
@click.option("--head-lr", type=float, help="Peak learning rate of a new classifier head (an MLP's last layer). "
              "[default: max(lr, 2e-3)]")
@click.option("--warmup-ratio", type=float, default=0.06, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--grad-clip", type=float, default=1.0, show_default=True)
@click.option("--eval-every", type=int, help="Evaluate on the held-out split every N steps (and always at the end).")
@click.option("--eval-samples", type=int, help="Evaluate on a fixed sample of N held-out examples.")
@click.option("--train-samples", type=int, help="Train on a fixed sample of N training examples.")
@click.option("--save-every", type=int, help="Checkpoint every N steps (for --resume).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bf16/--no-bf16", default=True, show_default=True, help="bf16 autocast on CUDA.")
@click.option("--compile", "compile_model", is_flag=True, help="Run the model through torch.compile (long runs "
              "only: compiling takes tens of seconds).")
@click.option("--cuda-graphs/--no-cuda-graphs", default=True, show_default=True, help="On one GPU, replay each "
              "training step from a CUDA graph (one per batch shape).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out (refused when a setting that "
              "changes the result differs from the checkpoint's).")
@click.option("--on-nonfinite", "nonfinite", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
              help="At a NaN/Inf loss or gradient: stop (the last good checkpoint is kept) or skip the step.")
@click.option("--parallel", type=click.Choice(["ddp", "fsdp"]), default="ddp", show_default=True,
              help="On several processes: DistributedDataParallel, or FSDP2 (the model sharded over the processes, "
              "for models too large for one device). --batch-size is the global batch.")
@nproc_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(model, data, method, out, task, rank, alpha, targets, rslora, dropout, init, lora_file, epochs, steps, batch_size,
          grad_accum, max_length, loss_on, lr, head_lr, warmup_ratio, weight_decay, grad_clip, eval_every,
          eval_samples, train_samples, save_every, seed, bf16, compile_model, cuda_graphs, device, overwrite, resume,
          nonfinite, parallel, nproc, quiet) -> None:
    """Train a LoRA adapter (peft format) or fully fine-tune (Hugging Face folder); metrics go to OUT/metrics.json.
    Under torchrun (or with --nproc) every process trains its shard of each batch; rank 0 writes."""
    if relaunched(nproc):
        return
    config = TrainConfig(
        model=model, data=data, method=method, out=out, task=task, rank=rank, alpha=alpha, targets=targets,
        use_rslora=rslora, dropout=dropout, init=init, epochs=epochs, max_steps=steps, batch_size=batch_size,
        grad_accum=grad_accum, max_length=max_length, loss_on=loss_on, lr=lr, head_lr=head_lr,
        warmup_ratio=warmup_ratio, weight_decay=weight_decay, grad_clip=grad_clip, eval_every=eval_every,
        eval_samples=eval_samples, max_train_samples=train_samples,
        save_every=save_every, seed=seed, bf16=bf16, compile=compile_model, cuda_graphs=cuda_graphs, device=device,
        overwrite=overwrite, resume=resume, nonfinite=nonfinite, parallel=parallel)
    if lora_file is not None:
        config = replace(config, **read_lora_file(lora_file))
    with rich_progress(enabled=not quiet and is_main()) as progress:
        metrics = run_training(config, progress)
    if is_main():
        Console(stderr=True).print(train_table(metrics, out))
        for backoff in metrics["lr_backoffs"]:
            click.echo(f"Note: at the default learning rate {backoff['lr']:g} the run collapsed ({backoff['reason']}, "
                       f"step {backoff['step']}); it was trained again from the start at half the rate", err=True)
        if metrics["collapsed"]:
            click.echo(f"Warning: the run collapsed: {metrics['collapsed']}; lower the learning rate (--lr)",
                       err=True)
