"""The analysis report as Markdown: summary, recommendation, one table per module type, comparisons, notes."""

from __future__ import annotations

import json

from lowrank.render import (amplification_text, by_type, energy_text, intruders_text,
                            layer_text, number, probe_text, rank_column, recommendation_config, reader_notes,
                            side_notes, source_line, trained_point_text)
from lowrank.analysis.results import AnalysisReport, ModuleAnalysis


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def render(report: AnalysisReport) -> str:
    """The whole report as one Markdown document."""
    lines = ["# lowrank analyze", ""]
    lines += [f"- **{label}**: `{path}` ({note})" for label, path, note in source_line(report)] + [""]
    lines += _summary(report)
    lines += ["## Modules by type", ""]
    for kind, rows in by_type(report.modules).items():
        lines += [f"### {kind}", ""] + _modules(rows)
    if report.comparisons:
        lines += _comparisons(report)
    if reader_notes(report):
        lines += ["## Notes", ""] + [f"- {note}" for note in reader_notes(report)] + [""]
    notes = side_notes(report)
    if notes:
        lines += ["## Modules left out", ""]
        lines += [f"- {len(names)} {text}: " + ", ".join(f"`{n}`" for n in names) for text, names in notes] + [""]
    lines += ["## How verdicts are decided", ""]
    lines += [f"- **{t.name} = {t.value:g}**: {t.justification}" for t in report.thresholds] + [""]
    return "\n".join(lines)


def _summary(report: AnalysisReport) -> list[str]:
    summary = report.summary
    lines = ["## Summary", "", summary.headline, ""]
    for text in (trained_point_text(report), probe_text(report)):
        if text:
            lines += [text, ""]
    lines += _table(["type", "modules", "median k90", "max k90", "median eff. rank", "verdicts"],
                    [[f"`{t.type}`", str(t.modules), f"{t.median_k90:g}", str(t.max_k90),
                      number(t.median_effective_rank, 1),
                      ", ".join(f"{n} {v}" for v, n in t.verdicts.items())] for t in summary.by_type])
    rec = summary.recommendation
    lines += ["Recommended peft `LoraConfig` fields (ranks per module; `alpha_pattern` keeps each module's scaling):",
              "", "```json", json.dumps(recommendation_config(report), indent=1), "```", "",
              f"Trainable LoRA parameters: {rec.parameters_now:,} now, {rec.parameters_suggested:,} suggested.", ""]
    return lines


def _modules(rows: list[tuple[int | None, ModuleAnalysis]]) -> list[str]:
    full = rows[0][1].kind == "full"
    header = ["layer", "shape", "r", "k50", "k90", "k99", "eff. rank", "stable rank",
              "energy at r" if full else "s_r/s_1", "verdict", "suggested", "evidence"]
    with_base = any(m.amplification is not None for _, m in rows)
    if with_base:
        header[-1:-1] = ["amplification", "intruders"]
    judged = any(m.sufficiency is not None for _, m in rows)
    if judged:
        header[-1:-1] = ["signal/noise (evidence)", "doubling gain"]
    body = []
    for layer, m in rows:
        row = [layer_text(layer), f"{m.shape[0]}x{m.shape[1]}", rank_column(m), energy_text(m, "0.5"),
               energy_text(m, "0.9"), energy_text(m, "0.99"), number(m.effective_rank, 1),
               number(m.stable_rank, 1), f"{100 * m.energy_at_rank:.1f}%" if full else number(m.tail_ratio),
               m.verdict, str(m.suggested_rank)]
        if with_base:
            row += [amplification_text(m), intruders_text(m)]
        if judged:
            row += ([number(m.sufficiency.signal_to_noise, 1), number(m.sufficiency.doubling_gain, 4)]
                    if m.sufficiency else ["-", "-"])
        body.append(row + [m.evidence])
    return _table(header, body)


def _comparisons(report: AnalysisReport) -> list[str]:
    lines = ["## Comparison with the --against update", "",
             "phi = ||U1[:, :k]^T U2[:, :k]||_F^2 / k over the top-k left singular vectors (LoRA paper Eq. 4): 1 = "
             "same subspace, about k/d for random subspaces (`random`). `phi (right)` uses the right singular "
             "vectors (input side).", ""]
    for kind, rows in by_type(report.comparisons).items():
        lines += [f"### {kind}", ""]
        lines += _table(["layer", "k", "phi", "random", "phi (right)", "mean angle (deg)", "Grassmann distance"],
                        [[layer_text(layer), str(c.k), number(c.phi, 3), number(c.phi_random, 3),
                          number(c.phi_right, 3),
                          f"{sum(c.principal_angles_deg) / len(c.principal_angles_deg):.1f}",
                          number(c.grassmann_distance)] for layer, c in rows])
    lines += ["### The --against update on the same modules", ""]
    lines += _table(["module", "r", "k90", "k99", "eff. rank", "energy at r", "verdict", "intruders"],
                    [[f"`{m.name}`", rank_column(m), energy_text(m, "0.9"), energy_text(m, "0.99"),
                      number(m.effective_rank, 1), f"{100 * m.energy_at_rank:.1f}%", m.verdict,
                      intruders_text(m)] for m in report.against_modules])
    return lines
