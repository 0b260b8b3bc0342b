"""The terminal report (rich): summary first, then one table per module type, then comparisons and notes.

Tables use at most about 100 columns; long module lists are grouped by type so each row is one layer.
"""

from __future__ import annotations

import json

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from lowrank.render import (amplification_text, by_type, energy_text, intruders_text,
                            layer_text, number, probe_text, rank_column, reader_notes, recommendation_config,
                            side_notes, rank_judged, source_line, trained_point_text)
from lowrank.analysis.results import AnalysisReport, ModuleAnalysis

STYLE = {"raise r": "yellow", "adequate": "green", "lower r": "cyan", "not judged": "dim"}
MAX_PATTERN_LINES = 12


def render(report: AnalysisReport, console: Console) -> None:
    """Print the whole report to ``console``."""
    console.print(_header(report))
    console.print(_summary(report))
    console.print(_type_table(report))
    for kind, rows in by_type(report.modules).items():
        console.print(_module_table(kind, rows))
    if report.comparisons:
        console.print(Text("Comparison with --against: top-k left singular subspaces (LoRA paper Eq. 4)",
                           style="bold"))
        for kind, rows in by_type(report.comparisons).items():
            console.print(_comparison_table(kind, rows))
        console.print(_against_table(report))
    for note in reader_notes(report):
        console.print(Text("Note: ", style="bold dim") + Text(note, style="dim"))
    for text, names in side_notes(report):
        console.print(Text(f"{len(names)} module(s) {text}: ", style="dim") + Text(_short_list(names), style="dim"))
    console.print(_thresholds(report))


def _header(report: AnalysisReport) -> Text:
    text = Text("lowrank analyze\n", style="bold")
    for label, path, note in source_line(report):
        text.append(f"{label:>10}: ", style="dim").append(path).append(f"  ({note})\n", style="dim")
    return text


def _summary(report: AnalysisReport) -> Panel:
    summary = report.summary
    verdicts = Text()
    for verdict, count in summary.verdicts.items():
        if count:
            verdicts.append(f"{verdict}: {count}   ", style=STYLE[verdict])
    config = recommendation_config(report)
    pattern = config.pop("rank_pattern")
    alphas = config.pop("alpha_pattern", {})
    lines = [Text(summary.headline)]
    check = trained_point_text(report)
    if check:
        lines.append(Text(check, style="dim" if rank_judged(report) else "bold red"))
    probe = probe_text(report)
    if probe:
        lines.append(Text(probe, style="dim"))
    lines += [verdicts, Text("Recommended peft LoraConfig: ", style="bold")
              + Text(", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items()))]
    if pattern:
        shown = dict(list(pattern.items())[:MAX_PATTERN_LINES])
        more = f"  (+{len(pattern) - len(shown)} more in the JSON)" if len(pattern) > len(shown) else ""
        lines.append(Text("rank_pattern = " + json.dumps(shown, indent=1) + more))
    if alphas:
        lines.append(Text(f"alpha_pattern: {len(alphas)} entries keep each module's scaling alpha/r (see JSON)",
                          style="dim"))
    return Panel(Group(*lines), title="Summary", title_align="left", width=100)


def _type_table(report: AnalysisReport) -> Table:
    table = Table(title="By module type", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("type", "modules", "median k90", "max k90", "median eff. rank", "verdicts"):
        table.add_column(column, justify="left" if column in ("type", "verdicts") else "right")
    for item in report.summary.by_type:
        verdicts = ", ".join(f"{count} {verdict}" for verdict, count in item.verdicts.items())
        table.add_row(item.type, str(item.modules), f"{item.median_k90:g}", str(item.max_k90),
                      number(item.median_effective_rank, 1), verdicts)
    return table


def _module_table(kind: str, rows: list[tuple[int | None, ModuleAnalysis]]) -> Table:
    with_base = any(m.amplification is not None for _, m in rows)
    full = rows[0][1].kind == "full"
    table = Table(title=f"{kind}  ({rows[0][1].kind}, shape {rows[0][1].shape[0]}x{rows[0][1].shape[1]})",
                  box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    columns = ["layer", "r", "k90", "k99", "eff.", "stable", "E@r" if full else "s_r/s1", "verdict", "suggest"]
    judged = any(m.sufficiency is not None for _, m in rows)
    if with_base:
        columns += ["amplif.", "intruders"]
    if judged:
        columns += ["S/N"]
    for column in columns:
        table.add_column(column, justify="left" if column == "verdict" else "right", no_wrap=True)
    for layer, m in rows:
        last = f"{100 * m.energy_at_rank:.0f}%" if full else number(m.tail_ratio)
        cells = [layer_text(layer), rank_column(m), energy_text(m, "0.9"), energy_text(m, "0.99"),
                 number(m.effective_rank, 1), number(m.stable_rank, 1), last,
                 Text(m.verdict, style=STYLE[m.verdict]), str(m.suggested_rank)]
        if with_base:
            cells += [amplification_text(m), intruders_text(m)]
        if judged:
            cells.append(number(m.sufficiency.signal_to_noise, 1) if m.sufficiency else "-")
        table.add_row(*cells)
    return table


def _comparison_table(kind: str, rows) -> Table:
    table = Table(title=kind, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for column in ("layer", "k", "phi (left)", "random", "phi (right)", "mean angle", "max angle", "Grassmann"):
        table.add_column(column, justify="right", no_wrap=True)
    for layer, c in rows:
        angles = c.principal_angles_deg
        table.add_row(layer_text(layer), str(c.k), number(c.phi, 3), number(c.phi_random, 3), number(c.phi_right, 3),
                      f"{sum(angles) / len(angles):.1f} deg", f"{max(angles):.1f} deg", number(c.grassmann_distance))
    return table


def _against_table(report: AnalysisReport) -> Table:
    table = Table(title=f"The --against update ({report.against_kind}), same modules", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False)
    for column in ("module", "r", "k90", "k99", "eff.", "E@r", "verdict", "intruders"):
        table.add_column(column, justify="left" if column in ("module", "verdict") else "right", no_wrap=True)
    for m in report.against_modules:
        table.add_row(_clip(m.name, 42), rank_column(m), energy_text(m, "0.9"), energy_text(m, "0.99"),
                      number(m.effective_rank, 1), f"{100 * m.energy_at_rank:.0f}%",
                      Text(m.verdict, style=STYLE[m.verdict]),
                      intruders_text(m))
    return table


def _thresholds(report: AnalysisReport) -> Text:
    text = Text("How verdicts are decided\n", style="bold")
    text.append("Columns: k90/k99 = energy ranks (smallest k keeping 90%/99% of ||dW||_F^2); eff. = Roy-Vetterli "
                "effective rank; stable = ||dW||_F^2/||dW||_2^2; s_r/s1 = tail ratio at the LoRA rank; E@r = energy "
                "a rank-r approximation keeps (full deltas, r in brackets); amplif. = ||dW||_F/||U^T W0 V||_F "
                "(LoRA paper Table 7); intruders = top singular vectors of W0+dW with max |cos| < epsilon against "
                "W0's (Shuttleworth et al.); S/N = the top-r gradient energy outside the adapter's reach over what "
                "sampling noise puts there (--data; about 1 for noise; evidence only, the verdict comes from the "
                "probe's held-out losses). With --fast, a full delta's k90/k99 may read "
                "lo-hi: an interval certain to hold the exact rank.\n", style="dim")
    for threshold in report.thresholds:
        text.append(f"- {threshold.name} = {threshold.value:g}: ", style="bold").append(
            f"{threshold.justification}\n", style="dim")
    return text


def _clip(name: str, width: int) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _short_list(names: tuple[str, ...], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit}, listed in the JSON)" if len(names) > limit else "")
