"""extract and resize: exact cases on tiny random-init models, peft loading, and one real MiniLM-L6 check."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model

from lowrank import adapters, spectra
from lowrank.compress import ExtractConfig, RankTarget, ResizeConfig, extract, resize
from lowrank.compress import factors
from lowrank.errors import LowrankError
from lowrank.tiny_models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _ids():
    return torch.randint(1, 1000, (2, 9), generator=torch.Generator().manual_seed(3))


def _tuned(base, ranks, seed=1, one_d=True):
    """``base`` plus a rank ``ranks(name)`` delta on every 2-D non-embedding weight (and noise on 1-D ones)."""
    tuned = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if param.ndim == 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                k = ranks(name)
                param += 0.1 * torch.randn(param.shape[0], k, generator=generator) @ torch.randn(
                    k, param.shape[1], generator=generator)
            elif param.ndim == 1 and one_d:
                param += 0.01 * torch.randn(param.shape, generator=generator)
    return tuned


def _pair(tmp_path, family="bert", ranks=lambda name: 3, one_d=True):
    base = tiny_model(family, "classification")
    tuned = _tuned(base, ranks, one_d=one_d)
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    return base, tuned


def _assert_merged_equal(base, tuned, folder, atol=1e-5):
    merged = PeftModel.from_pretrained(copy.deepcopy(base), folder).merge_and_unload().state_dict()
    expected = tuned.state_dict()
    for key, value in merged.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
def test_extract_at_the_delta_rank_merges_to_the_tuned_weights_in_peft(family, tmp_path):
    base, tuned = _pair(tmp_path, family)
    heads = "classifier" if family == "bert" else "score"
    saved = (heads, "LayerNorm") if family == "bert" else (heads, "ln_1", "ln_2", "ln_f") if family == "gpt2" else (
        heads, "input_layernorm", "post_attention_layernorm", "norm")
    config = ExtractConfig(str(tmp_path / "tuned"), str(tmp_path / "base"), tmp_path / "ad", RankTarget(rank=4),
                           save_modules=saved, bias="all")
    report = extract(config)
    assert report.not_carried == {}
    assert all(m.rank == 4 and m.relative_error < 1e-5 for m in report.modules)
    _assert_merged_equal(base, tuned, tmp_path / "ad")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ad").eval()
    torch.testing.assert_close(peft_model(_ids()).logits, tuned(_ids()).logits, rtol=1e-4, atol=1e-4)


def test_extract_by_energy_writes_per_module_ranks_that_peft_and_lowrank_resolve(tmp_path):
    ranks = lambda name: 1 if "query" in name else 2 if "intermediate" in name else 3  # noqa: E731
    base, tuned = _pair(tmp_path, ranks=ranks, one_d=False)
    report = extract(ExtractConfig(str(tmp_path / "tuned"), str(tmp_path / "base"), tmp_path / "ad",
                                   RankTarget(energy=0.99999)))
    got = {m.name: m.rank for m in report.modules}
    assert got == {m.name: ranks(m.name) for m in report.modules}
    settings = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert settings["r"] == 3 and settings["rank_pattern"] and settings["alpha_pattern"] == settings["rank_pattern"]
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ad")
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            short = name.removeprefix("base_model.model.")
            assert module.r["default"] == got[short] and module.scaling["default"] == 1.0
    _assert_merged_equal(base, tuned, tmp_path / "ad")
    ours = copy.deepcopy(base)
    adapters.load_adapter(ours, tmp_path / "ad")
    torch.testing.assert_close(ours.eval()(_ids()).logits, tuned(_ids()).logits, rtol=1e-4, atol=1e-4)


def test_extract_below_the_delta_rank_is_the_best_approximation_and_reports_what_is_left_out(tmp_path):
    base, tuned = _pair(tmp_path, ranks=lambda name: 6)
    report = extract(ExtractConfig(str(tmp_path / "tuned"), str(tmp_path / "base"), tmp_path / "ad",
                                   RankTarget(rank=2)))
    for update in adapters.iter_lora_updates(tmp_path / "ad"):
        delta = tuned.get_submodule(update.name).weight - base.get_submodule(update.name).weight
        s = torch.linalg.svdvals(delta.double())
        error = torch.linalg.matrix_norm(update.scale * update.B @ update.A - delta) / torch.linalg.matrix_norm(delta)
        record = next(m for m in report.modules if m.name == update.name)
        assert math.isclose(float(error), math.sqrt(float((s[2:] ** 2).sum() / (s**2).sum())), rel_tol=1e-3)
        assert math.isclose(record.relative_error, float(error), rel_tol=1e-3)
        assert math.isclose(record.kept_energy, 1 - record.relative_error**2, rel_tol=1e-6)
        # singular values split evenly: column i of B and row i of A have the same norm, sqrt(S_i)
        torch.testing.assert_close(update.B.norm(dim=0), update.A.norm(dim=1), rtol=1e-4, atol=1e-6)
    assert "bert.embeddings.LayerNorm.weight" in report.not_carried  # changed, not carried without --save-modules
    assert set(report.carried) == {"classifier.weight", "classifier.bias"}


def test_extract_embeddings(tmp_path):
    base = tiny_model("bert", "classification")
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.bert.embeddings.word_embeddings.weight += torch.randn(1000, 2) @ torch.randn(2, 32) * 0.1
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned")
    report = extract(ExtractConfig(str(tmp_path / "tuned"), str(tmp_path / "base"), tmp_path / "ad",
                                   RankTarget(rank=2), embeddings=True))
    assert [m.name for m in report.modules] == ["bert.embeddings.word_embeddings"]
    assert len(report.unchanged) > 5
    _assert_merged_equal(base, tuned, tmp_path / "ad")


def _peft_adapter(tmp_path, family="llama", **settings):
    base = tiny_model(family, "causal-lm")
    config = PeftLoraConfig(init_lora_weights=False, **settings)
    model = get_peft_model(copy.deepcopy(base), config)
    model.save_pretrained(tmp_path / "adapter")
    return base, model


def _deltas(folder):
    return {u.name: u.scale * u.B.double() @ u.A.double() for u in adapters.iter_lora_updates(folder)}


@pytest.mark.parametrize("rslora", [False, True])
def test_resize_to_its_own_rank_reproduces_the_adapter(tmp_path, rslora):
    base, model = _peft_adapter(tmp_path, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "embed_tokens"],
                                rank_pattern={"v_proj": 4}, alpha_pattern={"q_proj": 5}, use_rslora=rslora)
    resize(ResizeConfig(str(tmp_path / "adapter"), tmp_path / "same", RankTarget(rank=8)))
    before, after = _deltas(tmp_path / "adapter"), _deltas(tmp_path / "same")
    for name, delta in before.items():
        assert float((after[name] - delta).abs().max()) <= 1e-6 * max(1.0, float(delta.abs().max())), name
    new = adapters.read_adapter_config(tmp_path / "same")
    old = adapters.read_adapter_config(tmp_path / "adapter")
    for name in before:
        assert new.rank_for(name) == old.rank_for(name)
        assert math.isclose(new.scaling_for(name, new.rank_for(name)), old.scaling_for(name, old.rank_for(name)))
    assert new.use_rslora == rslora
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "same").eval()
    torch.testing.assert_close(reloaded(_ids()).logits, model.eval()(_ids()).logits, rtol=1e-4, atol=1e-5)


def test_resize_down_keeps_the_best_rank_k_part_and_each_module_s_scaling(tmp_path):
    base, model = _peft_adapter(tmp_path, r=8, lora_alpha=16, target_modules=["q_proj", "down_proj"],
                                rank_pattern={"down_proj": 6})
    report = resize(ResizeConfig(str(tmp_path / "adapter"), tmp_path / "small", RankTarget(rank=3)))
    before, after = _deltas(tmp_path / "adapter"), _deltas(tmp_path / "small")
    for name, delta in before.items():
        u, s, vh = torch.linalg.svd(delta)
        best = (u[:, :3] * s[:3]) @ vh[:3]
        torch.testing.assert_close(after[name], best, rtol=1e-5, atol=1e-7 * float(best.abs().max()))
    settings = json.loads((tmp_path / "small" / "adapter_config.json").read_text())
    assert settings["r"] == 3 and settings["rank_pattern"] == {}
    # q_proj had s = 16/8 = 2, down_proj 16/6: alpha' = 3 s, so 6 and 8, one as default, one as pattern
    assert {round(a, 6) for a in [settings["lora_alpha"], *settings["alpha_pattern"].values()]} == {6.0, 8.0}
    new, old = adapters.read_adapter_config(tmp_path / "small"), adapters.read_adapter_config(tmp_path / "adapter")
    for name in before:
        assert math.isclose(new.scaling_for(name, 3), old.scaling_for(name, old.rank_for(name)))
    assert {m.original_rank for m in report.modules} == {8, 6}
    PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "small")


def test_resize_by_energy_and_carries_modules_to_save(tmp_path):
    base = tiny_model("bert", "classification")
    config = PeftLoraConfig(r=6, lora_alpha=6, target_modules=["query", "value"], init_lora_weights=False,
                            task_type="SEQ_CLS")
    model = get_peft_model(copy.deepcopy(base), config)
    model.save_pretrained(tmp_path / "adapter")
    report = resize(ResizeConfig(str(tmp_path / "adapter"), tmp_path / "e", RankTarget(energy=0.5)))
    assert all(m.kept_energy >= 0.5 and m.rank < 6 for m in report.modules)
    assert any(key.startswith("classifier") for key in report.carried)
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "e")
    for name, module in reloaded.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            record = next(m for m in report.modules if m.name == name.removeprefix("base_model.model."))
            assert module.r["default"] == record.rank


def test_rank_target_and_factor_checks():
    for bad in ({}, {"rank": 2, "energy": 0.5}, {"energy": 0.0}, {"energy": 1.5}, {"rank": 0}):
        with pytest.raises(LowrankError):
            RankTarget(**bad)
    s = torch.tensor([3.0, 2.0, 1.0])
    assert factors.choose_rank(s, RankTarget(energy=1.0), 3) == 3
    assert factors.choose_rank(s, RankTarget(energy=9 / 14), 3) == 1
    assert factors.choose_rank(s, RankTarget(rank=10), 2) == 2
    svd = spectra.dense_svd(torch.diag(s))
    B, A = factors.split_factors(svd, 2, 4.0)
    torch.testing.assert_close(4.0 * B @ A, torch.diag(torch.tensor([3.0, 2.0, 0.0])))


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_bad_input_gives_one_error_line_and_writes_nothing(invoke, tmp_path):
    _pair(tmp_path)
    from transformers import AutoModelForSequenceClassification

    from lowrank.tiny_models import tiny_config

    wider = tiny_config("bert")
    wider.hidden_size = 48  # same module names, other shapes
    AutoModelForSequenceClassification.from_config(wider).save_pretrained(tmp_path / "other")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep")
    tuned, base = tmp_path / "tuned", tmp_path / "base"
    cases = [("extract", tuned, "--base", base, "--rank", 2, "--energy", 0.5, "--out", tmp_path / "o1"),
             ("extract", tuned, "--base", base, "--energy", 1.5, "--out", tmp_path / "o2"),
             ("extract", tuned, "--base", base, "--energy", 0, "--out", tmp_path / "o3"),
             ("extract", tuned, "--base", tmp_path / "other", "--rank", 2, "--out", tmp_path / "o4"),
             ("extract", tuned, "--base", base, "--rank", 2, "--out", tmp_path / "full"),
             ("extract", tuned, "--base", base, "--out", tmp_path / "o5"),
             ("resize", tmp_path / "missing", "--rank", 2, "--out", tmp_path / "o6"),
             ("resize", tuned, "--rank", 2, "--out", tmp_path / "o7")]
    for args in cases:
        result = invoke(*args)
        lines = _error_lines(result)
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error:"), (args, result.stderr)
    assert "shape" in _error_lines(invoke(*cases[3]))[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "full", "other", "tuned"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x.txt"]


def test_cli_extract_then_resize_json(invoke, tmp_path):
    _pair(tmp_path)
    result = invoke("extract", tmp_path / "tuned", "--base", tmp_path / "base", "--rank", 3, "--out", tmp_path / "a",
                    "--quiet")
    assert result.exit_code == 0 and "kept energy" in result.stdout
    assert json.loads((tmp_path / "a" / "compress_report.json").read_text())["schema"] == "lowrank.compress/1"
    result = invoke("resize", tmp_path / "a", "--rank", 1, "--out", tmp_path / "b", "--json", "-")
    data = json.loads(result.stdout)
    assert data["command"] == "resize" and {m["rank"] for m in data["modules"]} == {1}


def test_extract_a_real_minilm_delta_and_evaluate_it(tmp_path, r8_csv):
    """Real MiniLM-L6 weights (the registry's encoder as base) and real Reuters texts: a rank-2 delta on the
    attention of two layers is recovered exactly, so the adapter scores what the tuned model scores."""
    from lowrank.assets import load_classifier, resolve_model_path

    from lowrank.compress import EvalConfig

    model, tokenizer = load_classifier("minilm-l6", 8)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (0, 3):
            weight = model.bert.encoder.layer[layer].attention.self.query.weight
            weight += 0.05 * torch.randn(384, 2, generator=generator) @ torch.randn(2, 384, generator=generator)
        model.classifier.weight.normal_(0, 0.5, generator=generator)
    model.save_pretrained(tmp_path / "tuned")
    tokenizer.save_pretrained(tmp_path / "tuned")
    evaluation = EvalConfig(str(r8_csv), max_length=64, batch_size=32, device="cpu", bf16=False)
    report = extract(ExtractConfig(str(tmp_path / "tuned"), "minilm-l6", tmp_path / "ad", RankTarget(rank=2),
                                   evaluation=evaluation))
    assert [m.name for m in report.modules] == ["bert.encoder.layer.0.attention.self.query",
                                                "bert.encoder.layer.3.attention.self.query"]
    assert len(report.unchanged) == 35 and all(m.relative_error < 1e-5 for m in report.modules)
    assert report.evaluation.metric == "accuracy" and report.evaluation.compressed["examples"] == 60
    assert report.evaluation.compressed["accuracy"] == report.evaluation.original["accuracy"]
    assert report.evaluation.compressed["loss"] == pytest.approx(report.evaluation.original["loss"], abs=1e-4)
    assert resolve_model_path("minilm-l6").is_dir()


def test_writer_takes_column_major_rank_one_factors(tmp_path):
    """A CUDA SVD returns U column-major: U[:, :1] is (m, 1) with stride (1, m), which torch calls contiguous."""
    from safetensors.torch import load_file

    from lowrank.compress.writer import AdapterWriter

    column = torch.randn(3, 5).T[:, :1]  # (5, 1), strides (1, 5)
    assert column.stride() == (1, 5) and column.is_contiguous()
    writer = AdapterWriter(tmp_path)
    writer.add_lora("m", column, torch.randn(1, 4), "linear")
    writer.close({"r": 1})
    loaded = load_file(str(tmp_path / "adapter_model.safetensors"))
    torch.testing.assert_close(loaded["base_model.model.m.lora_B.weight"], column)
