"""The true update of peft's LoRA variants, against real peft in float64: DoRA, AdaLoRA, PiSSA and OLoRA
(unconverted, with the base; converted, without), block-diagonal LoRA, Conv2d LoRA, and peft options that change
which modules an adapter holds (layers_to_transform, exclude_modules, regex targets, modules_to_save)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from peft import AdaLoraConfig, LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.config import BdLoraConfig
from torch import nn

from lowrank.analysis.run import AnalyzeConfig, analyze
from lowrank.errors import LowrankError
from lowrank.render import side_notes
from lowrank.tiny_models import tiny_model

PREFIX = "base_model.model."


def _perturb(model, seed=1, scale=0.2):
    """Stand-in for training: every adapter tensor moved by seeded noise."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ("lora_", "modules_to_save")):
                param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * scale)


def _merged_deltas(peft_model, base) -> dict[str, np.ndarray]:
    """(merged weight - original base weight) per adapted module, in float64, as (out, in) matrices."""
    merged = copy.deepcopy(peft_model).double().merge_and_unload()
    original = dict(base.double().named_modules())
    deltas = {}
    for name, module in merged.named_modules():
        if name in adapted_names(peft_model):
            delta = (module.weight - original[name].weight).detach().numpy()
            deltas[name] = delta.reshape(delta.shape[0], -1)
    return deltas


def adapted_names(peft_model) -> set[str]:
    return {name.removeprefix(PREFIX) for name, module in peft_model.named_modules()
            if hasattr(module, "lora_A") and len(module.lora_A)}


def _save(tmp_path, peft_model, base, **save_options):
    base.save_pretrained(tmp_path / "base")
    peft_model.save_pretrained(tmp_path / "adapter", **save_options)
    return str(tmp_path / "adapter"), str(tmp_path / "base")


def _assert_spectra_equal(report, deltas, tolerance=1e-6):
    assert {m.name for m in report.modules} == set(deltas)
    for module in report.modules:
        reference = np.linalg.svd(deltas[module.name], compute_uv=False)
        ours = np.asarray(module.singular_values)
        assert abs(ours[0] - reference[0]) <= tolerance * reference[0], module.name
        assert np.max(np.abs(ours - reference[: ours.size])) <= tolerance * reference[0], module.name


def test_dora_update_equals_peft_merged_weights_minus_base(tmp_path):
    base = tiny_model("llama", "causal-lm")
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, use_dora=True,
                                                           target_modules=["q_proj", "down_proj"]))
    _perturb(model)
    adapter, base_folder = _save(tmp_path, model, base)
    report = analyze(AnalyzeConfig(adapter, base=base_folder, dtype="float64"))
    _assert_spectra_equal(report, _merged_deltas(model, base))
    module = report.modules[0]
    assert module.variant == "dora" and module.dora is not None
    assert len(module.dora.directional_singular_values) == 4 and module.dora.magnitude_change > 0
    assert module.num_singular_values == min(module.shape)  # a full-rank update, not rank r
    with pytest.raises(LowrankError, match="DoRA adapter's update depends on the base weights W0; pass --base"):
        analyze(AnalyzeConfig(adapter))


def test_adalora_update_equals_peft_delta_after_pruning(tmp_path):
    base = tiny_model("llama", "causal-lm")
    config = AdaLoraConfig(init_r=6, target_r=2, lora_alpha=16, total_step=10, tinit=1, tfinal=1,
                           target_modules=["q_proj", "v_proj"])
    model = get_peft_model(copy.deepcopy(base), config)
    _perturb(model)
    model.base_model.peft_config["default"].rank_pattern = {  # a budget that pruned to different ranks
        f"model.layers.{i}.self_attn.{p}.lora_E": [j < 2 + i for j in range(6)]
        for i in range(2) for p in ("q_proj", "v_proj")}
    adapter, base_folder = _save(tmp_path, model, base)
    report = analyze(AnalyzeConfig(adapter, base=base_folder, dtype="float64"))
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), adapter)  # what peft applies: the pruned file
    deltas = {n.removeprefix(PREFIX): m.get_delta_weight("default").double().detach().numpy()
              for n, m in loaded.named_modules() if hasattr(m, "lora_E")}
    _assert_spectra_equal(report, deltas)
    assert sorted({m.rank for m in report.modules}) == [2, 3]
    assert all(m.variant == "adalora" for m in report.modules)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_recover_the_update_from_the_base_and_match_the_converted_adapter(tmp_path, init):
    base = tiny_model("llama", "causal-lm")
    config = LoraConfig(r=4, lora_alpha=4, init_lora_weights=init, target_modules=["q_proj", "gate_proj"])
    model = get_peft_model(copy.deepcopy(base), config)  # replaces the base weights by W0 - s B0 A0
    model.save_pretrained(tmp_path / "init")
    _perturb(model, scale=0.05)
    adapter, base_folder = _save(tmp_path, model, base)
    model.save_pretrained(tmp_path / "converted", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    reference = {name: m.weight.detach().double().numpy() - dict(base.named_modules())[name].weight.detach()
                 .double().numpy() + m.get_delta_weight("default").double().detach().numpy()
                 for name, m in ((n.removeprefix(PREFIX), m) for n, m in model.named_modules()
                                 if hasattr(m, "lora_A") and len(m.lora_A))}
    unconverted = analyze(AnalyzeConfig(adapter, base=base_folder, dtype="float64"))
    converted = analyze(AnalyzeConfig(str(tmp_path / "converted")))
    _assert_spectra_equal(unconverted, reference, tolerance=1e-5)  # peft's init ran in float32
    _assert_spectra_equal(converted, reference, tolerance=1e-5)
    assert {m.variant for m in unconverted.modules} == {init} and {m.rank for m in converted.modules} == {8}
    with pytest.raises(LowrankError, match="adapter's update depends on the base weights W0; pass --base"):
        analyze(AnalyzeConfig(adapter))


@pytest.mark.parametrize("side", ["a", "b"])
def test_block_diagonal_lora_equals_peft_delta(tmp_path, side):
    base = tiny_model("llama", "causal-lm")
    blocks = BdLoraConfig(target_modules_bd_a=["q_proj"] if side == "a" else [],
                          target_modules_bd_b=["q_proj"] if side == "b" else [], nblocks=2, match_strict=False)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"],
                                                           use_bdlora=blocks))
    _perturb(model)
    adapter, base_folder = _save(tmp_path, model, base)
    report = analyze(AnalyzeConfig(adapter, base=base_folder, dtype="float64"))
    _assert_spectra_equal(report, _merged_deltas(model, base))
    assert {tuple(m.shape) for m in report.modules if m.name.endswith("q_proj")} == {(32, 32)}


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.proj = nn.Conv2d(8, 6, 1)
        self.head = nn.Linear(6, 2)


def test_conv2d_lora_acts_as_the_flattened_matrix(tmp_path):
    torch.manual_seed(0)
    base = TinyConvNet()
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=3, target_modules=["conv", "proj"],
                                                           modules_to_save=["head"]))
    _perturb(model)
    folder = tmp_path / "base"
    folder.mkdir()
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, folder / "model.safetensors")
    model.save_pretrained(tmp_path / "adapter")
    report = analyze(AnalyzeConfig(str(tmp_path / "adapter"), base=str(folder), dtype="float64"))
    _assert_spectra_equal(report, _merged_deltas(model, base))
    assert {m.name: (m.layer_kind, tuple(m.shape)) for m in report.modules} == {
        "conv": ("conv", (8, 27)), "proj": ("conv", (6, 8))}
    assert [(f.name, f.parameters) for f in report.trained_in_full] == [("head", 14)]
    assert ("trained in full by the adapter (modules_to_save, heads, embeddings; not low-rank, not analyzed)",
            ("head (14 parameters)",)) in side_notes(report)


@pytest.mark.parametrize("options, expected", [
    ({"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1], "layers_pattern": "layers"},
     {"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}),
    ({"target_modules": "all-linear", "exclude_modules": ["o_proj", "gate_proj", "up_proj", "down_proj"]},
     {f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj")}),
    ({"target_modules": r".*\.0\.mlp\.(up|down)_proj", "rank_pattern": {"down_proj": 2},
      "alpha_pattern": {"up_proj": 11.0}, "use_rslora": True},
     {"model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}),
])
def test_peft_options_that_choose_modules_are_read_from_the_file(tmp_path, options, expected):
    base = tiny_model("llama", "causal-lm")
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, **options))
    _perturb(model)
    adapter, base_folder = _save(tmp_path, model, base)
    report = analyze(AnalyzeConfig(adapter, base=base_folder, dtype="float64"))
    deltas = _merged_deltas(model, base)
    assert set(deltas) == expected
    _assert_spectra_equal(report, deltas)
