"""``lowrank analyze``: spectra, rank verdicts and subspace comparisons of LoRA and full fine-tuning updates."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lowrank import devices
from lowrank.errors import LowrankError
from lowrank_cli.data_options import DATA_FILES, loss_on_option
from lowrank_cli.launching import nproc_option, relaunched
from lowrank_cli.progress import rich_progress

REPORT_WIDTH = 100
PROGRESS_AFTER_S = 1.0


def _check_output(path: str | None, option: str, allow_stdout: bool) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path is None or (allow_stdout and path == "-"):
        return
    target = Path(path)
    if target.is_dir():
        raise LowrankError(f"{option} {path} is a folder, expected a file path")
    if not target.parent.is_dir():
        raise LowrankError(f"{option} {path}: folder {target.parent} does not exist")


@click.command("analyze")
@click.argument("checkpoint", metavar="CHECKPOINT")
@click.option("--base", metavar="MODEL", help="Pre-trained model (folder, safetensors file or registry key) giving "
              "W0. Needed for a full CHECKPOINT; for an adapter it adds amplification and intruder dimensions "
              "[default for an adapter: its base_model_name_or_path when that is a local folder].")
@click.option("--against", metavar="CHECKPOINT2", help="A second update (adapter, or full model against --base) to "
              "compare module by module: phi(i, j), principal angles, random baselines.")
@click.option("--json", "json_path", metavar="FILE", help="Write the lowrank.analysis/1 JSON ('-': stdout, only it).")
@click.option("--markdown", "markdown_path", metavar="FILE", help="Write the report as Markdown.")
@click.option("--html", "html_path", metavar="FILE", help="Write one self-contained HTML report with plots.")
@click.option("--print-report", is_flag=True, help="Print the terminal report too when writing files (it is "
              "printed by default only when no file is written).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
              help="float32: full-delta spectra from float64 Gram eigenvalues (within 1e-7 of s_1), base vectors "
                   "from float64 Gram eigenvectors; float64: dense float64 SVDs throughout (slow reference). "
                   "LoRA: always float64.")
@click.option("--k", "k", type=click.IntRange(min=1), help="Subspace dimension for phi and angles "
              "[default: the smaller LoRA rank of the two updates, else --reference-rank].")
@click.option("--reference-rank", type=click.IntRange(min=1), default=16, show_default=True,
              help="Rank a full delta is judged at when no LoRA partner gives one.")
@click.option("--grid-max", type=click.IntRange(min=1), default=64, show_default=True,
              help="Largest i, j of the phi(i, j) grid.")
@click.option("--no-base-metrics", is_flag=True, help="Skip amplification and intruder dimensions (dense SVDs of "
              "W0 and W1 per module, the slow part with a large base).")
@click.option("--intruder-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="Top singular vectors of W1 checked for intruder dimensions.")
@click.option("--intruder-epsilon", type=float, default=0.5, show_default=True,
              help="Cosine below which a singular vector is an intruder.")
@click.option("--modules", metavar="REGEX", help="Analyze only modules whose name matches this regular expression.")
@click.option("--allow-pickle", is_flag=True, help="Read .bin/.pt checkpoints with torch.load(weights_only=True). "
              "Pickle files can run code; they are refused without this flag.")
@click.option("--data", metavar="DATA", help=f"The data the adapter was trained on (registry key, or {DATA_FILES}, "
              "as it is on disk; .json: an array of rows): "
              "judge whether r was enough, one verdict for the model. First the adapter must be at a trained point "
              "(not collapsed on held-out data, training loss no longer falling per metrics.json); then the probe "
              "continues it at r, 2r and r/2 for a share of its run's steps at a fraction of its learning rates "
              "(run settings from metrics.json), scores each on held-out examples and compares the losses: raise r, "
              "adequate or lower r (the values are in the report's 'How verdicts are decided'). Each module's "
              "gradient signal-to-noise is shown as evidence. Loads the base model (needs --base) and trains: "
              "minutes on a CPU. Without --data LoRA ranks are not judged.")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True,
              help="Tokens per example with --data (LM of plain text: per block), as in training.")
@loss_on_option(None)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random baselines and the sample.")
@click.option("--fast", is_flag=True, help="Sketch full deltas (randomized range finding, seeded by --seed) instead "
              "of decomposing them exactly: k90/k99 become intervals certain to hold the exact ranks (shown lo-hi), "
              "singular values the sketch's top l (lower bounds); W0's top values sketched for amplification; "
              "intruders not computed. LoRA updates stay exact. Exact is the default.")
@click.option("--cache", metavar="DIR", help="Keep W0's decompositions (intruders' left bases) in DIR by content, "
              "and read them from there: a second analysis against the same base skips W0's eigendecompositions. "
              "About 8 p^2 bytes a module (p = min(out, in)).")
@click.option("--device", help="Where the SVDs (and, with --data, the probe and the gradients) run: cpu or cuda "
              "[default: cuda when a GPU is present, else cpu]. On several processes cuda is each one's own GPU.")
@nproc_option
def analyze(checkpoint, base, against, json_path, markdown_path, html_path, print_report, dtype, k, reference_rank,
            grid_max, no_base_metrics, intruder_k, intruder_epsilon, modules, allow_pickle, data, max_length, loss_on,
            seed,
            fast, cache, device, nproc) -> None:
    """Spectra, rank verdicts and subspace overlap of a LoRA adapter or a full fine-tune.

    CHECKPOINT is a peft adapter folder (LoRA, DoRA, AdaLoRA, PiSSA/OLoRA; DoRA and unconverted PiSSA/OLoRA
    need --base), a kohya or diffusers LoRA .safetensors file, or a full model folder / safetensors file (then
    --base gives W0). Without output options the terminal report is printed.

    On several processes (--nproc N, or torchrun --nproc-per-node N -m lowrank_cli analyze ...) the modules are
    shared out: each process decomposes its own (on its own GPU with cuda), process 0 gathers them and writes the
    same report one process would (to the last bit when the processes have as many CPU threads as one); only it
    prints or writes. --data's probe and gradients run once, on process 0.
    """
    from lowrank import api, distributed
    from lowrank.analysis.sharding import rank_device

    for path, option, stdout_ok in ((json_path, "--json", True), (markdown_path, "--markdown", False),
                                    (html_path, "--html", False)):
        _check_output(path, option, stdout_ok)
    if print_report and json_path == "-":
        raise click.UsageError("--print-report with --json - would mix the terminal report into the JSON on stdout")
    config = api.AnalyzeConfig(checkpoint=checkpoint, base=base, against=against, dtype=dtype, k=k,
                           reference_rank=reference_rank, grid_max=grid_max, base_metrics=not no_base_metrics,
                           intruder_k=intruder_k, intruder_epsilon=intruder_epsilon, allow_pickle=allow_pickle,
                           modules=modules, seed=seed, device=devices.choose(device), data=data,
                           max_length=max_length, loss_on=loss_on, fast=fast, cache=cache)
    if relaunched(nproc):
        return
    world = distributed.from_environment()
    with rich_progress(sys.stderr.isatty() and world.is_main, after=PROGRESS_AFTER_S) as progress:
        with distributed.joined(world, rank_device(config.device, world)):
            report = api.run_analysis(config, progress, world)
    if report is not None:  # rank 0 (or the one process) reports; the others' measures are in it
        _write_outputs(report, json_path, markdown_path, html_path, print_report)


def _write_outputs(report, json_path: str | None, markdown_path: str | None, html_path: str | None,
                   print_report: bool) -> None:
    from lowrank.outputs import write_text_atomic

    texts = {}
    if json_path is not None:
        texts[json_path] = report.to_json()
    if markdown_path is not None:
        texts[markdown_path] = report.to_markdown()
    if html_path is not None:
        texts[html_path] = report.to_html()
    for path, text in texts.items():
        if path == "-":
            click.echo(text, nl=False)
        else:
            write_text_atomic(path, text)
            click.echo(f"wrote {path}", err=True)
    if print_report or not texts:
        from rich.console import Console

        from lowrank.render.terminal import render as to_terminal

        console = Console(width=min(Console().width, REPORT_WIDTH) if sys.stdout.isatty() else REPORT_WIDTH)
        to_terminal(report.analysis, console)
