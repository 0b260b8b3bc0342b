"""Reports of :class:`lowrank.intrinsic.results.IntrinsicResult`: rich terminal, PNG/SVG plot, HTML.

Reads results only and computes nothing beyond formatting. matplotlib is imported on demand (Agg backend).
"""

from __future__ import annotations

import html
import io

from rich.console import Console
from rich.table import Table

from lowrank.intrinsic.results import IntrinsicResult

BAR_WIDTH = 30


def summary_lines(result: IntrinsicResult) -> list[str]:
    """The headline facts, one per line (shared by the terminal and HTML reports)."""
    budget = result.budget
    kind = "direct training, same budget" if result.baseline_kind == "direct" else "global value"
    if result.d90 is None:
        d90 = f"not reached up to d = {result.curve[-1].d}"
    else:
        high = "beyond the grid" if result.d90_high is None else str(result.d90_high)
        d90 = f"{result.d90}  (bootstrap 95%: {result.d90_low} .. {high}"
        d90 += f"; log-interpolated {result.d90_interpolated:.0f})"
    direct = ", ".join(result.direct_patterns) or "none"
    trained = sum(p.d in result.grid for p in result.curve)
    search = (f"adaptive search: {trained} of {len(result.grid)} grid points trained (the others decided), "
              f"{len(result.curve) - trained} bisections" if result.search == "adaptive" else
              f"full grid: {trained} points, {len(result.curve) - trained} bisections" if result.grid else "full grid")
    return [
        f"model {result.model}  data {result.data}  D = {result.D:,} parameters in {result.projected_tensors} tensors",
        f"projection {result.projection} ({result.layout})  {'SAID' if result.said else 'DID'}  "
        f"trained directly: {direct} ({result.direct_parameters:,} parameters)",
        f"baseline {result.metric} {result.baseline:.4f} ({kind});  line {result.threshold:.0%} = {result.target:.4f}",
        f"budget: {budget.steps} Adam steps, lr {budget.lr:g} (direct {budget.baseline_lr:g}), batch "
        f"{budget.batch_size}, {budget.seeds} seeds from {budget.seed}; {result.elapsed_s:.0f} s",
        search,
        f"d{round(result.threshold * 100)} = {d90}",
    ]


def terminal(result: IntrinsicResult, console: Console) -> None:
    """Print the summary and the curve as a table with a bar per ``d`` (the marker ``|`` is the line)."""
    for line in summary_lines(result):
        console.print(line, highlight=False)
    table = Table(title="mean test accuracy against subspace dimension d")
    for name in ("d", "mean", "per seed", "relative to baseline", ""):
        table.add_column(name, justify="right" if name in ("d", "mean") else "left")
    mark = round(result.threshold * BAR_WIDTH)
    for point in result.curve:
        filled = max(0, min(BAR_WIDTH, round(point.mean / result.baseline * BAR_WIDTH)))
        bar = "".join("|" if i == mark else ("#" if i < filled else " ") for i in range(BAR_WIDTH + 1))
        reached = "[green]reached[/]" if point.mean >= result.target else ""
        scores = " ".join(f"{s:.3f}" for s in point.scores)
        table.add_row(str(point.d), f"{point.mean:.4f}", scores, bar, reached)
    console.print(table)


def _figure(results: list[IntrinsicResult], labels: list[str]):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    for index, (result, label) in enumerate(zip(results, labels)):
        color = f"C{index}"
        dims = [p.d for p in result.curve]
        for point in result.curve:
            axes.scatter([point.d] * len(point.scores), point.scores, color=color, alpha=0.35, s=12)
        axes.plot(dims, [p.mean for p in result.curve], "o-", color=color, label=label)
        axes.axhline(result.target, color=color, linestyle="--", linewidth=1)
        if result.d90 is not None:
            axes.axvline(result.d90, color=color, linestyle=":", linewidth=1)
    axes.set_xscale("log")
    ticks = sorted({p.d for result in results for p in result.curve})
    axes.set_xticks(ticks, [str(d) for d in ticks])
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xlabel("subspace dimension d")
    axes.set_ylabel(f"test {results[0].metric}")
    axes.set_title("intrinsic dimension: dashed = 90% line, dotted = d90")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure, plt


def default_label(result: IntrinsicResult) -> str:
    said = "SAID" if result.said else "DID"
    return f"{result.model} D={result.D:,} {result.projection} {said}: d90={result.d90}"


def plot(results: list[IntrinsicResult], fmt: str = "png", labels: list[str] | None = None) -> bytes:
    """The curves of ``results`` on one log-d axis, as PNG or SVG bytes."""
    figure, plt = _figure(results, labels or [default_label(r) for r in results])
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=120)
    plt.close(figure)
    return buffer.getvalue()


def html_fragment(result: IntrinsicResult) -> str:
    """A ``<section>`` with the summary, the curve table and an inline SVG plot."""
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(result))
    rows = "".join(
        f"<tr><td>{p.d}</td><td>{p.mean:.4f}</td><td>{' '.join(f'{s:.3f}' for s in p.scores)}</td>"
        f"<td>{'reached' if p.mean >= result.target else ''}</td></tr>"
        for p in result.curve
    )
    svg = plot([result], "svg").decode("utf-8")
    svg = svg[svg.index("<svg"):]
    return (f"<section class='intrinsic'><h2>Intrinsic dimension: {html.escape(result.model)} on "
            f"{html.escape(result.data)}</h2><ul>{lines}</ul>{svg}<table><thead><tr><th>d</th><th>mean</th>"
            f"<th>per seed</th><th></th></tr></thead><tbody>{rows}</tbody></table></section>")


def html_page(result: IntrinsicResult) -> str:
    """A self-contained HTML page around :func:`html_fragment`."""
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>lowrank intrinsic-dim</title>"
            f"<style>{style}</style></head><body>{html_fragment(result)}</body></html>\n")
