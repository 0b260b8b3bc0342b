"""``lowrank analyze``: spectra, rank verdicts and subspace comparisons of LoRA and full fine-tuning updates."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lowrank import devices
from lowrank.analysis.config import AnalyzeConfig
from lowrank.errors import LowrankError
from lowrank_cli.config_options import options_from
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
@options_from(AnalyzeConfig, stop="dtype")
@click.option("--json", "json_path", metavar="FILE", help="Write the lowrank.analysis/1 JSON ('-': stdout, only it).")
@click.option("--markdown", "markdown_path", metavar="FILE", help="Write the report as Markdown.")
@click.option("--html", "html_path", metavar="FILE", help="Write one self-contained HTML report with plots.")
@click.option("--print-report", is_flag=True, help="Print the terminal report too when writing files (it is "
              "printed by default only when no file is written).")
@options_from(AnalyzeConfig, start="dtype")
@click.option("--device", help="Where the SVDs (and, with --data, the probe and the gradients) run: cpu or cuda "
              "[default: cuda when a GPU is present, else cpu]. On several processes cuda is each one's own GPU.")
@nproc_option
def analyze(json_path, markdown_path, html_path, print_report, device, nproc, **options) -> None:
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
    config = AnalyzeConfig(device=devices.choose(device), **options)
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
