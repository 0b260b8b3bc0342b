"""lowrank's adapters against real peft, minGPT-style: same factors, same outputs, in both directions."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from lowrank import adapters, lora
from lowrank.errors import LowrankError
from lowrank.tiny_models import tiny_model

TARGETS = {"gpt2": ("c_attn", "c_fc"), "llama": ("q_proj", "v_proj", "down_proj"), "bert": ("query", "value")}
EMBEDDINGS = {"gpt2": "wte", "llama": "embed_tokens", "bert": "word_embeddings"}


def _ids():
    return torch.randint(1, 1000, (2, 11), generator=torch.Generator().manual_seed(3))


def _randomize_lora(model, seed=5):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora.lora_layers(model).values():
            layer.lora_A.normal_(0, 0.3, generator=generator)
            layer.lora_B.normal_(0, 0.3, generator=generator)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_lowrank_adapter_loads_in_peft_with_identical_outputs(family, tmp_path):
    base = tiny_model(family, "classification")
    model = copy.deepcopy(base)
    config = lora.LoraConfig(r=4, alpha=8, targets=lora.Targets(suffixes=TARGETS[family] + (EMBEDDINGS[family],)),
                             rank_pattern={"layers?\\.1\\..*": 2} if family != "gpt2" else {"h.1.attn.c_attn": 2},
                             alpha_pattern={TARGETS[family][0]: 3.0}, use_rslora=True,
                             trainable_modules=("score",) if family != "bert" else ("classifier",))
    adapted = lora.inject(model, config)
    lora.mark_trainable(model, config.trainable_modules)
    _randomize_lora(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if lora.is_under(name.rpartition(".")[0], config.trainable_modules):
                param.normal_()
    adapters.save_adapter(tmp_path, model, config, adapted, "tiny", "SEQ_CLS")
    ours = model.eval()(_ids()).logits
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    torch.testing.assert_close(peft_model(_ids()).logits, ours, rtol=1e-5, atol=1e-5)
    assert len(lora.lora_layers(model)) == len([m for m in peft_model.modules() if hasattr(m, "lora_A")])


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_peft_adapter_loads_in_lowrank_with_identical_outputs(family, tmp_path):
    base = tiny_model(family, "causal-lm" if family != "bert" else "classification")
    targets = list(TARGETS[family]) + [EMBEDDINGS[family]]
    peft_config = PeftLoraConfig(r=4, lora_alpha=8, target_modules=targets, use_rslora=True,
                                 rank_pattern={targets[0]: 2}, alpha_pattern={targets[1]: 5},
                                 fan_in_fan_out=family == "gpt2", init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), peft_config).eval()
    peft_model.save_pretrained(tmp_path)
    ours = copy.deepcopy(base)
    adapters.load_adapter(ours, tmp_path)
    torch.testing.assert_close(ours.eval()(_ids()).logits, peft_model(_ids()).logits, rtol=1e-5, atol=1e-5)

    peft_deltas = {name.removeprefix("base_model.model."): module.get_delta_weight("default")
                   for name, module in peft_model.named_modules() if hasattr(module, "get_delta_weight")}
    updates = list(adapters.iter_lora_updates(tmp_path))
    assert {u.name for u in updates} == set(peft_deltas)
    for update in updates:
        delta = update.scale * update.B @ update.A
        expected = peft_deltas[update.name]
        expected = expected.T if update.kind == "conv1d" else expected
        torch.testing.assert_close(delta, expected, rtol=1e-5, atol=1e-6)


def _peft_adapter(tmp_path, **settings):
    model = get_peft_model(tiny_model("llama", "causal-lm"),
                           PeftLoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False, **settings))
    model.save_pretrained(tmp_path)
    return tmp_path


def test_dora_factors_alone_are_not_its_update(tmp_path):
    with pytest.raises(LowrankError, match="DoRA adapter's update depends on the base"):
        list(adapters.iter_lora_updates(_peft_adapter(tmp_path, use_dora=True)))


@pytest.mark.parametrize("init", ["pissa_niter_4", "corda", "loftq"])
def test_unrecoverable_inits_are_refused_by_name(tmp_path, init):
    folder = _peft_adapter(tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | {"init_lora_weights": init}))
    with pytest.raises(LowrankError, match=f"adapter_config.json: init_lora_weights='{init}'.*cannot be recovered"):
        adapters.read_adapter_config(folder)


def test_lora_a_without_b_is_refused(tmp_path):
    folder = _peft_adapter(tmp_path)
    tensors = load_file(folder / "adapter_model.safetensors")
    save_file({k: v for k, v in tensors.items() if "layers.0" not in k or "lora_A" in k},
              folder / "adapter_model.safetensors")
    with pytest.raises(LowrankError, match="no lora_B"):
        list(adapters.iter_lora_updates(folder))


def test_nan_weights_are_refused(tmp_path):
    folder = _peft_adapter(tmp_path)
    tensors = load_file(folder / "adapter_model.safetensors")
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key][0, 0] = float("nan")
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(LowrankError, match="NaN"):
        list(adapters.iter_lora_updates(folder))


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"lora_alpha": 8}'])
def test_malformed_config_is_refused(tmp_path, text):
    (tmp_path / "adapter_config.json").write_text(text)
    with pytest.raises(LowrankError, match="adapter_config.json"):
        adapters.read_adapter_config(tmp_path)


def test_truncated_weights_are_refused(tmp_path):
    folder = _peft_adapter(tmp_path)
    data = (folder / "adapter_model.safetensors").read_bytes()
    (folder / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(LowrankError, match="safetensors"):
        list(adapters.iter_lora_updates(folder))


def test_null_target_modules_stand_for_the_modules_in_the_file(tmp_path, tiny_bert_folder, r8_csv, invoke):
    """peft fills target_modules: null with the architecture's defaults; the file's own modules stand in here."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "adapter"
    result = invoke("train", "--model", str(tiny_bert_folder), "--data", str(r8_csv), "--rank", "2", "--out", str(out),
                    "--steps", "2", "--batch-size", "8", "--max-length", "32", "--quiet")
    assert result.exit_code == 0, result.output
    config_path = out / "adapter_config.json"
    settings = json.loads(config_path.read_text())
    settings["target_modules"] = None
    config_path.write_text(json.dumps(settings))
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=8)
    adapted = adapters.load_adapter(model, out)
    assert adapted and all(name.endswith(("query", "value")) for name in adapted)
    assert len(list(adapters.iter_lora_updates(out))) == len(adapted)


def test_merged_qkv_lora_is_refused_by_name(tmp_path):
    settings = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                "enable_lora": [True, False, True]}
    (tmp_path / "adapter_config.json").write_text(json.dumps(settings))
    with pytest.raises(LowrankError, match="adapter_config.json: enable_lora="):
        adapters.read_adapter_config(tmp_path)


@pytest.mark.parametrize("settings, what", [
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "a model's config.json"),
    ({"fine_tune_type": "lora", "lora_parameters": {"rank": 8}}, "an MLX-LM adapter config"),
    ({"config": {"architecture": "lora", "r": 8}, "model_class": "BertModel"}, "an AdapterHub"),
    ({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8}, "PROMPT_TUNING is not a LoRA adapter"),
])
def test_foreign_configs_are_refused_by_what_they_are(tmp_path, settings, what):
    (tmp_path / "adapter_config.json").write_text(json.dumps(settings))
    with pytest.raises(LowrankError, match=f"adapter_config.json.*{what}"):
        adapters.read_adapter_config(tmp_path)


def test_pickled_adapter_bin_is_read_only_with_opt_in(tmp_path):
    """Old peft wrote adapter_model.bin (pickle): refused by default, read with weights_only=True on opt-in."""
    from lowrank.analysis.run import AnalyzeConfig, analyze

    model = get_peft_model(tiny_model("llama", "causal-lm"), PeftLoraConfig(r=4, target_modules=["q_proj"],
                                                                           init_lora_weights=False))
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").is_file() and not (tmp_path / "adapter_model.safetensors").exists()
    with pytest.raises(LowrankError, match="adapter_model.bin is a pickle file.*--allow-pickle"):
        analyze(AnalyzeConfig(str(tmp_path)))
    report = analyze(AnalyzeConfig(str(tmp_path), allow_pickle=True))
    expected = {n.removeprefix("base_model.model."): m.get_delta_weight("default").double().detach().numpy()
                for n, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    assert {m.name for m in report.modules} == set(expected)
    for module in report.modules:
        reference = np.linalg.svd(expected[module.name], compute_uv=False)[:4]
        np.testing.assert_allclose(module.singular_values, reference, rtol=1e-6)


def test_modules_to_save_as_one_string_names_one_module(tmp_path):
    settings = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
                "modules_to_save": "classifier"}
    (tmp_path / "adapter_config.json").write_text(json.dumps(settings))
    assert adapters.read_adapter_config(tmp_path).modules_to_save == ("classifier",)
