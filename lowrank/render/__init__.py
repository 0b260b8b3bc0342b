"""Reports of analysis results: terminal (rich), Markdown, and self-contained HTML with plots.

Renderers read :class:`lowrank.analysis.results.AnalysisReport` records and compute nothing; the helpers here only
group and format. ``render.terminal``, ``render.markdown`` and ``render.html`` are imported on demand
(the HTML renderer pulls in matplotlib).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from lowrank.advice.sufficiency.trained_point import STILL_FALLING_DROP, STILL_FALLING_SE
from lowrank.advice.sufficiency.verdict import HORIZON_FRACTION
from lowrank.analysis.rank import module_type, share_text
from lowrank.analysis.data_records import STATES, Probe
from lowrank.analysis.results import AnalysisReport, Comparison, ModuleAnalysis

VERDICT_CLASS = {"raise r": "raise", "adequate": "adequate", "lower r": "lower", "not judged": "unjudged"}
KIND_TEXT = {"lora": "peft LoRA adapter", "full": "full fine-tune (W1 - W0)"}


Named = TypeVar("Named", ModuleAnalysis, Comparison)


def by_type(items: tuple[Named, ...]) -> dict[str, list[tuple[int | None, Named]]]:
    """Modules (or comparisons) grouped by type (``attention.self.query``...), each group as ``(layer index, item)``
    in file order."""
    groups: dict[str, list[tuple[int | None, Named]]] = {}
    for item in items:
        kind, layer = module_type(item.name)
        groups.setdefault(kind, []).append((layer, item))
    return groups


def layer_text(layer: int | None) -> str:
    """``"3"`` or ``"-"`` for a module outside the numbered layers."""
    return "-" if layer is None else str(layer)


def number(value: float | None, digits: int = 2) -> str:
    """A short fixed or scientific rendering; ``"-"`` for a missing value."""
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 10 ** (-digits)):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.1e}"
    return f"{value:.{digits}f}"


def energy_text(module: ModuleAnalysis, level: str) -> str:
    """An energy rank, ``"120"``, or its interval ``"120-180"`` when ``--fast`` could only bound it."""
    bounds = (module.energy_rank_bounds or {}).get(level)
    if bounds is not None and bounds[0] != bounds[1]:
        return f"{bounds[0]}-{bounds[1]}"
    return str(module.energy_rank[level])


def amplification_text(module: ModuleAnalysis) -> str:
    """The amplification factor ||dW||_F / ||U_r^T W0 V_r||_F (Hu et al. sec. 7), or ``"-"`` without a base."""
    return number(module.amplification.factor, 1) if module.amplification else "-"


def intruders_text(module: ModuleAnalysis) -> str:
    """``"count/k"``: intruder directions among the top k singular vectors, or ``"-"`` without a base."""
    return f"{module.intruders.count}/{module.intruders.k}" if module.intruders else "-"


def source_line(report: AnalysisReport) -> list[tuple[str, str, str]]:
    """``(label, path, what it is)`` triples naming what was analyzed."""
    what = KIND_TEXT[report.checkpoint_kind]
    if report.checkpoint_kind == "lora" and report.adapter_format:
        what = f"{report.adapter_format} LoRA adapter"
    lines = [("checkpoint", report.checkpoint, what)]
    if report.base:
        lines.append(("base", report.base, "pre-trained weights W0" + (
            ", from the adapter's base_model_name_or_path" if report.base_from == "base_model_name_or_path" else "")))
    if report.against:
        lines.append(("against", report.against, KIND_TEXT[report.against_kind]))
    return lines


def rank_column(module: ModuleAnalysis) -> str:
    """``r`` of a LoRA module (with its variant when not plain LoRA), or a full delta's reference rank in
    brackets."""
    if module.kind != "lora":
        return f"({module.reference_rank})"
    return str(module.rank) if module.variant in (None, "lora") else f"{module.rank} {module.variant}"


def side_notes(report: AnalysisReport) -> list[tuple[str, tuple[str, ...]]]:
    """Modules left out of the analysis or the comparison, with why."""
    notes = [("in CHECKPOINT but not in --against (not compared)", report.only_in_checkpoint),
             ("in --against but not in CHECKPOINT (not compared)", report.only_in_against),
             ("in the fine-tuned model but not in the base (no W0: not analyzed)", report.not_in_base),
             ("in the base but not in the fine-tuned model", report.only_in_base),
             ("identical to the base (frozen: nothing to analyze)", report.unchanged),
             ("trained in full by the adapter (modules_to_save, heads, embeddings; not low-rank, not analyzed)",
              tuple(f"{m.name} ({m.parameters:,} parameters)" for m in report.trained_in_full))]
    return [(text, names) for text, names in notes if names]


def reader_notes(report: AnalysisReport) -> list[str]:
    """What the reader resolved about the adapter file, and how DoRA's updates split (magnitude vs direction)."""
    notes = list(report.notes)
    dora = [m for m in report.modules if m.dora is not None]
    if dora:
        changes = sorted(m.dora.magnitude_change for m in dora)
        low, high = min(m.dora.factor_min for m in dora), max(m.dora.factor_max for m in dora)
        notes.append(f"DoRA: dW = diag(m/n)(W0 + sBA) - W0 is of full rank; the spectra above are of that whole "
                     f"update. The learned magnitudes moved {changes[len(changes) // 2]:.3g} (median relative change "
                     f"from W0's row norms) and rescale rows by {low:.3g} to {high:.3g}; the rank-r directional term "
                     "sBA's spectrum is in the JSON (dora.directional_singular_values)")
    return notes


def recommendation_config(report: AnalysisReport) -> dict:
    """The recommendation as the keyword arguments of peft's ``LoraConfig`` (``lora_alpha`` only when known)."""
    rec = report.summary.recommendation
    config = {"r": rec.r}
    if rec.lora_alpha is not None:
        config["lora_alpha"] = rec.lora_alpha
    config["rank_pattern"] = rec.rank_pattern
    if rec.alpha_pattern:
        config["alpha_pattern"] = rec.alpha_pattern
    return config


def rank_judged(report: AnalysisReport) -> bool:
    """Whether ``--data`` gave a rank verdict (the adapter was at a trained point)."""
    return report.sufficiency is not None and report.sufficiency.verdict not in STATES


def _held_out_text(held: dict) -> str:
    metrics = held["metrics"]
    if held["base_loss"] is not None:
        return (f"held-out loss {metrics['loss']:.3g} (perplexity {metrics['perplexity']:.3g}) on {metrics['tokens']:,}"
                f" tokens against the base model's {held['base_loss']:.3g}")
    return (f"held-out loss {metrics['loss']:.3g}, accuracy {100 * metrics['accuracy']:.1f}% on "
            f"{metrics['examples']:,} examples against {held['constant_loss']:.3g} and {100 * held['majority']:.1f}% "
            "for predicting the class frequencies")


def _trend_text(trend: dict | None) -> str:
    if trend is None:
        return "training loss trend unknown (no metrics.json with 25 or more steps in the adapter folder)"
    return (f"training loss {trend['earlier']:.3g} -> {trend['last']:.3g} over the last two fifths of the learning "
            f"rate spent: {100 * trend['drop']:.0f}% of the run's decrease, {trend['sigmas']:.1f} standard errors "
            f"(thresholds for still falling: {100 * STILL_FALLING_DROP:g}% and {STILL_FALLING_SE:g})")


def trained_point_text(report: AnalysisReport) -> str | None:
    """One sentence with the numbers of the check that comes before a rank verdict (held-out loss against its
    baseline, training-loss trend); None without ``--data``."""
    data = report.sufficiency
    if data is None or data.held_out is None:
        return None
    return f"Trained point check: {_held_out_text(data.held_out)}; {_trend_text(data.trend)}."


@dataclass(frozen=True)
class Arm:
    """One rank of the probe after its continuation: ``name`` "halved", "same" or "doubled", its ``label``
    (``"r/2 = 4"``), held-out ``loss``, the standard error ``se`` of its paired difference from r (None for r) and
    ``accuracy`` (a fraction; None for language modelling)."""

    name: str
    label: str
    loss: float
    se: float | None
    accuracy: float | None


def probe_arms(probe: Probe) -> list[Arm]:
    """The arms r/4, r/2, r, 2r that ran: ``L_r/4 = L + quartering``, ``L_r/2 = L + halving``, ``L_2r = L -
    doubling``, accuracy likewise (the differences are in points)."""
    r = probe.rank
    arms = []
    if probe.quartering is not None:
        arms.append(Arm("quartered", f"r/4 = {max(1, r // 4)}", probe.loss + probe.quartering.loss,
                        probe.quartering.loss_se, _shifted(probe.accuracy, -1, probe.quartering.accuracy)))
    if probe.halving is not None:
        arms.append(Arm("halved", f"r/2 = {max(1, r // 2)}", probe.loss + probe.halving.loss, probe.halving.loss_se,
                        _shifted(probe.accuracy, -1, probe.halving.accuracy)))
    arms.append(Arm("same", f"r = {r}", probe.loss, None, probe.accuracy))
    if probe.doubling is not None:
        arms.append(Arm("doubled", f"2r = {2 * r}", probe.loss - probe.doubling.loss, probe.doubling.loss_se,
                        _shifted(probe.accuracy, 1, probe.doubling.accuracy)))
    return arms


def _shifted(accuracy: float | None, sign: int, points: float | None) -> float | None:
    return None if accuracy is None or points is None else accuracy + sign * points / 100


def _cost_rule(raise_cost: float | None) -> str:
    return "" if raise_cost is None else f", or halving raises it by more than {100 * raise_cost:g}%"


def _first_rule(first: float | None) -> str:
    return "" if first is None else f" ({100 * first:g}% at r = 1)"


def _quarter_rule(quarter: float | None) -> str:
    return "" if quarter is None else f" and cutting to r/4 by less than {100 * quarter:g}% (r > 2)"


def probe_text(report: AnalysisReport) -> str | None:
    """One paragraph with the probe's numbers behind the data verdict; None when there is no probe."""
    data = report.sufficiency
    probe = data.probe if data is not None else None
    if probe is None:
        return None
    arms = probe_arms(probe)
    losses = ", ".join(f"{arm.loss:.4g} at {arm.label}" for arm in arms)
    accuracy = "" if probe.accuracy is None else " (accuracy " + ", ".join(
        f"{100 * arm.accuracy:.1f}%" for arm in arms) + ")"
    trained = "" if probe.trained_accuracy is None else f", accuracy {100 * probe.trained_accuracy:.1f}%"
    continued = probe.continuation
    evidence = "" if data.signal_to_noise is None else (
        f" The gradient signal-to-noise outside the adapter's reach, {data.signal_to_noise:.2f} on {data.examples} "
        "training examples, is evidence only: it follows r more than the need for rank.")
    if data.verdict == "lower r":
        evidence += (" Lower r is measured on this update cut to rank r/2 and trained on; an adapter trained from "
                     "scratch at r/2 can do worse where accuracy still rises steeply with rank.")
    return (f"Probe: from the trained adapter (held-out loss {probe.trained_loss:.4g}{trained}), each rank trained "
            f"{probe.steps} more steps of {probe.batch_size} examples at {probe.lr_scale:g}x lr {probe.lr:g} (head "
            f"{probe.head_lr:g}; fresh AdamW, warmup then linear decay to 0 at {100 * HORIZON_FRACTION:g}% of the "
            "run's steps, no dropout) on the same batches, then "
            f"scored on {probe.heldout_examples} held-out examples: loss {losses}{accuracy}; training on at r "
            f"{'lowered' if continued.loss > 0 else 'raised'} it by {share_text(continued.relative)} from "
            f"the trained adapter's. Raise r when doubling lowers the loss by more than {100 * data.raise_above:g}%"
            f"{_first_rule(data.raise_above_first)} and {data.raise_se:g} standard errors"
            f"{_cost_rule(data.raise_cost)}; lower r when halving raises it by less than "
            f"{100 * data.lower_below:g}%{_quarter_rule(data.lower_quarter)}.{evidence} {probe.seconds:.3g} s.")
