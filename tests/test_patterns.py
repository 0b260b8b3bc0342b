"""rank_pattern / alpha_pattern writing (lowrank.adapters.patterns): escaped full names, anchored where a name would
catch another module, every pattern matching a module; suggest-rank writes through it."""

from __future__ import annotations

import re

import pytest

from lowrank import lora
from lowrank.adapters.patterns import pattern_fields
from lowrank.advice.planning.suggest import peft_fields
from lowrank.errors import LowrankError


def test_patterns_are_escaped_anchored_on_a_clash_and_resolve_to_each_value():
    ranks = {"layers.0.q": 4, "model.layers.0.q": 8, "layers.1.q": 8}
    fields = pattern_fields(ranks, dict.fromkeys(ranks, 8.0), 8, 8.0)
    assert fields == {"rank_pattern": {"^" + re.escape("layers.0.q"): 4}, "alpha_pattern": {}}
    resolved = lora.LoraConfig(r=8, alpha=8.0, targets=lora.Targets(all_linear=True), **fields)
    assert {name: resolved.rank_for(name) for name in ranks} == ranks


def test_suggest_rank_writes_escaped_patterns():
    ranks = {"encoder.layer.0.attention.self.query": 16, "encoder.layer.0.attention.self.value": 8,
             "encoder.layer.1.attention.self.query": 8}
    fields = peft_fields(ranks, "query,value", list(ranks))
    assert fields["r"] == 8 and fields["alpha_pattern"] == {}
    assert fields["rank_pattern"] == {re.escape("encoder.layer.0.attention.self.query"): 16}


def test_a_pattern_that_matches_no_module_is_refused(monkeypatch):
    from lowrank.adapters import patterns

    monkeypatch.setattr(patterns, "_pattern", lambda name, names: name + "_typo")
    with pytest.raises(LowrankError, match="matches no module"):
        pattern_fields({"a.q": 4, "a.v": 8}, {"a.q": 8.0, "a.v": 8.0}, 8, 8.0)
