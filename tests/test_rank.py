"""lowrank.rank: verdicts on exact spectra, their documented thresholds, and a rank_pattern that peft loads."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowrank import rank as ranking
from lowrank.errors import LowrankError
from lowrank.results import ModuleAnalysis
from lowrank.spectra import energy_captured, energy_rank, tail_ratio


def _lora_verdict(s: list[float], r: int, limit: int = 1000) -> ranking.Verdict:
    t = torch.tensor(s, dtype=torch.float64)
    return ranking.judge_lora(r, energy_rank(t, 0.9), energy_rank(t, 0.99), tail_ratio(t, r), limit)


def test_next_power_of_two():
    assert [ranking.next_power_of_two(k) for k in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 16]
    with pytest.raises(LowrankError):
        ranking.next_power_of_two(0)


def test_flat_spectrum_is_saturated_and_doubles():
    verdict = _lora_verdict([1.0] * 8, 8)
    assert verdict.verdict == "saturated" and verdict.suggested_rank == 16
    assert _lora_verdict([1.0] * 8, 8, limit=12).suggested_rank == 12  # never above min(out, in)
    assert "rank-1" in _lora_verdict([2.0], 1).evidence


def test_fast_decay_is_over_provisioned_to_k99_rounded_up():
    s = [1.0, 0.5, 0.3, 0.01, 0.001, 0.0, 0.0, 0.0]  # k99 = 3: the last 5 of 8 directions hold < 1%
    t = torch.tensor(s, dtype=torch.float64)
    assert energy_rank(t, 0.99) == 3
    verdict = _lora_verdict(s, 8)
    assert verdict.verdict == "over-provisioned" and verdict.suggested_rank == 4


def test_decay_within_budget_is_adequate():
    s = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2]  # tail 0.2 < 0.5, k99 = 8 > 4
    verdict = _lora_verdict(s, 8)
    assert verdict.verdict == "adequate" and verdict.suggested_rank == 8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=32))
def test_saturated_and_over_provisioned_exclude_each_other(values):
    s = sorted([1.0] + values, reverse=True)
    t = torch.tensor(s, dtype=torch.float64)
    r = len(s)
    if tail_ratio(t, r) >= ranking.SATURATED_TAIL_RATIO:
        assert energy_rank(t, 0.99) > ranking.OVERPROVISIONED_FRACTION * r
    assert _lora_verdict(s, r).verdict in ("saturated", "over-provisioned", "adequate")


def test_full_delta_planted_rank_against_reference_rank():
    generator = torch.Generator().manual_seed(0)
    for k in (1, 3, 12):
        delta = torch.randn(60, k, generator=generator, dtype=torch.float64) @ torch.randn(
            k, 40, generator=generator, dtype=torch.float64)
        s = torch.linalg.svdvals(delta)
        k90, k99 = energy_rank(s, 0.9), energy_rank(s, 0.99)
        assert energy_rank(s, 1.0) == k
        verdict = ranking.judge_full(8, k90, k99, energy_captured(s, 8), 40)
        if k == 1:
            assert verdict.verdict == "over-provisioned" and verdict.suggested_rank == 1
        if k == 12:
            assert energy_captured(s, 8) < 1.0
    flat = torch.ones(40, dtype=torch.float64)
    verdict = ranking.judge_full(8, energy_rank(flat, 0.9), energy_rank(flat, 0.99), energy_captured(flat, 8), 40)
    assert verdict.verdict == "saturated" and verdict.suggested_rank == 40  # k90 = 36 -> 64, capped at min(m, n)
    assert "20.0%" in verdict.evidence


def test_module_type():
    assert ranking.module_type("bert.encoder.layer.3.attention.self.query") == ("attention.self.query", 3)
    assert ranking.module_type("model.layers.12.mlp.down_proj") == ("mlp.down_proj", 12)
    assert ranking.module_type("h.0.attn.c_attn") == ("attn.c_attn", 0)
    assert ranking.module_type("classifier") == ("classifier", None)


def _module(name: str, shape, rank: int, scale: float, suggested: int, verdict: str) -> ModuleAnalysis:
    return ModuleAnalysis(name=name, shape=shape, kind="lora", layer_kind="linear", rank=rank, scale=scale,
                          singular_values=(1.0,) * rank, num_singular_values=rank, frobenius_norm=math.sqrt(rank),
                          energy_rank={"0.5": 1, "0.9": 1, "0.99": 1}, effective_rank=1.0, stable_rank=1.0,
                          reference_rank=rank, tail_ratio=1.0, energy_at_rank=1.0, verdict=verdict,
                          suggested_rank=suggested, evidence="", amplification=None, intruders=None)


def test_recommendation_is_a_rank_pattern_that_peft_loads():
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertModel

    names = [f"encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value")]
    suggested = {names[0]: 16, names[1]: 8, names[2]: 8, names[3]: 2}
    modules = tuple(_module(n, (16, 16), 8, 2.0, suggested[n], "adequate") for n in names)
    rec = ranking.recommend(modules, rslora=False)
    assert rec.r == 8 and rec.rank_pattern == {names[0]: 16, names[3]: 2}
    assert rec.lora_alpha == 16.0 and rec.alpha_pattern == {names[0]: 32.0, names[3]: 4.0}
    assert rec.parameters_now == 4 * 8 * 32 and rec.parameters_suggested == (16 + 8 + 8 + 2) * 32
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2))
    peft_model = get_peft_model(model, LoraConfig(r=rec.r, lora_alpha=rec.lora_alpha, target_modules=["query", "value"],
                                                  rank_pattern=rec.rank_pattern, alpha_pattern=rec.alpha_pattern))
    for name in names:
        layer = peft_model.base_model.model.get_submodule(name)
        assert layer.lora_A["default"].weight.shape[0] == suggested[name]
        assert layer.scaling["default"] == pytest.approx(2.0)  # alpha/r kept at the adapter's 2.0


def test_rslora_alpha_keeps_alpha_over_sqrt_r():
    modules = (_module("a.0.q", (8, 8), 4, 0.5, 16, "saturated"),)
    rec = ranking.recommend(modules, rslora=True)
    assert rec.lora_alpha == pytest.approx(0.5 * 4.0)


def test_summary_counts_and_headline():
    modules = (_module("l.0.q", (8, 8), 4, 1.0, 8, "saturated"), _module("l.1.q", (8, 8), 4, 1.0, 4, "adequate"),
               _module("l.0.v", (8, 8), 4, 1.0, 8, "saturated"))
    summary = ranking.summarize(modules, rslora=False)
    assert summary.verdicts == {"over-provisioned": 0, "adequate": 1, "saturated": 2}
    assert [t.type for t in summary.by_type] == ["q", "v"]
    assert summary.by_type[0].verdicts == {"saturated": 1, "adequate": 1}
    assert summary.headline.startswith("3 modules: 1 adequate, 2 saturated")
    assert {t.name for t in ranking.THRESHOLDS} >= {"saturated_tail_ratio", "overprovisioned_fraction"}
    with pytest.raises(LowrankError):
        ranking.summarize((), rslora=False)
