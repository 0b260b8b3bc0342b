"""lowrank.analysis end to end on adapters written by real peft and on full-model pairs, against float64
numpy/scipy references computed from peft's own dense delta (``get_delta_weight``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

from lowrank.analysis.run import AnalyzeConfig, analyze
from lowrank.errors import LowrankError
from lowrank.analysis.results import AnalysisReport


def tiny(family: str, seed: int = 0):
    """A random-init tiny model: GPT-2 (Conv1D) or Llama causal LM, or a BERT sequence classifier."""
    from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                              LlamaForCausalLM)

    torch.manual_seed(seed)
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16,
                                          bos_token_id=0, eos_token_id=0))
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2))
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, intermediate_size=48,
                                                    num_hidden_layers=2, num_attention_heads=2, num_labels=3))


def save_base(model, folder):
    """Save the pre-trained weights; for BERT only the encoder (a BertModel folder, keys without ``bert.``)."""
    (model.bert if hasattr(model, "bert") else model).save_pretrained(folder)
    return folder


def peft_adapter(folder, model, r: int, targets, seed: int = 1, **options):
    """Wrap ``model`` with peft LoRA, give every B (and embedding factor) random values, save, return the wrapper."""
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(model, LoraConfig(r=r, lora_alpha=options.pop("lora_alpha", 2 * r),
                                               target_modules=targets, **options))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[-1]))
    wrapped.save_pretrained(folder)
    return wrapped


def peft_deltas(wrapped) -> dict[str, np.ndarray]:
    """``dW = s B A`` per adapted module in float64 numpy from peft's own factors and scaling (which carry
    rank_pattern, alpha_pattern and rsLoRA), as applied: (out, in); (vocab, dim) for embeddings."""
    from peft.tuners.lora import LoraLayer

    deltas = {}
    for name, module in wrapped.base_model.model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        scale = module.scaling["default"]
        if "default" in module.lora_embedding_A:
            a = module.lora_embedding_A["default"].detach().double().numpy()
            b = module.lora_embedding_B["default"].detach().double().numpy()
            deltas[name] = scale * (b @ a).T
        else:
            a = module.lora_A["default"].weight.detach().double().numpy()
            b = module.lora_B["default"].weight.detach().double().numpy()
            deltas[name] = scale * (b @ a)
    return deltas


def _relative(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


@pytest.mark.parametrize("family, targets, options", [
    ("gpt2", ["c_attn", "c_fc"], {"fan_in_fan_out": True}),
    ("llama", ["q_proj", "v_proj", "down_proj", "embed_tokens"], {"rank_pattern": {"v_proj": 2},
                                                                   "alpha_pattern": {"down_proj": 3.0}}),
    ("bert", ["query", "value"], {"use_rslora": True}),
])
def test_lora_singular_values_equal_float64_numpy(tmp_path, family, targets, options):
    wrapped = peft_adapter(tmp_path / "adapter", tiny(family), 4, targets, **options)
    report = analyze(AnalyzeConfig(str(tmp_path / "adapter")))
    deltas = peft_deltas(wrapped)
    assert {m.name for m in report.modules} == set(deltas)
    for m in report.modules:
        reference = np.linalg.svd(deltas[m.name], compute_uv=False)[: m.num_singular_values]
        assert tuple(m.shape) == deltas[m.name].shape
        assert _relative(m.singular_values, reference) < 1e-6, m.name
        assert m.kind == "lora" and m.rank == len(m.singular_values)
    kinds = {m.layer_kind for m in report.modules}
    assert kinds == ({"conv1d"} if family == "gpt2" else {"linear", "embedding"} if family == "llama" else {"linear"})
    if family == "llama":
        assert {m.rank for m in report.modules if m.name.endswith("v_proj")} == {2}


def _orthogonal(n: int, k: int, generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))[0]


def planted_pair(folder, ranks: dict[str, int], shape=(100, 80), seed: int = 0):
    """Base and tuned safetensors files whose deltas are ``U diag(1..) V^T`` of the given exact ranks."""
    generator = torch.Generator().manual_seed(seed)
    base, tuned, deltas = {}, {}, {}
    for name, k in ranks.items():
        w0 = torch.randn(shape, generator=generator, dtype=torch.float64)
        s = torch.linspace(2.0, 1.0, k, dtype=torch.float64)
        delta = (_orthogonal(shape[0], k, generator) * s) @ _orthogonal(shape[1], k, generator).T
        base[f"{name}.weight"], tuned[f"{name}.weight"] = w0.float(), (w0 + delta).float()
        deltas[name] = (tuned[f"{name}.weight"].double() - base[f"{name}.weight"].double()).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(base, folder / "base.safetensors")
    save_file(tuned, folder / "tuned.safetensors")
    return deltas


def test_planted_rank_k_full_deltas_are_found_exactly(tmp_path):
    ranks = {"layers.0.q": 1, "layers.0.v": 3, "layers.1.q": 7, "layers.1.v": 20}
    deltas = planted_pair(tmp_path, ranks)
    report = analyze(AnalyzeConfig(str(tmp_path / "tuned.safetensors"), base=str(tmp_path / "base.safetensors"),
                                   reference_rank=8, base_metrics=False))
    for m in report.modules:
        k = ranks[m.name]
        assert m.energy_rank["0.99"] == k and m.kind == "full" and m.rank is None
        assert len(m.singular_values) == 64 and m.num_singular_values == 80  # >= top 64 kept
        reference = np.linalg.svd(deltas[m.name], compute_uv=False)
        assert _relative(m.singular_values, reference[:64]) < 1e-5
        assert m.verdict == ("raise r" if k > 8 else "lower r" if k <= 4 else "adequate")
    double = analyze(AnalyzeConfig(str(tmp_path / "tuned.safetensors"), base=str(tmp_path / "base.safetensors"),
                                   dtype="float64", base_metrics=False))
    for m in double.modules:
        reference = np.linalg.svd(deltas[m.name], compute_uv=False)
        assert _relative(m.singular_values, reference[:64]) < 1e-12


def test_bf16_sharded_pair_and_gpt2_conv1d_shapes(tmp_path):
    base, tuned = tiny("gpt2"), tiny("gpt2")
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        tuned.transformer.h[1].mlp.c_fc.weight.add_(0.25)
    base.to(torch.bfloat16).save_pretrained(tmp_path / "base", max_shard_size="40KB")
    tuned.to(torch.bfloat16).save_pretrained(tmp_path / "tuned", max_shard_size="40KB")
    assert (tmp_path / "tuned" / "model.safetensors.index.json").is_file()
    report = analyze(AnalyzeConfig(str(tmp_path / "tuned"), base=str(tmp_path / "base"), base_metrics=False))
    (module,) = report.modules
    assert module.name == "transformer.h.1.mlp.c_fc" and module.shape == (128, 32) and module.layer_kind == "conv1d"
    delta = (tuned.transformer.h[1].mlp.c_fc.weight.float() - base.transformer.h[1].mlp.c_fc.weight.float()).detach()
    assert _relative(module.singular_values, np.linalg.svd(delta.double().numpy(), compute_uv=False)) < 1e-5
    assert "transformer.h.0.attn.c_attn" in report.unchanged


def _left(delta: np.ndarray, k: int) -> np.ndarray:
    return np.linalg.svd(delta)[0][:, :k]


def test_against_phi_grid_and_angles_agree_with_scipy(tmp_path):
    base = tiny("bert")
    save_base(base, tmp_path / "base")
    state = base.state_dict()
    small = peft_adapter(tmp_path / "r4", base, 4, ["query", "value"], seed=1)
    other = tiny("bert")
    other.load_state_dict(state)
    large = peft_adapter(tmp_path / "r8", other, 8, ["query", "value"], seed=2)
    report = analyze(AnalyzeConfig(str(tmp_path / "r4"), against=str(tmp_path / "r8"), base=str(tmp_path / "base")))
    mine, theirs = peft_deltas(small), peft_deltas(large)
    assert len(report.comparisons) == 4 and len(report.against_modules) == 4
    for c in report.comparisons:
        u1, u2 = _left(mine[c.name], 4), _left(theirs[c.other_name], 8)
        assert c.k == 4 and c.dim == 32 and c.phi_random == pytest.approx(4 / 32)
        expected = np.degrees(np.sort(scipy.linalg.subspace_angles(u1, u2[:, :4])))
        np.testing.assert_allclose(c.principal_angles_deg, expected, atol=1e-6)
        assert c.phi == pytest.approx(np.mean(np.cos(np.radians(expected)) ** 2), abs=1e-9)
        grid = np.asarray(c.phi_grid)
        assert grid.shape == (4, 8)
        for i, j in ((1, 1), (2, 7), (4, 8)):
            value = np.linalg.norm(u1[:, :i].T @ u2[:, :j]) ** 2 / min(i, j)
            assert grid[i - 1, j - 1] == pytest.approx(value, abs=1e-5)
        assert c.grassmann_distance == pytest.approx(np.linalg.norm(np.radians(expected)), abs=1e-8)


def test_lora_against_full_and_base_metrics_match_numpy(tmp_path):
    base = tiny("bert")
    save_base(base, tmp_path / "base")
    full = tiny("bert")
    full.load_state_dict(base.state_dict())
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in full.named_parameters():
            if param.ndim == 2 and "embeddings" not in name:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    full.save_pretrained(tmp_path / "full")
    w0 = {n: p.detach().double().numpy() for n, p in base.named_parameters()}
    wrapped = peft_adapter(tmp_path / "lora", base, 2, ["query", "value"])
    report = analyze(AnalyzeConfig(str(tmp_path / "lora"), base=str(tmp_path / "base"), against=str(tmp_path / "full")))
    assert report.against_kind == "full" and report.not_in_base == ("classifier",)
    assert "bert.encoder.layer.0.intermediate.dense" in report.only_in_against
    assert all(m.reference_rank == 2 for m in report.against_modules)  # full judged at the LoRA rank
    for m in report.modules:
        delta, weight = peft_deltas(wrapped)[m.name], w0[m.name + ".weight"]
        u, s, vt = np.linalg.svd(delta)
        projected = np.linalg.norm(u[:, :2].T @ weight @ vt[:2].T)
        assert m.amplification.factor == pytest.approx(np.linalg.norm(s) / projected, rel=1e-6)
        u0, u1 = np.linalg.svd(weight)[0], np.linalg.svd(weight + delta)[0][:, :10]
        max_cos = np.abs(u1.T @ u0).max(axis=1)
        assert m.intruders.count == int((max_cos < 0.5).sum())
        np.testing.assert_allclose(m.intruders.max_cos, max_cos, atol=1e-4)


def test_report_round_trips_through_the_json_contract(tmp_path):
    peft_adapter(tmp_path / "a", tiny("llama"), 4, ["q_proj", "v_proj"])
    peft_adapter(tmp_path / "b", tiny("llama"), 8, ["q_proj", "v_proj"], seed=5)
    report = analyze(AnalyzeConfig(str(tmp_path / "a"), against=str(tmp_path / "b")))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["schema"] == "lowrank.analysis/1"
    for module in data["modules"]:
        assert {"name", "shape", "kind", "rank", "singular_values", "energy_rank", "effective_rank", "stable_rank",
                "verdict", "suggested_rank"} <= set(module)
        assert {"0.9", "0.99"} <= set(module["energy_rank"]) and not module["name"].startswith("base_model")
    for comparison in data["comparisons"]:
        assert {"name", "k", "phi", "principal_angles_deg"} <= set(comparison)
    assert AnalysisReport.from_dict(data) == report


def test_progress_reports_every_module(tmp_path):
    peft_adapter(tmp_path / "a", tiny("llama"), 2, ["q_proj", "v_proj", "o_proj"])
    events = []
    threads = torch.get_num_threads()
    report = analyze(AnalyzeConfig(str(tmp_path / "a")), events.append)
    assert torch.get_num_threads() == threads  # the single-threaded factored SVDs restore the setting
    assert [e.done for e in events] == list(range(1, 7)) and {e.total for e in events} == {6}
    assert [e.info for e in events] == [m.name for m in report.modules]


def test_modules_filter_and_config_validation(tmp_path):
    peft_adapter(tmp_path / "a", tiny("llama"), 2, ["q_proj", "v_proj"])
    report = analyze(AnalyzeConfig(str(tmp_path / "a"), modules=r"layers\.1\..*q_proj"))
    assert [m.name for m in report.modules] == ["model.layers.1.self_attn.q_proj"]
    with pytest.raises(LowrankError, match="matches --modules"):
        analyze(AnalyzeConfig(str(tmp_path / "a"), modules="nothing_like_this"))
    bad_device = {"device": "cuda:0" if not torch.cuda.is_available() else "cuda:4096"}
    for bad in ({"dtype": "float16"}, {"k": 0}, {"reference_rank": 0}, {"intruder_epsilon": 0.0},
                {"modules": "("}, {"device": "tpu"}, bad_device):
        with pytest.raises(LowrankError):
            AnalyzeConfig("x", **bad)


def test_refusals_full_without_base_and_dora(tmp_path):
    planted_pair(tmp_path, {"a": 2})
    with pytest.raises(LowrankError, match="pass --base"):
        analyze(AnalyzeConfig(str(tmp_path / "tuned.safetensors")))
    peft_adapter(tmp_path / "dora", tiny("llama"), 2, ["q_proj"], use_dora=True)
    with pytest.raises(LowrankError, match="DoRA"):
        analyze(AnalyzeConfig(str(tmp_path / "dora")))
