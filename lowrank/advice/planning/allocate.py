"""Per-module ranks under a trainable-parameter budget (pure math).

Module ``m`` (shape ``out_m x in_m``) at rank ``k`` costs ``k (out_m + in_m)`` LoRA parameters. Its signal is a
descending spectrum ``sigma_m``; ``k`` directions are worth ``v_m(k) = sum_{i<=k} sigma_{m,i}^2`` (the first-order
loss decrease a rank-``k`` step along the signal buys, or the energy a rank-``k`` update keeps). Maximize
``sum_m v_m(k_m)`` subject to ``sum_m k_m (out_m + in_m) <= budget`` and ``1 <= k_m <= kmax_m``: since each
``v_m`` is concave in ``k``, adding one direction at a time to the module with the largest
``sigma_{m,k+1}^2 / (out_m + in_m)`` (greedy water-filling) is optimal for the fractional problem and within one
direction per module of it for integers.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from lowrank.errors import LowrankError


@dataclass(frozen=True)
class ModuleSignal:
    """One module's shape ``(out, in)`` and its descending signal spectrum."""

    name: str
    shape: tuple[int, int]
    spectrum: tuple[float, ...]

    @property
    def cost(self) -> int:
        return self.shape[0] + self.shape[1]


def uniform_cost(modules: list[ModuleSignal], rank: int) -> int:
    """Parameters of rank ``rank`` on every module: ``rank * sum(out + in)``."""
    return rank * sum(m.cost for m in modules)


def allocate(modules: list[ModuleSignal], budget: int, max_rank: int) -> dict[str, int]:
    """Ranks ``{name: k}`` (each ``1 <= k <= min(max_rank, len(spectrum), out, in)``) spending at most ``budget``.

    Raises LowrankError when the budget is below one rank per module.
    """
    if not modules:
        raise LowrankError("no modules to allocate ranks to")
    floor = uniform_cost(modules, 1)
    if budget < floor:
        raise LowrankError(f"a budget of {budget:,} parameters is below one rank per module ({floor:,} for "
                           f"{len(modules)} modules)")
    ranks = {m.name: 1 for m in modules}
    left = budget - floor
    caps = {m.name: max(1, min(max_rank, len(m.spectrum), *m.shape)) for m in modules}
    heap = [(-_value(m, 1), m.name) for m in modules if caps[m.name] > 1]
    heapq.heapify(heap)
    by_name = {m.name: m for m in modules}
    while heap:
        _, name = heapq.heappop(heap)
        module = by_name[name]
        if module.cost > left:
            continue
        ranks[name] += 1
        left -= module.cost
        if ranks[name] < caps[name]:
            heapq.heappush(heap, (-_value(module, ranks[name]), name))
    return ranks


def _value(module: ModuleSignal, k: int) -> float:
    """Marginal value per parameter of the ``(k+1)``-th direction."""
    return module.spectrum[k] ** 2 / module.cost if k < len(module.spectrum) else 0.0
