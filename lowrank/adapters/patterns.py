"""Per-module ranks and alphas as peft's ``r`` / ``lora_alpha`` defaults plus ``rank_pattern`` / ``alpha_pattern``:
every ``rank_pattern`` and ``alpha_pattern`` lowrank writes goes through :func:`pattern_fields`.

peft (and :class:`lowrank.lora.LoraConfig`) give module ``name`` the value of the first pattern ``p`` with
``re.match(rf"(.*\\.)?({p})$", name)``, else the default. Every module whose value differs from the default gets
its escaped full name as pattern. A full name could also match a module whose name ends with ``"." + name``, so
patterns are anchored with ``^`` (which then forbids the optional prefix) when a name would catch another, and the
result is checked by resolving every module through :class:`lowrank.lora.LoraConfig`. peft applies a pattern that
matches no module silently, so each one is also checked to match a module.
"""

from __future__ import annotations

import re
from collections import Counter

from lowrank import lora
from lowrank.errors import LowrankError


def _default(values: dict[str, float]) -> float:
    """The most common value (the first seen among ties)."""
    return Counter(values.values()).most_common(1)[0][0]


def _pattern(name: str, names: list[str]) -> str:
    clash = any(other != name and other.endswith("." + name) for other in names)
    return ("^" if clash else "") + re.escape(name)


def pattern_fields(ranks: dict[str, int], alphas: dict[str, float], r: int, alpha: float) -> dict:
    """``{"rank_pattern", "alpha_pattern"}`` that give each module of ``ranks`` its rank and alpha over the defaults
    ``r`` and ``alpha``.

    Raises:
        LowrankError: ``ranks`` empty or naming other modules than ``alphas``, a pattern that matches no module, or
            one that resolves a module to another value.
    """
    if not ranks or set(ranks) != set(alphas):
        raise LowrankError("rank and alpha maps must name the same, non-empty set of modules")
    names = list(ranks)
    fields = {"rank_pattern": {_pattern(n, names): int(k) for n, k in ranks.items() if k != r},
              "alpha_pattern": {_pattern(n, names): a for n, a in alphas.items() if a != alpha}}
    for pattern in [*fields["rank_pattern"], *fields["alpha_pattern"]]:
        if not any(re.match(rf"(.*\.)?({pattern})$", name) for name in names):
            raise LowrankError(f"pattern {pattern!r} matches no module (peft would apply it to nothing)")
    resolved = lora.LoraConfig(r=int(r), alpha=alpha, targets=lora.Targets(all_linear=True),
                               rank_pattern=fields["rank_pattern"], alpha_pattern=fields["alpha_pattern"])
    for name in names:
        if resolved.rank_for(name) != ranks[name] or resolved.alpha_for(name) != alphas[name]:
            raise LowrankError(f"module {name}: rank/alpha patterns resolve to {resolved.rank_for(name)}/"
                               f"{resolved.alpha_for(name)}, not {ranks[name]}/{alphas[name]}")
    return fields


def rank_alpha_fields(ranks: dict[str, int], alphas: dict[str, float]) -> dict:
    """``{"r", "lora_alpha", "rank_pattern", "alpha_pattern"}`` with the most common rank and alpha as defaults.

    Raises LowrankError when ``ranks`` is empty or names differ between the two maps.
    """
    if not ranks or set(ranks) != set(alphas):
        raise LowrankError("rank and alpha maps must name the same, non-empty set of modules")
    r, alpha = _default(ranks), _default(alphas)
    return {"r": int(r), "lora_alpha": alpha, **pattern_fields(ranks, alphas, r, alpha)}
