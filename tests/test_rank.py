"""lowrank.analysis.rank: verdicts on exact spectra, their documented thresholds, and a rank_pattern that peft loads."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.analysis import rank as ranking
from lowrank.errors import LowrankError
from lowrank.advice.sufficiency.gradient_evidence import GradientEvidence
from lowrank.analysis.data_records import ModelSufficiency, Probe, ProbeDifference
from lowrank.analysis.results import ModuleAnalysis
from lowrank.spectra import energy_captured, energy_rank, tail_ratio


def _signals(ratio: float) -> GradientEvidence:
    """Gradient evidence whose signal-to-noise is ``ratio`` (noise energy 1)."""
    return GradientEvidence(rank=8, gradient_norm=1.0, base_gradient_norm=1.0, outside_fraction=0.5,
                            outside_energy=ratio, start_energy=10.0, gain_curve=(ratio,), noise_energy=1.0)


def _lora_verdict(s: list[float], r: int, signals: GradientEvidence | None = None, limit: int = 1000,
                  model: str | None = None) -> ranking.Verdict:
    t = torch.tensor(s, dtype=torch.float64)
    return ranking.judge_lora(r, energy_rank(t, 0.9), energy_rank(t, 0.99), tail_ratio(t, r), limit, signals, model)


def test_without_data_a_lora_spectrum_is_not_judged():
    """A fast-decaying spectrum looked 'over-provisioned' to the old shape rule; retraining showed that is no
    evidence (reports/rank_advice.md), so without data the rank is kept and the shape only described."""
    verdict = _lora_verdict([1.0, 0.5, 0.3, 0.01, 0.001, 0.0, 0.0, 0.0], 8)
    assert verdict.verdict == "not judged" and verdict.suggested_rank == 8
    assert "k99 = 3" in verdict.evidence and "--data" in verdict.evidence


@pytest.mark.parametrize("model, suggested", [("raise r", 16), ("adequate", 8), ("lower r", 4)])
@pytest.mark.parametrize("ratio", [0.1, 30.0])
def test_a_module_takes_the_model_verdict_whatever_its_signal_to_noise(model, suggested, ratio):
    """The probe decides; a module's gradient signal-to-noise is quoted as evidence only."""
    result = _lora_verdict([1.0] * 8, 8, _signals(ratio), model=model)
    assert result.verdict == model and result.suggested_rank == suggested
    assert f"{ratio:.1f}x the noise level" in result.evidence and "evidence only" in result.evidence
    assert _lora_verdict([1.0] * 8, 8, _signals(ratio), limit=12, model=model).suggested_rank == min(suggested, 12)


def _probe(doubling: ProbeDifference | None, halving: ProbeDifference | None, from_metrics: bool = True) -> Probe:
    """A probe record at r = 8, held-out loss 0.5 at r after 90 of 300 steps at a tenth of the learning rate."""
    continuation = ProbeDifference(0.01, 0.002, 0.02, 1.0, 0.5)
    return Probe(rank=8, steps=90, run_steps=300, run_steps_from_metrics=from_metrics, lr_scale=0.1, lr=2e-3,
                 head_lr=2e-3, batch_size=16, heldout_examples=1000, trained_loss=0.51, trained_accuracy=0.8,
                 loss=0.5, accuracy=0.81, doubling=doubling, halving=halving, continuation=continuation,
                 seconds=12.0)


def _data(verdict: str, probe: Probe, suggested: int) -> ModelSufficiency:
    return ModelSufficiency(data="d", examples=256, signal_to_noise=3.0, doubling_gain=0.01, verdict=verdict,
                            suggested_r=suggested, raise_above=0.0025, lower_below=0.02, seconds=20.0, probe=probe,
                            raise_se=2.0)


def test_the_headline_quotes_the_probe():
    modules = tuple(_module(f"l.{i}.q", (64, 64), 8, 1.0, 16, "raise r") for i in range(2))
    probe = _probe(ProbeDifference(0.006, 0.0005, 0.012, 4.3, 0.9), ProbeDifference(0.0265, 0.003, 0.053, 2.0, 1.0))
    headline = ranking.summarize(modules, False, _data("raise r", probe, 16)).headline
    assert headline.startswith(
        "Data verdict: raise r: doubling r lowered the held-out loss by 1.2% (±0.1%, accuracy +4.3 points) over a "
        "continuation of 90 steps (30% of the run at a tenth of its learning rate); halving raised it by 5.3%. "
        "Suggested r = 16. 2 modules: 2 raise r.")


def test_the_headline_says_which_way_the_loss_moved_and_which_arm_did_not_run():
    modules = tuple(_module(f"l.{i}.q", (8, 8), 8, 1.0, 8, "adequate") for i in range(2))
    probe = _probe(None, ProbeDifference(-0.001, 0.0005, -0.002, -0.5, 0.4), from_metrics=False)
    headline = ranking.summarize(modules, False, _data("adequate", probe, 8)).headline
    assert headline.startswith(
        "Data verdict: adequate: doubling r was not tried (every module is at full rank) over a continuation of 90 "
        "steps (30% of an assumed 300-step run at a tenth of its learning rate; no metrics.json: default rates); "
        "halving lowered it by 0.2%. Suggested r = 8.")
    probe = _probe(ProbeDifference(-0.0004, 0.0005, -0.0008, None, None), None)
    headline = ranking.summarize(modules, False, _data("adequate", probe, 8)).headline
    assert "doubling r raised the held-out loss by 0.08% (±0.1%) over" in headline
    assert "; r = 1 cannot be halved. Suggested r = 8." in headline


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
            assert verdict.verdict == "lower r" and verdict.suggested_rank == 1
        if k == 12:
            assert energy_captured(s, 8) < 1.0
    flat = torch.ones(40, dtype=torch.float64)
    verdict = ranking.judge_full(8, energy_rank(flat, 0.9), energy_rank(flat, 0.99), energy_captured(flat, 8), 40)
    assert verdict.verdict == "raise r" and verdict.suggested_rank == 40  # k90 = 36 -> 64, capped at min(m, n)
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
    modules = (_module("a.0.q", (8, 8), 4, 0.5, 16, "raise r"),)
    rec = ranking.recommend(modules, rslora=True)
    assert rec.lora_alpha == pytest.approx(0.5 * 4.0)


def test_summary_counts_and_headline():
    modules = (_module("l.0.q", (8, 8), 4, 1.0, 8, "raise r"), _module("l.1.q", (8, 8), 4, 1.0, 4, "adequate"),
               _module("l.0.v", (8, 8), 4, 1.0, 8, "raise r"))
    summary = ranking.summarize(modules, rslora=False)
    assert summary.verdicts == {"raise r": 2, "adequate": 1, "lower r": 0, "not judged": 0}
    assert [t.type for t in summary.by_type] == ["q", "v"]
    assert summary.by_type[0].verdicts == {"raise r": 1, "adequate": 1}
    assert summary.headline.startswith("3 modules: 2 raise r, 1 adequate")
    assert {t.name for t in ranking.THRESHOLDS} >= {"raise_above", "raise_se", "lower_below",
                                                    "full_sufficient_energy"}
    unjudged = tuple(_module(f"l.{i}.q", (8, 8), 4, 1.0, 4, "not judged") for i in range(2))
    assert "needs data" in ranking.summarize(unjudged, rslora=False).headline
    with pytest.raises(LowrankError):
        ranking.summarize((), rslora=False)
