"""One self-contained HTML report: inline CSS, plots embedded as base64 PNG, no external resources."""

from __future__ import annotations

import json
from html import escape

from lowrank.render import (VERDICT_CLASS, amplification_text, by_type, energy_text,
                            intruders_text, layer_text, number, probe_text, rank_column, rank_judged,
                            recommendation_config, reader_notes, side_notes, source_line, trained_point_text)
from lowrank.render import plots
from lowrank.analysis.results import AnalysisReport, ModuleAnalysis

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1150px;padding:16px 24px;
color:#1d2330;line-height:1.4}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #dde;padding-bottom:4px}
h3{font-size:1.02em;margin:1.1em 0 .3em;font-family:ui-monospace,Menlo,monospace}
.src{color:#555;font-size:.92em}.src code{background:#f3f4f8;padding:1px 4px;border-radius:3px}
.summary{background:#f6f8fc;border:1px solid #d8deea;border-radius:8px;padding:10px 16px}
.headline{font-size:1.05em;margin:.3em 0 .6em}
.pill{display:inline-block;border-radius:12px;padding:2px 10px;margin-right:6px;font-size:.9em}
.lower{background:#dff3f7;color:#05606e}.adequate{background:#e1f4e1;color:#1d6b1d}
.raise{background:#fdf0d3;color:#8a5a00}.unjudged{background:#eceef2;color:#555}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.86em}
th,td{border-bottom:1px solid #e3e6ee;padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#f3f4f8;position:sticky;top:0}td.l,th.l{text-align:left}td.ev{text-align:left;white-space:normal;
color:#555;min-width:180px;font-size:.95em}
pre{background:#f3f4f8;padding:8px 12px;border-radius:6px;overflow-x:auto;font-size:.85em;max-height:22em}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
details{margin:.3em 0}summary{cursor:pointer;color:#334;font-weight:600}
.note{color:#555;font-size:.9em}.state{color:#8a1f1f;font-weight:600}.scroll{overflow-x:auto;max-width:100%}
"""


def _table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    head = "".join(f'<th class="l">{escape(h)}</th>' if i in left else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell if cell.startswith("<td") else
                                   (f'<td class="l">{cell}</td>' if i in left else f"<td>{cell}</td>")
                                   for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _verdict(verdict: str) -> str:
    return f'<td class="l"><span class="pill {VERDICT_CLASS[verdict]}">{escape(verdict)}</span></td>'


def _img(data: str, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def render(report: AnalysisReport) -> str:
    """The whole report as one HTML document (plots included as data URIs)."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>lowrank analyze: "
             f"{escape(report.checkpoint)}</title><style>{CSS}</style></head><body>", "<h1>lowrank analyze</h1>"]
    parts.append('<div class="src">' + "<br>".join(f"<b>{escape(label)}</b>: <code>{escape(path)}</code> "
                                                  f"({escape(note)})" for label, path, note in source_line(report))
                 + "</div>")
    parts.append(_summary(report))
    parts.append("<h2>Spectra and cumulative energy per module type</h2>")
    parts.append('<p class="note">Singular values of each update relative to its largest (log scale), and the '
                 "fraction of ||dW||_F^2 the top-i directions hold; dotted lines at 90% and 99%. One line per layer, "
                 "dark purple (first layer) to yellow (last).</p>")
    parts.append(_img(plots.spectra(report), "spectra per module type"))
    parts.append("<h2>Rank needed per layer</h2>" + _img(plots.rank_per_layer(report), "energy rank per layer"))
    if rank_judged(report):
        parts.append("<h2>What more rank would buy (--data)</h2>")
        parts.append(f'<p class="note">{escape(probe_text(report))} The plot: each rank\'s held-out loss after the '
                     "continuation, with one standard error of its paired difference from r; dashed, the trained "
                     "adapter's loss; the short lines mark the thresholds: 2r below its line says raise r (if also "
                     "beyond the standard errors), r/2 below its line says lower r. Each module's gradient "
                     "signal-to-noise (in the tables) is evidence only.</p>")
        parts.append(_img(plots.probe_losses(report), "held-out loss at r/2, r and 2r after the probe"))
    if report.comparisons:
        parts.append(_comparisons(report))
    parts.append("<h2>Modules by type</h2>")
    for kind, rows in by_type(report.modules).items():
        first = rows[0][1]
        parts.append(f"<h3>{escape(kind)} <small>({escape(first.kind)}, {first.shape[0]} x {first.shape[1]})"
                     f"</small></h3>" + _modules(rows))
    if reader_notes(report):
        parts.append("<h2>Notes</h2><ul>" + "".join(
            f"<li>{escape(note)}</li>" for note in reader_notes(report)) + "</ul>")
    notes = side_notes(report)
    if notes:
        parts.append("<h2>Modules left out</h2><ul>" + "".join(
            f"<li>{len(names)} {escape(text)}<details><summary>show</summary><pre>{escape(chr(10).join(names))}"
            "</pre></details></li>" for text, names in notes) + "</ul>")
    parts.append("<h2>How verdicts are decided</h2><ul>" + "".join(
        f"<li><b>{escape(t.name)} = {t.value:g}</b>: {escape(t.justification)}</li>" for t in report.thresholds)
        + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _summary(report: AnalysisReport) -> str:
    summary = report.summary
    pills = "".join(f'<span class="pill {VERDICT_CLASS[v]}">{escape(v)}: {n}</span>'
                    for v, n in summary.verdicts.items() if n)
    types = _table(["type", "modules", "median k90", "max k90", "median eff. rank", "verdicts"],
                   [[escape(t.type), str(t.modules), f"{t.median_k90:g}", str(t.max_k90),
                     number(t.median_effective_rank, 1),
                     escape(", ".join(f"{n} {v}" for v, n in t.verdicts.items()))] for t in summary.by_type],
                   left=(0, 5))
    rec = summary.recommendation
    config = escape(json.dumps(recommendation_config(report), indent=1))
    check = trained_point_text(report)
    state = "" if check is None else f'<p class="{"state" if not rank_judged(report) else "note"}">{escape(check)}</p>'
    return (f'<h2>Summary</h2><div class="summary"><p class="headline">{escape(summary.headline)}</p>{state}{pills}'
            f"{types}<p><b>Recommended peft LoraConfig fields</b> (trainable parameters {rec.parameters_now:,} now, "
            f"{rec.parameters_suggested:,} suggested; <code>alpha_pattern</code> keeps each module's scaling):</p>"
            f"<pre>{config}</pre></div>")


def _modules(rows: list[tuple[int | None, ModuleAnalysis]]) -> str:
    full = rows[0][1].kind == "full"
    with_base = any(m.amplification is not None for _, m in rows)
    header = ["layer", "r", "k50", "k90", "k99", "eff. rank", "stable rank",
              "energy at r" if full else "s_r/s_1", "verdict", "suggested"]
    judged = any(m.sufficiency is not None for _, m in rows)
    if with_base:
        header += ["amplif.", "intruders"]
    if judged:
        header += ["signal/noise (evidence)", "doubling gain"]
    header.append("evidence")
    body = []
    for layer, m in rows:
        row = [layer_text(layer), rank_column(m), energy_text(m, "0.5"),
               energy_text(m, "0.9"), energy_text(m, "0.99"), number(m.effective_rank, 1),
               number(m.stable_rank, 1), f"{100 * m.energy_at_rank:.1f}%" if full else number(m.tail_ratio),
               _verdict(m.verdict), str(m.suggested_rank)]
        if with_base:
            row += [amplification_text(m), intruders_text(m)]
        if judged:
            row += ([number(m.sufficiency.signal_to_noise, 1), number(m.sufficiency.doubling_gain, 4)]
                    if m.sufficiency else ["-", "-"])
        body.append(row + [f'<td class="ev">{escape(m.evidence)}</td>'])
    return _table(header, body, left=(0, header.index("verdict"), len(header) - 1))


def _comparisons(report: AnalysisReport) -> str:
    parts = ["<h2>Comparison with the --against update</h2>",
             '<p class="note">phi(i, j) = ||U1[:, :i]<sup>T</sup> U2[:, :j]||<sub>F</sub><sup>2</sup> / min(i, j) '
             "over the left singular vectors of the two updates (LoRA paper Eq. 4): 1 means one subspace contains "
             "the other, random subspaces give about max(i, j)/d. Rows: CHECKPOINT, columns: --against.</p>",
             _img(plots.phi_by_layer(report), "phi per layer")]
    for kind, data in plots.phi_heatmaps(report):
        parts.append(_img(data, f"phi heatmaps {kind}"))
    for kind, rows in by_type(report.comparisons).items():
        parts.append(f"<h3>{escape(kind)}</h3>")
        parts.append(_table(["layer", "k", "phi", "random k/d", "phi (right)", "mean angle", "max angle",
                             "Grassmann distance"],
                            [[layer_text(layer), str(c.k), number(c.phi, 3), number(c.phi_random, 3),
                              number(c.phi_right, 3),
                              f"{sum(c.principal_angles_deg) / len(c.principal_angles_deg):.1f}&deg;",
                              f"{max(c.principal_angles_deg):.1f}&deg;", number(c.grassmann_distance)]
                             for layer, c in rows]))
    parts.append("<h3>The --against update on the same modules</h3>")
    parts.append(_table(["module", "r", "k90", "k99", "eff. rank", "energy at r", "verdict", "intruders"],
                        [[escape(m.name), rank_column(m), energy_text(m, "0.9"), energy_text(m, "0.99"),
                          number(m.effective_rank, 1), f"{100 * m.energy_at_rank:.1f}%", _verdict(m.verdict),
                          intruders_text(m)]
                         for m in report.against_modules], left=(0, 6)))
    return "\n".join(parts)
