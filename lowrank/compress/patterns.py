"""Per-module ranks and alphas as peft's ``r`` / ``lora_alpha`` defaults plus ``rank_pattern`` / ``alpha_pattern``.

peft (and :class:`lowrank.lora.LoraConfig`) give module ``name`` the value of the first pattern ``p`` with
``re.match(rf"(.*\\.)?({p})$", name)``, else the default. The default is the most common value; every other module
gets its escaped full name as pattern. A full name could also match a module whose name ends with ``"." + name``,
so the result is checked by resolving every module through :class:`lowrank.lora.LoraConfig`, and patterns are
anchored with ``^`` (which then forbids the optional prefix) when a name would catch another.
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


def rank_alpha_fields(ranks: dict[str, int], alphas: dict[str, float]) -> dict:
    """``{"r", "lora_alpha", "rank_pattern", "alpha_pattern"}`` that give each module its rank and alpha.

    Raises LowrankError when ``ranks`` is empty or names differ between the two maps.
    """
    if not ranks or set(ranks) != set(alphas):
        raise LowrankError("rank and alpha maps must name the same, non-empty set of modules")
    names = list(ranks)
    r, alpha = _default(ranks), _default(alphas)
    fields = {"r": int(r), "lora_alpha": alpha,
              "rank_pattern": {_pattern(n, names): int(k) for n, k in ranks.items() if k != r},
              "alpha_pattern": {_pattern(n, names): a for n, a in alphas.items() if a != alpha}}
    resolved = lora.LoraConfig(r=fields["r"], alpha=alpha, targets=lora.Targets(all_linear=True),
                               rank_pattern=fields["rank_pattern"], alpha_pattern=fields["alpha_pattern"])
    for name in names:
        if resolved.rank_for(name) != ranks[name] or resolved.alpha_for(name) != alphas[name]:
            raise LowrankError(f"module {name}: rank/alpha patterns resolve to {resolved.rank_for(name)}/"
                               f"{resolved.alpha_for(name)}, not {ranks[name]}/{alphas[name]}")
    return fields
