"""The terminal tables of the commands other than analyze (whose reports are terminal.py, markdown.py, html.py):
sweep's per-rank ground truth, suggest-rank's allocation, a training run's summary, extract/resize's modules.
They read results and compute nothing."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from lowrank.compress.records import CompressReport

SHOWN_MODULES = 40


def sweep_table(table: dict, title: str) -> Table:
    """The per-rank table: the learning rate kept (the best of those swept), mean +- sd over seeds, the doubling
    step's difference and whether it is beyond noise."""
    percent = table["metric"] == "accuracy"
    fmt = (lambda v: f"{100 * v:.2f}") if percent else (lambda v: f"{v:.4f}")
    steps = {s["rank"]: s for s in table.get("doubling", [])}
    grid = Table(title=title, caption=f"r* = {table.get('sufficient_rank')} (smallest rank within noise of the best)")
    for column in ("rank", "lr", f"held-out {table['metric']}{' %' if percent else ''}", "seeds",
                   "doubling r: change"):
        grid.add_column(column, justify="right")
    for row in table["ranks"]:
        step = steps.get(row["rank"])
        noise = "(beyond 2 SE)" if step and step["beyond_noise"] else "(noise)"
        change = f"{fmt(step['difference'])} {noise}" if step else ""
        grid.add_row(str(row["rank"]), f"{row['lr']:g}", f"{fmt(row['mean'])} ± {fmt(row['sd'])}", str(row["n"]),
                     change)
    if table.get("full"):
        full = table["full"]
        grid.add_row("full", f"{full['lr']:g}", f"{fmt(full['mean'])} ± {fmt(full['sd'])}", str(full["n"]), "")
    return grid


def suggest_table(result, title: str) -> Table:
    """Per module: the rank chosen and the share of its signal energy that rank keeps."""
    table = Table(title=title, caption=(
        f"signal: {result.signal} ({result.seconds:.1f} s); {result.parameters:,} of {result.budget:,} parameters "
        f"(uniform rank {result.uniform_rank:.2f} at the same cost); decided by: largest signal energy per "
        f"parameter, one direction at a time. The signal alone suggests a uniform r = {result.global_rank}."))
    for column in ("module", "shape", "rank", "signal energy kept"):
        table.add_column(column, justify="left" if column == "module" else "right")
    for m in result.modules:
        table.add_row(m.name, f"{m.shape[0]}x{m.shape[1]}", str(m.rank), f"{100 * m.kept:.1f}%")
    return table


def train_table(metrics: dict, out: Path) -> Table:
    """A finished run in brief: model, trainable parameters, steps and speed, held-out metrics, where it went."""
    table = Table(title=f"lowrank train: {metrics['method']} on {metrics['data']}", show_header=False)
    table.add_row("model", metrics["model"])
    table.add_row("trainable parameters", f"{metrics['trainable_parameters']:,} of {metrics['total_parameters']:,}")
    unit = "tokens" if "tokens_per_second" in metrics else "examples"
    table.add_row("steps", f"{metrics['steps']} ({metrics['train_seconds']:.1f} s, "
                           f"{metrics[f'{unit}_per_second']:,.0f} {unit}/s on {metrics['device']})")
    for key, value in metrics["final"].items():
        table.add_row(f"held-out {key}", f"{value:.4f}" if isinstance(value, float) else str(value))
    table.add_row("written to", str(out))
    return table


def compress_table(report: CompressReport) -> Table:
    """Per module (the first :data:`SHOWN_MODULES`): shape, rank, kept energy, relative error, parameters."""
    table = Table(title=f"lowrank {report.command}: {report.source} -> {report.out} ({report.target})")
    for column in ("module", "shape", "rank", "kept energy", "rel. error", "parameters", "note"):
        table.add_column(column, justify="left" if column in ("module", "note") else "right")
    for m in report.modules[:SHOWN_MODULES]:
        note = "dense delta is smaller" if not m.worth_it else ""
        rank = f"{m.rank} of {m.rank_available}" if m.original_rank is None else f"{m.original_rank} -> {m.rank}"
        table.add_row(m.name, f"{m.shape[0]}x{m.shape[1]}", rank, f"{m.kept_energy:.4f}",
                      f"{m.relative_error:.4f}", f"{m.parameters:,}", note)
    return table


def compress_summary(report: CompressReport) -> list[str]:
    """The lines under the table: modules not shown, totals, modules not worth it, unchanged modules, tensors not
    carried, the held-out evaluation."""
    lines = []
    if len(report.modules) > SHOWN_MODULES:
        lines.append(f"... {len(report.modules) - SHOWN_MODULES} more modules in OUT/compress_report.json")
    lines.append(f"LoRA parameters: {report.lora_parameters:,} in {len(report.modules)} modules; energy kept "
                 f"overall {report.total_energy_kept:.4f}; carried in full: {report.carried_parameters:,} "
                 f"parameters ({len(report.carried)} tensors)")
    worse = report.not_worth_it()
    if worse:
        lines.append(f"{len(worse)} modules are not low-rank enough to be worth it (factors >= dense delta): "
                     + ", ".join(m.name for m in worse[:5]) + (" ..." if len(worse) > 5 else ""))
    if report.unchanged:
        lines.append(f"{len(report.unchanged)} modules are unchanged and not adapted")
    if report.not_carried:
        top = sorted(report.not_carried.items(), key=lambda kv: -kv[1])[:3]
        lines.append(f"{len(report.not_carried)} changed tensors are not in the adapter (largest relative change: "
                     + ", ".join(f"{k} {v:.2e}" for k, v in top) + "); see --save-modules, --bias, --embeddings")
    if report.evaluation is not None:
        e = report.evaluation
        lines.append(f"held-out {e.metric} on {e.data}: original {e.original[e.metric]:.4f}, "
                     f"new adapter {e.compressed[e.metric]:.4f}")
    return lines
