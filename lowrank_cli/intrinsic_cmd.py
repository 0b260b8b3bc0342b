"""`lowrank intrinsic-dim`: the smallest random subspace in which training reaches 90% of the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from lowrank import devices
from lowrank.intrinsic.problems import resolve_problem
from lowrank.intrinsic.search import SearchConfig, measure_intrinsic_dimension, parse_baseline, parse_dims
from lowrank.intrinsic.training import RunBudget
from lowrank.outputs import write_bytes_atomic, write_text_atomic
from lowrank_cli.config_options import options_from
from lowrank_cli.progress import rich_progress


@click.command("intrinsic-dim")
@click.option("--model", required=True, help="mlp:784,200,200,10 (image data), a registry key (minilm-l6) or a "
              "local Hugging Face classifier folder.")
@click.option("--data", required=True, help="Image set (digits, mnist-5k, fashion-mnist, .npz/.csv file) for mlp:, "
              "else a labelled text set (reuters-r8, .csv/.jsonl).")
@click.option("--dims", default="log:50:2000:6", show_default=True,
              help="Subspace dimensions: 100,200,400 or log:LOW:HIGH:COUNT.")
@options_from(SearchConfig, stop="threshold")
@click.option("--steps", type=int, default=1000, show_default=True, help="Adam steps per run.")
@click.option("--lr", type=float, default=1e-2, show_default=True, help="Learning rate in the subspace.")
@click.option("--baseline-lr", type=float, help="Learning rate of direct training. [default: --lr]")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Full batch if >= the train set.")
@click.option("--baseline", default="direct", show_default=True,
              help="'direct' (direct training, same budget) or a global value such as 1.0.")
@options_from(SearchConfig, start="threshold")
@click.option("--max-length", type=int, default=128, show_default=True, help="Tokens per text example.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--bf16/--no-bf16", default=True, show_default=True, help="bf16 autocast on CUDA.")
@click.option("--json", "json_path", help="Write the lowrank.intrinsic/1 JSON here ('-': stdout, nothing else).")
@click.option("--png", type=click.Path(path_type=Path), help="Write the curve as a PNG plot.")
@click.option("--html", type=click.Path(path_type=Path), help="Write an HTML report with the plot.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def intrinsic_dim(model, data, dims, steps, lr, baseline_lr, batch_size, baseline, max_length, device, bf16, json_path,
                  png, html, quiet, **options) -> None:
    """Measure the intrinsic dimension d90 of MODEL on DATA (Li et al. 2018; SAID: Aghajanyan et al. 2020)."""
    from lowrank.render import intrinsic as render

    device = devices.choose(device)
    use_bf16 = bf16 and device.startswith("cuda")
    train = RunBudget(steps=steps, lr=lr, batch_size=batch_size, device=device, autocast_bf16=use_bf16)
    baseline_train = RunBudget(steps=steps, lr=baseline_lr or lr, batch_size=batch_size, device=device,
                                 autocast_bf16=use_bf16)
    config = SearchConfig(dims=parse_dims(dims), train=train, baseline_train=baseline_train,
                          global_baseline=parse_baseline(baseline), model_name=model, data_name=data, **options)
    problem = resolve_problem(model, data, split_seed=config.seed, max_length=max_length)
    with rich_progress(enabled=not quiet) as progress:
        result = measure_intrinsic_dimension(problem.build_model, problem.task, config, progress)
    payload = json.dumps(result.to_dict(), indent=1) + "\n"
    if json_path == "-":
        click.echo(payload, nl=False)
    elif json_path:
        write_text_atomic(json_path, payload)
    if png:
        write_bytes_atomic(png, render.plot([result]))
    if html:
        write_text_atomic(html, render.html_page(result))
    render.terminal(result, Console(stderr=json_path == "-"))
