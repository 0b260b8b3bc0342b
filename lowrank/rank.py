"""Rank sufficiency: was ``r`` enough for each module, and what rank to use next time.

A LoRA update ``dW = s B A`` has at most ``r`` singular values ``s_1 >= ... >= s_r``. Its own spectrum says two
things. If the last singular value is still large (``s_r / s_1 >= 0.5``) the spectrum had not started to decay
when the rank ran out: training used every direction it was given, and the rank constraint was probably binding
(**saturated**; try ``2r``). If the trailing half of the directions hold under 1% of the energy (``k99 <= r/2``),
truncating the update to ``k99`` directions changes it by at most ``sqrt(0.01) = 10%`` in Frobenius norm
(Eckart-Young), so half the rank would do (**over-provisioned**; suggest ``k99`` rounded up to a power of two).
Otherwise the spectrum decays inside the budget (**adequate**; keep ``r``). The two conditions cannot both hold:
``s_r >= s_1 / 2`` puts at least 1/8 of the energy in the trailing half.

A full fine-tuning delta ``W1 - W0`` is judged against a reference rank ``r`` (the compared LoRA rank, or the
configured reference): it is **saturated** at ``r`` when the best rank-``r`` approximation keeps under 90% of its
energy (``k90 > r``; suggest ``k90`` rounded up to a power of two), **over-provisioned** when ``k99 <= r/2``, and
**adequate** otherwise. Biderman et al. (2024) find ``k90`` near half the dimension for Llama-2-7B continued
pre-training: full deltas are usually saturated at typical LoRA ranks.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass

from lowrank.errors import LowrankError
from lowrank.results import VERDICTS, ModuleAnalysis, Recommendation, Summary, Threshold, TypeSummary

SATURATED_TAIL_RATIO = 0.5
OVERPROVISIONED_ENERGY = 0.99
OVERPROVISIONED_FRACTION = 0.5
FULL_SUFFICIENT_ENERGY = 0.9

THRESHOLDS = (
    Threshold("saturated_tail_ratio", SATURATED_TAIL_RATIO,
              "LoRA: s_r / s_1 >= 0.5 means the spectrum had not decayed when the rank ran out, so every given "
              "direction was used and the rank constraint was likely binding; the smallest step that tests this "
              "is doubling r."),
    Threshold("overprovisioned_energy", OVERPROVISIONED_ENERGY,
              "k99 is the rank keeping 99% of ||dW||_F^2; dropping the rest changes dW by at most 10% in Frobenius "
              "norm (Eckart-Young: ||dW - dW_k||_F^2 = sum of the dropped s^2)."),
    Threshold("overprovisioned_fraction", OVERPROVISIONED_FRACTION,
              "Over-provisioned when k99 <= 0.5 r: half of the rank holds under 1% of the energy, so halving r "
              "(or more) loses almost nothing; suggested rank = k99 rounded up to a power of two."),
    Threshold("full_sufficient_energy", FULL_SUFFICIENT_ENERGY,
              "Full deltas: a rank-r LoRA can hold at most the top-r energy fraction (Eckart-Young); below 90% "
              "the reference rank r is saturated and k90 (rounded up to a power of two) is suggested."),
)


@dataclass(frozen=True)
class Verdict:
    """The judgement on one spectrum at one rank, with the numbers behind it."""

    verdict: str
    suggested_rank: int
    evidence: str


def next_power_of_two(k: int) -> int:
    """Smallest power of two ``>= k`` (``k >= 1``)."""
    if k < 1:
        raise LowrankError(f"rank must be >= 1, got {k}")
    return 1 << (k - 1).bit_length()


def judge_lora(r: int, k90: int, k99: int, tail: float, limit: int) -> Verdict:
    """Verdict for a LoRA update of rank ``r`` from its energy ranks and tail ratio ``s_r / s_1``.

    ``limit = min(out, in)`` caps a suggestion. A zero update (``k99 == 0``) is over-provisioned, suggested rank 1.
    """
    if tail >= SATURATED_TAIL_RATIO:
        note = " (a rank-1 update cannot show whether more directions were wanted)" if r == 1 else ""
        return Verdict("saturated", min(2 * r, limit),
                       f"s_r/s_1 = {tail:.2f} >= {SATURATED_TAIL_RATIO}: all {r} directions carry weight{note}")
    if k99 <= OVERPROVISIONED_FRACTION * r:
        suggested = min(next_power_of_two(max(k99, 1)), r)
        return Verdict("over-provisioned", suggested,
                       f"k99 = {k99} <= r/2 = {r / 2:g}: the last {r - k99} of {r} directions hold < 1% of the energy")
    return Verdict("adequate", r, f"spectrum decays within r: k90 = {k90}, k99 = {k99} of r = {r}, "
                                  f"s_r/s_1 = {tail:.2f}")


def judge_full(r: int, k90: int, k99: int, captured: float, limit: int) -> Verdict:
    """Verdict for a full delta against reference rank ``r``, from ``k90``, ``k99`` and the top-``r`` energy."""
    if k90 > r:
        return Verdict("saturated", min(next_power_of_two(k90), limit),
                       f"rank {r} keeps {100 * captured:.1f}% of the energy (Eckart-Young); 90% needs {k90}")
    if k99 <= OVERPROVISIONED_FRACTION * r:
        return Verdict("over-provisioned", min(next_power_of_two(max(k99, 1)), r),
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


def summarize(modules: tuple[ModuleAnalysis, ...], rslora: bool) -> Summary:
    """Model-level summary: verdict counts, one :class:`TypeSummary` per module type, a headline, the
    recommendation."""
    if not modules:
        raise LowrankError("no modules were analyzed")
    groups: dict[str, list[ModuleAnalysis]] = {}
    for m in modules:
        groups.setdefault(module_type(m.name)[0], []).append(m)
    verdicts = {v: sum(m.verdict == v for m in modules) for v in VERDICTS}
    recommendation = recommend(modules, rslora)
    return Summary(modules=len(modules), verdicts=verdicts,
                   by_type=tuple(_type_summary(k, g) for k, g in groups.items()),
                   headline=_headline(modules, verdicts, recommendation), recommendation=recommendation)


def _headline(modules: tuple[ModuleAnalysis, ...], verdicts: dict, rec: Recommendation) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in verdicts.items() if n)
    k90 = statistics.median(m.energy_rank["0.9"] for m in modules)
    ranks = sorted({m.reference_rank for m in modules})
    rank_text = f"r = {ranks[0]}" if len(ranks) == 1 else f"r = {ranks[0]}..{ranks[-1]}"
    count = len(rec.rank_pattern)
    pattern = f" and a rank_pattern for {count} module{'s' if count > 1 else ''}" if count else ""
    ratio = rec.parameters_suggested / rec.parameters_now if rec.parameters_now else float("nan")
    return (f"{len(modules)} modules: {counts}. Median energy rank k90 = {k90:g} at {rank_text}. "
            f"Suggested: r = {rec.r}{pattern} ({ratio:.2g}x the parameters now).")
