"""A sketched full delta's measures and verdict (``lowrank analyze --fast``): everything the exact route reports,
from a :class:`~lowrank.sketch.Sketch`, with the energy ranks as intervals certain to hold the exact values.

Conventions (the JSON's ``route: "sketch"``): ``energy_rank[level]`` is the interval's upper end ``k_hi`` (a rank
that surely keeps that fraction of ``||dW||_F^2``), ``energy_rank_bounds[level] = [k_lo, k_hi]``,
``energy_at_rank`` the lower bound ``E_B(r) / T`` of the energy the best rank-``r`` approximation keeps. The verdict
applies :func:`lowrank.analysis.rank.judge_full`'s rule to the upper ends; when another verdict is possible inside
the intervals, the evidence says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowrank import spectra
from lowrank.analysis.rank import OVERPROVISIONED_FRACTION, Verdict, judge_full
from lowrank.sketch import Sketch

NOTE = ("--fast: full deltas' spectra were sketched (randomized range finding, lowrank.sketch): their singular "
        "values are the sketch's top l (each a lower bound), their energy ranks intervals certain to hold the exact "
        "ones (shown as lo-hi; tables and verdicts use the upper end), amplification uses the sketch's top vectors "
        "and W0's sketched top values, and intruder dimensions were not computed (they need every singular vector "
        "of W0). Run without --fast for exact values.")


@dataclass(frozen=True)
class Bounded:
    """Measures of a sketched delta: energy ranks (upper ends) and their ``[lo, hi]`` intervals, bounds of the
    energy kept at rank ``r``, and estimates of the effective and stable ranks."""

    energy: dict
    bounds: dict
    captured: tuple[float, float]
    effective_rank: float
    stable_rank: float
    tail_ratio: float


def bounded_measures(sketch: Sketch, r: int, levels: tuple[str, ...]) -> Bounded:
    """:class:`Bounded` of ``sketch`` at reference rank ``r``. ``tail_ratio = s_r(B) / s_1(B)`` (0 past the sketch),
    ``stable_rank = T / s_1(B)^2`` (an upper bound: ``s_1(B) <= s_1``), ``effective_rank`` from
    :meth:`Sketch.completed` (an estimate)."""
    bounds = {level: list(sketch.energy_rank_bounds(float(level))) for level in levels}
    s = sketch.svd.S.double().cpu()
    top = float(s[0]) if s.numel() else 0.0
    return Bounded(energy={level: hi for level, (_, hi) in bounds.items()}, bounds=bounds,
                   captured=sketch.captured_bounds(r), effective_rank=spectra.effective_rank(sketch.completed()),
                   stable_rank=sketch.total / top**2 if top > 0 else 0.0,
                   tail_ratio=float(s[r - 1]) / top if top > 0 and r <= s.numel() else 0.0)


def possible_verdicts(r: int, k90: list[int], k99: list[int]) -> list[str]:
    """Every verdict :func:`judge_full`'s rule gives for some ``k90`` in ``k90 = [lo, hi]`` and ``k99`` in ``k99``
    (with ``k90 <= k99``): raise when ``k90 > r``, else lower when ``k99 <= r/2``, else adequate."""
    half = OVERPROVISIONED_FRACTION * r
    found = []
    if k90[1] > r:
        found.append("raise r")
    if k90[0] <= r and k99[1] > half:
        found.append("adequate")
    if k90[0] <= r and k99[0] <= half:
        found.append("lower r")
    return found


def judge_bounded(r: int, measures: Bounded, limit: int, size: int) -> Verdict:
    """The verdict on the intervals' upper ends (``k90_hi``, ``k99_hi``), with the intervals as evidence and the
    other verdicts they allow, if any."""
    k90, k99 = measures.bounds["0.9"], measures.bounds["0.99"]
    low, high = measures.captured
    verdict = judge_full(r, k90[1], k99[1], low, limit)
    text = (f"sketch of {size} columns: k90 in [{k90[0]}, {k90[1]}], k99 in [{k99[0]}, {k99[1]}]; rank {r} keeps "
            f"{100 * low:.1f}-{100 * high:.1f}% of the energy")
    others = [v for v in possible_verdicts(r, k90, k99) if v != verdict.verdict]
    if not others:
        return Verdict(verdict.verdict, verdict.suggested_rank, f"{text}; '{verdict.verdict}' holds throughout")
    return Verdict(verdict.verdict, verdict.suggested_rank,
                   f"{text}; the intervals straddle the thresholds (raise if k90 > {r}, lower if k99 <= "
                   f"{OVERPROVISIONED_FRACTION * r:g}): judged on their upper ends, the exact verdict may be "
                   f"{' or '.join(repr(v) for v in others)} (run without --fast to settle it)")
