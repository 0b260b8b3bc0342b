"""Rank verdicts: was ``r`` enough for each module, and what rank to use next time.

**LoRA updates need data.** A trained LoRA update's spectrum describes its shape, but training at rank ``r``
always produces a spectrum that decays within ``r``, so the spectrum cannot say whether more rank would have
helped (checked by retraining: on 20 Newsgroups the r=4 adapter's spectrum looked adequate while r=8 and r=16
scored higher). Without ``--data`` a LoRA module is **not judged** and keeps its rank; the shape is reported.
With ``--data`` the verdict comes from the probe (:mod:`lowrank.advice.sufficiency.probe`,
:mod:`lowrank.advice.sufficiency.verdict`), which measures what retraining measures: the trained adapter continued at
``r``, ``2r`` and ``r/2`` for a short run, scored on held-out data. With ``L`` the held-out loss at ``r`` after the
continuation, **raise r** (suggest ``2r``) when doubling lowers it by more than :data:`RAISE_GAIN` ``L``
(:data:`FIRST_GAIN` at r = 1) and :data:`RAISE_SE` standard errors, or halving raises it by more than
:data:`RAISE_COST` ``L`` (the adapter uses all its rank), **lower r** (suggest ``r/2``) when halving raises it by
less than :data:`LOWER_COST` ``L`` and cutting to ``r/4`` by less than :data:`LOWER_QUARTER` ``L``, else
**adequate**. The thresholds are calibrated by retraining rank grids x 3 seeds
(reports/rank_advice.md) at the model level, so every module carries the model's verdict. Each module's gradient
evidence (:mod:`lowrank.advice.sufficiency.gradient_evidence`: the gradient energy outside its reach over the sampling
noise) is shown beside it; it does not decide (that statistic turned out to follow ``r`` more than the need for
rank). Per-module ranks before training are ``lowrank suggest-rank``'s job.

**Full fine-tuning deltas** ``W1 - W0`` are judged against a reference rank ``r`` (the compared LoRA rank, or the
configured reference) by what a rank-``r`` LoRA could hold: **raise r** when the best rank-``r`` approximation keeps
under 90% of the energy (``k90 > r``; suggest ``k90`` rounded up to a power of two), **lower r** when
``k99 <= r/2``, else **adequate** (Eckart-Young). Biderman et al. (2024) find ``k90`` near half the dimension
for Llama-2-7B continued pre-training: full deltas usually need far more than typical LoRA ranks.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass

from lowrank.advice.sufficiency.gradient_evidence import GradientEvidence
from lowrank.advice.sufficiency.trained_point import STILL_FALLING_DROP, STILL_FALLING_SE
from lowrank.advice.sufficiency.verdict import (FIRST_GAIN, HELDOUT_EXAMPLES, HORIZON_FRACTION, LOWER_COST,
                                                LOWER_QUARTER, PROBE_FRACTION, PROBE_LR_SCALE, RAISE_COST, RAISE_GAIN,
                                                RAISE_SE, UNFINISHED_POINTS, UNFINISHED_SE, suggested_rank)
from lowrank.tasks.collapse import CONSTANT_TOLERANCE
from lowrank.errors import LowrankError
from lowrank.spectra import next_power_of_two
from lowrank.analysis.data_records import STATES, ModelSufficiency, Probe
from lowrank.analysis.results import VERDICTS, ModuleAnalysis, Recommendation, Summary, Threshold, TypeSummary

OVERPROVISIONED_FRACTION = 0.5
STATE_ADVICE = {"collapsed": "lower the learning rate", "not converged": "train longer"}
FULL_SUFFICIENT_ENERGY = 0.9

THRESHOLDS = (
    Threshold("raise_above", RAISE_GAIN,
              f"LoRA with --data, at a trained point: the probe continues the adapter at r, at 2r (r new directions, "
              f"the function unchanged at the start) and at r/2 (its best rank-r/2 truncation) for "
              f"{100 * PROBE_FRACTION:g}% of the run's steps at {PROBE_LR_SCALE:g}x its learning rates (decaying to 0 "
              f"at {100 * HORIZON_FRACTION:g}%), on the same batches, and scores each on up to {HELDOUT_EXAMPLES} "
              "held-out examples, paired. Raise r when doubling "
              "lowers the held-out loss by more than this fraction of the loss at r (after the same continuation) "
              "and by more than raise_se standard errors. Calibrated against retraining at r and 2r "
              "(reports/rank_advice.md)."),
    Threshold("raise_above_first", FIRST_GAIN,
              "At r = 1, where there is no halved arm and the doubling gain is the only evidence, raise r when "
              "doubling lowers the held-out loss by more than this fraction (and raise_se standard errors)."),
    Threshold("raise_se", RAISE_SE,
              "Raise r also needs the doubling gain to exceed this many standard errors of the paired held-out "
              "difference, so that the scatter of the held-out sample does not read as a gain."),
    Threshold("raise_cost", RAISE_COST,
              "Raise r also when halving (then the same continuation) raises the held-out loss by more than this "
              "fraction of the loss at r: the lower half of the rank carries that much held-out value, so the "
              "adapter uses all the rank it has. Calibrated against retraining (reports/rank_advice.md)."),
    Threshold("lower_below", LOWER_COST,
              "Lower r when halving (then the same continuation) raises the held-out loss by less than this fraction "
              "of the loss at r, and (r > 2) cutting to r/4 by less than lower_quarter. The gradient "
              "signal-to-noise (S/N) shown per module is evidence only: it followed r more than the need for rank "
              "(reports/rank_advice.md)."),
    Threshold("lower_quarter", LOWER_QUARTER,
              "Lower r also needs the update cut to rank r/4 (then the same continuation) to raise the held-out loss "
              "by less than this fraction: even the top quarter of the rank holds the held-out value, a margin for "
              "an adapter trained from scratch at r/2, which does not start from the truncation. The quartered arm "
              "runs only where halving is below lower_below."),
    Threshold("still_falling_drop", STILL_FALLING_DROP,
              "LoRA with --data, before any rank verdict: not converged (no rank advice) when more than this share "
              "of the run's training-loss decrease came in the last fifth of its learning rate spent (from the "
              "adapter folder's metrics.json), and by more than still_falling_se standard errors. A loss falling in "
              "step with the learning rate gives 0.25-0.27, an exponential approach 0.15 after 1.5 time constants; "
              "measured: 0.03-0.07 on five 3-epoch Reuters R8 runs, 0.23 on MiniLM-L6 stopped at 100 steps."),
    Threshold("still_falling_se", STILL_FALLING_SE,
              "Not converged also needs that last drop to exceed this many standard errors of the per-step scatter "
              "(Welch), so that batch-to-batch noise in a short run does not read as a falling loss."),
    Threshold("unfinished_points", UNFINISHED_POINTS,
              "LoRA with --data, before the rank verdict: not converged (no rank advice) when the probe's rank-r arm "
              "raises held-out accuracy by more than this many points and unfinished_se standard errors: training "
              "had not finished. No fully trained calibration adapter passed it (reports/rank_advice.md)."),
    Threshold("unfinished_se", UNFINISHED_SE,
              "Not converged by the probe also needs that accuracy gain to exceed this many standard errors of the "
              "paired held-out difference."),
    Threshold("collapse_tolerance", CONSTANT_TOLERANCE,
              "LoRA with --data, first: collapsed (no rank advice) when the held-out loss is non-finite, within this "
              "fraction of the class frequencies' entropy or above it, at or below the majority class's accuracy, "
              "or (language modelling) no lower than the base model's."),
    Threshold("full_sufficient_energy", FULL_SUFFICIENT_ENERGY,
              "Full deltas: a rank-r LoRA can hold at most the top-r energy fraction (Eckart-Young); below 90% "
              "raise r to k90 (rounded up to a power of two); k99 <= r/2 means lower r."),
)


@dataclass(frozen=True)
class Verdict:
    """The judgement on one spectrum at one rank, with the numbers behind it."""

    verdict: str
    suggested_rank: int
    evidence: str


def judge_lora(r: int, k90: int, k99: int, tail: float, limit: int, evidence: GradientEvidence | None,
               model_verdict: str | None = None) -> Verdict:
    """Verdict for a LoRA update of rank ``r``: with ``--data`` the model-level verdict (the probe's, from
    held-out losses at r, 2r and r/2), with this module's own gradient ``evidence`` beside it; else "not judged".

    ``limit = min(out, in)`` caps a suggestion. The spectrum (``k90``, ``k99``, tail ratio ``s_r / s_1``) is quoted
    in the evidence as the update's shape.
    """
    shape = f"shape: k90 = {k90}, k99 = {k99} of r = {r}, s_r/s_1 = {tail:.2f}"
    if model_verdict in STATES:
        return Verdict("not judged", r, f"{shape}; the adapter is {model_verdict}, so no rank is judged (see the "
                                        "data verdict)")
    if evidence is None or model_verdict is None:
        return Verdict("not judged", r, f"{shape}; the spectrum alone cannot tell whether more rank would help "
                                        "(pass --data)")
    suggested = suggested_rank(model_verdict, r, limit)
    return Verdict(model_verdict, suggested,
                   f"the model's verdict, from the held-out loss at r, 2r and r/2 (see the data verdict); evidence "
                   f"only: outside this module's reach, its top-{r} gradient energy is "
                   f"{evidence.signal_to_noise:.1f}x the noise level, doubling gain {evidence.doubling_gain:.4f}; "
                   f"{shape}")


def judge_full(r: int, k90: int, k99: int, captured: float, limit: int) -> Verdict:
    """Verdict for a full delta against reference rank ``r``, from ``k90``, ``k99`` and the top-``r`` energy."""
    if k90 > r:
        return Verdict("raise r", min(next_power_of_two(k90), limit),
                       f"rank {r} keeps {100 * captured:.1f}% of the energy (Eckart-Young); 90% needs {k90}")
    if k99 <= OVERPROVISIONED_FRACTION * r:
        return Verdict("lower r", min(next_power_of_two(max(k99, 1)), r),
                       f"k99 = {k99} <= r/2 = {r / 2:g}: rank {r} keeps {100 * captured:.1f}% of the energy")
    return Verdict("adequate", r, f"rank {r} keeps {100 * captured:.1f}% of the energy; k90 = {k90}, k99 = {k99}")


_LAYER = re.compile(r"^(?:(.*)\.)?(\d+)\.(.+)$")


def module_type(name: str) -> tuple[str, int | None]:
    """``("attention.self.query", 3)`` for ``"bert.encoder.layer.3.attention.self.query"``; ``(name, None)``
    for a module outside the numbered layers."""
    match = _LAYER.match(name)
    return (match.group(3), int(match.group(2))) if match else (name, None)


def _alpha(scale: float, rank: int, rslora: bool) -> float:
    return round(scale * (math.sqrt(rank) if rslora else rank), 6)


def recommend(modules: tuple[ModuleAnalysis, ...], rslora: bool) -> Recommendation:
    """A peft-loadable rank assignment: ``r`` = the most common suggested rank (ties: the larger), the other
    modules in ``rank_pattern`` under their full module path (peft matches ``(.*\\.)?<key>$``), and an
    ``alpha_pattern`` that keeps each LoRA module's current scaling (``alpha/r``, or ``alpha/sqrt(r)`` with rsLoRA).
    """
    if not modules:
        raise LowrankError("no modules to recommend ranks for")
    counts = Counter(m.suggested_rank for m in modules)
    r = max(counts, key=lambda rank: (counts[rank], rank))
    rank_pattern = {m.name: m.suggested_rank for m in modules if m.suggested_rank != r}
    lora = [m for m in modules if m.scale is not None]
    lora_alpha, alpha_pattern = None, {}
    if lora:
        alphas = {m.name: _alpha(m.scale, m.suggested_rank, rslora) for m in lora}
        common = Counter(alphas.values())
        lora_alpha = max(common, key=lambda a: (common[a], a))
        alpha_pattern = {name: a for name, a in alphas.items() if a != lora_alpha}
    now = sum(m.rank * (m.shape[0] + m.shape[1]) if m.kind == "lora" else m.shape[0] * m.shape[1] for m in modules)
    suggested = sum(m.suggested_rank * (m.shape[0] + m.shape[1]) for m in modules)
    return Recommendation(r=r, lora_alpha=lora_alpha, rank_pattern=rank_pattern, alpha_pattern=alpha_pattern,
                          parameters_now=now, parameters_suggested=suggested)


def _type_summary(kind: str, group: list[ModuleAnalysis]) -> TypeSummary:
    k90 = [m.energy_rank["0.9"] for m in group]
    return TypeSummary(type=kind, modules=len(group), median_k90=float(statistics.median(k90)), max_k90=max(k90),
                       median_effective_rank=round(float(statistics.median(m.effective_rank for m in group)), 4),
                       verdicts=dict(Counter(m.verdict for m in group)))


def summarize(modules: tuple[ModuleAnalysis, ...], rslora: bool, data: ModelSufficiency | None = None) -> Summary:
    """Model-level summary: verdict counts, one :class:`TypeSummary` per module type, a headline, the
    recommendation (the model-level data verdict ``data`` leads the headline when given)."""
    if not modules:
        raise LowrankError("no modules were analyzed")
    groups: dict[str, list[ModuleAnalysis]] = {}
    for m in modules:
        groups.setdefault(module_type(m.name)[0], []).append(m)
    verdicts = {v: sum(m.verdict == v for m in modules) for v in VERDICTS}
    recommendation = recommend(modules, rslora)
    return Summary(modules=len(modules), verdicts=verdicts,
                   by_type=tuple(_type_summary(k, g) for k, g in groups.items()),
                   headline=_headline(modules, verdicts, recommendation, data), recommendation=recommendation)


def _headline(modules: tuple[ModuleAnalysis, ...], verdicts: dict, rec: Recommendation,
              data: ModelSufficiency | None) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in verdicts.items() if n)
    k90 = statistics.median(m.energy_rank["0.9"] for m in modules)
    ranks = sorted({m.reference_rank for m in modules})
    rank_text = f"r = {ranks[0]}" if len(ranks) == 1 else f"r = {ranks[0]}..{ranks[-1]}"
    if data is not None and data.verdict in STATES:
        return (f"Data verdict: {data.verdict}: {STATE_ADVICE[data.verdict]} ({data.state_evidence}). No rank "
                f"advice: rank is judged at a trained point; suggested r = {data.suggested_r}, unchanged. "
                f"{len(modules)} LoRA modules at {rank_text}, median energy rank k90 = {k90:g}.")
    if verdicts["not judged"] == len(modules):
        return (f"{len(modules)} LoRA modules at {rank_text}, median energy rank k90 = {k90:g}. This describes the "
                "update's shape only: whether more rank would help needs data (lowrank analyze ... --base MODEL "
                "--data DATA).")
    lead = "" if data is None else f"Data verdict: {data.verdict}: {probe_sentence(data.probe)} " \
        f"Suggested r = {data.suggested_r}. "
    count = len(rec.rank_pattern)
    pattern = f" and a rank_pattern for {count} module{'s' if count > 1 else ''}" if count else ""
    ratio = rec.parameters_suggested / rec.parameters_now if rec.parameters_now else float("nan")
    return (f"{lead}{len(modules)} modules: {counts}. Median energy rank k90 = {k90:g} at {rank_text}. "
            f"Per module: r = {rec.r}{pattern} ({ratio:.2g}x the parameters now).")


def share_text(relative: float | None) -> str:
    """A relative difference as a percentage of the loss: ``1.2%``, ``0.043%`` (``-`` when unknown)."""
    if relative is None:
        return "-"
    value = 100 * abs(relative)
    return f"{value:.1f}%" if value >= 1 else f"{value:.2g}%"


def _rate(scale: float) -> str:
    return {1.0: "its learning rate", 0.5: "half its learning rate", 0.1: "a tenth of its learning rate"}.get(
        scale, f"{scale:g}x its learning rate")


def probe_sentence(probe: Probe) -> str:
    """What doubling and halving did to the held-out loss, e.g. "doubling r lowered the held-out loss by 1.2%
    (±0.1%, accuracy +4.3 points) over a continuation of 90 steps (30% of the run at a tenth of its learning rate);
    halving raised it by 5.3%." (percentages of the same rank's loss; ± one standard error)."""
    run = "the run" if probe.run_steps_from_metrics else f"an assumed {probe.run_steps}-step run"
    unknown = "" if probe.run_steps_from_metrics else "; no metrics.json: default rates"
    over = (f"over a continuation of {probe.steps} steps ({100 * probe.steps / probe.run_steps:.0f}% of {run} at "
            f"{_rate(probe.lr_scale)}{unknown})")
    doubling = probe.doubling
    if doubling is None:
        first = f"doubling r was not tried (every module is at full rank) {over}"
    else:
        spread = doubling.loss_se / probe.loss if probe.loss > 0 else None
        accuracy = "" if doubling.accuracy is None else f", accuracy {doubling.accuracy:+.1f} points"
        moved = "lowered" if doubling.loss > 0 else "raised"
        first = (f"doubling r {moved} the held-out loss by {share_text(doubling.relative)} "
                 f"(±{share_text(spread)}{accuracy}) {over}")
    halving = probe.halving
    second = "r = 1 cannot be halved" if halving is None else \
        f"halving {'raised' if halving.loss > 0 else 'lowered'} it by {share_text(halving.relative)}"
    quartering = probe.quartering
    if quartering is not None:
        second += f", cutting to r/4 {'raised' if quartering.loss > 0 else 'lowered'} it by " \
                  f"{share_text(quartering.relative)}"
    return f"{first}; {second}."
