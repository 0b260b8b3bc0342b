"""``lowrank suggest-rank``: per-module LoRA ranks chosen before training, under a trainable-parameter budget.

An allocation signal (:data:`lowrank.advice.planning.registry.SIGNALS`: the gradient at initialization, or a short
high-rank LoRA probe) gives each target module a spectrum; :func:`lowrank.advice.planning.allocate.allocate` spends
the budget where the spectrum is largest per parameter. The budget is ``--budget`` parameters, or what rank
``--rank`` on every module costs. The result is a peft ``LoraConfig`` fragment (``r`` = the most common rank,
``rank_pattern`` for the others, and lowrank's default alpha, so every module's scale is ``alpha / r_module`` as
lowrank trains by default) that ``peft.LoraConfig(**fields)`` and ``lowrank train --config`` accept.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass

import torch

from lowrank.adapters.patterns import pattern_fields
from lowrank.advice.planning.allocate import ModuleSignal, allocate, uniform_cost
from lowrank.advice.planning.config import SuggestConfig
from lowrank.advice.planning.registry import SIGNALS
from lowrank.spectra import energy_rank, next_power_of_two
from lowrank.tasks.defaults import DEFAULT_ALPHA


@dataclass(frozen=True)
class ModuleChoice:
    name: str
    shape: tuple[int, int]
    rank: int
    kept: float  # share of the module's signal energy (within the measured spectrum) its rank keeps


@dataclass(frozen=True)
class Suggestion:
    """The allocation, its evidence and its cost."""

    signal: str
    budget: int
    parameters: int
    uniform_rank: float  # the uniform rank with the same parameters
    modules: tuple[ModuleChoice, ...]
    seconds: float
    lora_config: dict
    global_rank: int  # the uniform rank the signal suggests (see :func:`global_rank`)

    def to_dict(self) -> dict:
        """The evidence as ``suggest-rank --json`` writes it."""
        return {"signal": self.signal, "global_rank": self.global_rank, "budget": self.budget,
                "parameters": self.parameters, "uniform_rank": self.uniform_rank, "seconds": self.seconds,
                "modules": [vars(m) for m in self.modules], "lora_config": self.lora_config}


def suggest(config: SuggestConfig) -> Suggestion:
    """Measure the signal and allocate."""
    signals, seconds = SIGNALS[config.signal](config.train, config.settings)
    budget = config.budget if config.budget is not None else uniform_cost(signals, config.rank)
    ranks = allocate(signals, budget, config.max_rank)
    spent = sum(ranks[m.name] * m.cost for m in signals)
    return Suggestion(signal=config.signal, budget=budget, parameters=spent,
                      uniform_rank=spent / sum(m.cost for m in signals),
                      modules=tuple(_choice(m, ranks[m.name]) for m in signals), seconds=seconds,
                      lora_config=peft_fields(ranks, config.train.targets, [m.name for m in signals]),
                      global_rank=global_rank(signals))


def global_rank(signals: list[ModuleSignal]) -> int:
    """A uniform rank from the signal alone: ``2 * next_power_of_two(median over modules of k90)``, ``k90`` the
    rank keeping 90% of a module's signal energy; the doubling leaves room for directions training finds beyond
    the initial ones. Checked against the retrained r* in reports/rank_advice.md (within one power of two on the
    calibration tasks; treat it as a starting point, not a guarantee)."""
    k90 = statistics.median(energy_rank(torch.tensor(m.spectrum, dtype=torch.float64), 0.9) or 1 for m in signals)
    return 2 * next_power_of_two(math.ceil(k90))


def _choice(module: ModuleSignal, rank: int) -> ModuleChoice:
    energy = [s * s for s in module.spectrum]
    total = sum(energy)
    return ModuleChoice(module.name, module.shape, rank, sum(energy[:rank]) / total if total > 0 else 1.0)


def peft_fields(ranks: dict[str, int], targets: str, names: list[str]) -> dict:
    """``{r, lora_alpha, target_modules, rank_pattern, alpha_pattern}`` for ``peft.LoraConfig(**...)``: ``r`` the
    most common rank (ties: the larger), patterns written by :func:`lowrank.adapters.patterns.pattern_fields`
    (escaped full module paths, each checked to match its module), ``lora_alpha`` lowrank's default
    (:data:`DEFAULT_ALPHA`) for every module."""
    counts = Counter(ranks.values())
    r = max(counts, key=lambda k: (counts[k], k))
    patterns = pattern_fields(ranks, dict.fromkeys(ranks, DEFAULT_ALPHA), r, DEFAULT_ALPHA)
    if targets == "all-linear" or targets.startswith("re:") or targets == "auto":
        target_modules = names
    else:
        target_modules = [t.strip() for t in targets.split(",") if t.strip()]
    return {"r": r, "lora_alpha": DEFAULT_ALPHA, "target_modules": target_modules, **patterns}
