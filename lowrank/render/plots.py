"""Figures of an analysis report as base64 PNG (matplotlib, Agg backend), for embedding in one HTML file.

Figures: normalized spectra and cumulative energy per module type, energy rank per layer, the LoRA paper's
phi(i, j) heatmaps (Figure 3/4) with phi at k per layer against the random baseline when comparing, and with
``--data`` the probe's held-out losses at r/2, r and 2r.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from lowrank.render import by_type, layer_text, probe_arms  # noqa: E402
from lowrank.analysis.results import AnalysisReport  # noqa: E402

MAX_HEATMAPS = 6
WIDTH_IN = 11.0


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _colors(count: int):
    return plt.cm.viridis(np.linspace(0.0, 0.9, max(count, 1)))


def spectra(report: AnalysisReport) -> str:
    """Per module type: ``s_i / s_1`` (log scale) and the cumulative energy ``sum_{j<=i} s_j^2 / ||dW||_F^2``,
    one line per layer, darker = earlier layer. Returns a base64 PNG."""
    groups = by_type(report.modules)
    figure, axes = plt.subplots(len(groups), 2, figsize=(WIDTH_IN, 2.6 * len(groups)), squeeze=False)
    for row, (kind, rows) in enumerate(groups.items()):
        left, right = axes[row]
        for color, (layer, m) in zip(_colors(len(rows)), rows):
            s = np.asarray(m.singular_values, dtype=np.float64)
            if s.size == 0 or s[0] == 0:
                continue
            index = np.arange(1, s.size + 1)
            left.semilogy(index, np.maximum(s / s[0], 1e-8), color=color, lw=1.2, label=f"layer {layer_text(layer)}")
            right.plot(index, np.cumsum(s**2) / m.frobenius_norm**2, color=color, lw=1.2)
        left.set_title(f"{kind}: singular values / largest", fontsize=10)
        right.set_title(f"{kind}: cumulative energy", fontsize=10)
        right.axhline(0.9, color="grey", ls=":", lw=1)
        right.axhline(0.99, color="grey", ls="--", lw=0.8)
        right.set_ylim(0, 1.02)
        for axis in (left, right):
            axis.set_xlabel("index i")
            axis.grid(alpha=0.3)
        if len(rows) <= 12:
            left.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return _png(figure)


def rank_per_layer(report: AnalysisReport) -> str:
    """Energy rank ``k90`` (solid) and ``k99`` (dotted) per layer for each module type, with the rank judged
    (LoRA ``r`` or the reference rank) dashed in grey. Returns a base64 PNG."""
    groups = {k: [(layer, m) for layer, m in rows if layer is not None] for k, rows in by_type(report.modules).items()}
    groups = {k: rows for k, rows in groups.items() if rows}
    figure, axis = plt.subplots(figsize=(WIDTH_IN, 3.8))
    for color, (kind, rows) in zip(plt.cm.tab10(np.arange(len(groups)) % 10), groups.items()):
        layers = [layer for layer, _ in rows]
        axis.plot(layers, [m.energy_rank["0.9"] for _, m in rows], "o-", color=color, label=f"{kind} k90")
        axis.plot(layers, [m.energy_rank["0.99"] for _, m in rows], ":", color=color, lw=1)
        axis.plot(layers, [m.reference_rank for _, m in rows], "--", color="grey", lw=0.8)
    axis.set_xlabel("layer")
    axis.set_ylabel("rank")
    _rank_axis(axis)
    axis.set_title("Rank needed per layer: k90 (solid), k99 (dotted); grey dashed: the rank judged", fontsize=10)
    axis.grid(alpha=0.3)
    if groups:
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return _png(figure)


def _rank_axis(axis) -> None:
    """Linear ranks up to 128; beyond, a base-2 log axis labelled with plain integers."""
    low, high = axis.get_ylim()
    if high > 128:
        axis.set_yscale("log", base=2)
        axis.set_ylim(bottom=max(low, 0.8))
        axis.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    else:
        axis.set_ylim(bottom=0)


def _spread(rows: list, count: int) -> list:
    if len(rows) <= count:
        return rows
    picks = np.linspace(0, len(rows) - 1, count).round().astype(int)
    return [rows[i] for i in sorted(set(picks.tolist()))]


def phi_heatmaps(report: AnalysisReport) -> list[tuple[str, str]]:
    """For each module type, ``phi(i, j)`` heatmaps (rows i: CHECKPOINT, columns j: --against) for up to six
    layers spread over the depth, as in the LoRA paper's Figure 3. Returns ``(type, base64 PNG)`` pairs."""
    figures = []
    for kind, rows in by_type(report.comparisons).items():
        shown = _spread(rows, MAX_HEATMAPS)
        figure, axes = plt.subplots(1, len(shown), figsize=(min(WIDTH_IN, 2.3 * len(shown) + 1.2), 3.0),
                                    squeeze=False, layout="constrained")
        image = None
        for axis, (layer, c) in zip(axes[0], shown):
            grid = np.asarray(c.phi_grid, dtype=np.float64)
            image = axis.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", origin="upper",
                                extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5), interpolation="nearest")
            axis.set_title(f"layer {layer_text(layer)}", fontsize=9)
            axis.set_xlabel("j (--against)", fontsize=8)
            axis.tick_params(labelsize=7)
        axes[0][0].set_ylabel("i (CHECKPOINT)", fontsize=8)
        figure.suptitle(f"{kind}: phi(i, j), top-i vs top-j left singular vectors", fontsize=10)
        figure.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.01)
        figures.append((kind, _png(figure)))
    return figures


def phi_by_layer(report: AnalysisReport) -> str:
    """phi at k (solid) per layer for each module type, with the random-subspace baseline k/d (dotted)."""
    figure, axis = plt.subplots(figsize=(WIDTH_IN, 3.4))
    groups = by_type(report.comparisons)
    for color, (kind, rows) in zip(plt.cm.tab10(np.arange(len(groups)) % 10), groups.items()):
        rows = [(layer, c) for layer, c in rows if layer is not None] or [(i, c) for i, (_, c) in enumerate(rows)]
        layers = [layer for layer, _ in rows]
        axis.plot(layers, [c.phi for _, c in rows], "o-", color=color, label=f"{kind} (k={rows[0][1].k})")
        axis.plot(layers, [c.phi_random for _, c in rows], ":", color=color, lw=1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("layer")
    axis.set_ylabel("phi")
    axis.set_title("Subspace similarity phi at k per layer (dotted: random subspaces, k/d)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return _png(figure)


def probe_losses(report: AnalysisReport) -> str:
    """With ``--data``: the held-out loss of r/4 (where it ran), r/2, r and 2r after the probe's continuation
    (points, with one standard error of the paired difference from r), the trained adapter's loss (dashed), and the
    thresholds as short lines: ``L (1 - raise_above)`` over 2r (below it: raise r, if also beyond raise_se standard
    errors), ``L (1 + lower_below)`` over r/2 (below it: lower r) and ``L (1 + lower_quarter)`` over r/4 (lower r
    also needs r/4 below it). Returns a base64 PNG."""
    data = report.sufficiency
    probe = data.probe
    arms = probe_arms(probe)
    figure, axis = plt.subplots(figsize=(6.0, 3.4))
    lines = {"doubled": (probe.loss * (1 - data.raise_above), "#8a5a00",
                         f"raise r below (-{100 * data.raise_above:g}%)"),
             "halved": (probe.loss * (1 + data.lower_below), "#05606e",
                        f"lower r below (+{100 * data.lower_below:g}%)")}
    if data.lower_quarter is not None:
        lines["quartered"] = (probe.loss * (1 + data.lower_quarter), "#3f7f3f",
                              f"and r/4 below (+{100 * data.lower_quarter:g}%)")
    for x, arm in enumerate(arms):
        axis.errorbar([x], [arm.loss], yerr=None if arm.se is None else [arm.se], fmt="o", color="#1d2330", capsize=4)
        if arm.name in lines:
            level, color, label = lines[arm.name]
            axis.hlines(level, x - 0.3, x + 0.3, color=color, lw=1.5, label=label)
    axis.set_xticks(range(len(arms)), [arm.label for arm in arms])
    axis.axhline(probe.trained_loss, color="grey", ls="--", lw=1, label=f"trained adapter {probe.trained_loss:.4g}")
    axis.set_xlim(-0.6, len(arms) - 0.4)
    axis.set_ylabel("held-out loss")
    axis.set_title(f"After {probe.steps} more steps at each rank: {data.verdict}", fontsize=10)
    axis.grid(alpha=0.3, axis="y")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return _png(figure)
