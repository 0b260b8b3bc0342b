"""lowrank.analyze and lowrank.suggest_rank (lowrank/api.py) on real tiny models: a live model's report is the
CLI's report of its saved adapter, byte for byte but for ``checkpoint`` (which names the live model, there being no
folder), with and without data; the base comes from the adapter's base_model_name_or_path when local; bad input
raises LowrankError."""

from __future__ import annotations

import json

import pytest
import torch

import lowrank
from lowrank import lora
from lowrank.adapters import save_adapter
from lowrank.errors import LowrankError


def _randomized(model, seed: int = 1):
    """Every LoRA factor drawn at random (B too, so the update is not zero), scaled like an init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    return model


def _cli_json(invoke, folder, *options) -> str:
    result = invoke("analyze", folder, "--json", "-", "--device", "cpu", *options)
    assert result.exit_code == 0, result.output
    return result.stdout


def _as_saved(live_json: str, label: str, folder) -> str:
    """The live report's JSON with its checkpoint (the live model's label) named as the saved folder."""
    return live_json.replace(json.dumps(label), json.dumps(str(folder)), 1)


@pytest.fixture()
def peft_llama(tiny_llama_folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        rank_pattern={"down_proj": 2}, task_type="CAUSAL_LM")
    return _randomized(get_peft_model(model, config))


def test_live_peft_model_gives_the_cli_report_of_its_saved_adapter(peft_llama, tiny_llama_folder, invoke, tmp_path):
    live = lowrank.analyze(peft_llama, device="cpu")
    peft_llama.save_pretrained(tmp_path / "adapter")
    saved = _cli_json(invoke, tmp_path / "adapter")
    label = "PeftModelForCausalLM (in memory)"
    assert live.analysis.checkpoint == label and json.loads(saved)["checkpoint"] == str(tmp_path / "adapter")
    assert _as_saved(live.to_json(), label, tmp_path / "adapter") == saved
    report = json.loads(saved)  # W0 from the adapter's base_model_name_or_path, a local folder: base metrics ran
    assert report["base"] == str(tiny_llama_folder) and report["base_from"] == "base_model_name_or_path"
    assert all(m["amplification"] is not None and m["intruders"] is not None for m in report["modules"])
    assert {m["name"].rsplit(".", 1)[-1]: m["rank"] for m in report["modules"]} == \
        {"q_proj": 4, "v_proj": 4, "down_proj": 2}
    assert live.verdict == "not judged" and {m["verdict"] for m in report["modules"]} == {"not judged"}


def test_live_model_with_lowrank_layers_gives_the_report_of_its_saved_adapter(tiny_llama_folder, invoke, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    config = lora.LoraConfig(r=4, alpha=6.0, targets=lora.Targets.parse("q_proj,v_proj"), rank_pattern={"v_proj": 2},
                             use_rslora=True)
    adapted = lora.inject(model, config, torch.Generator().manual_seed(0))
    _randomized(model)
    live = lowrank.analyze(model, device="cpu")
    (tmp_path / "adapter").mkdir()
    save_adapter(tmp_path / "adapter", model, config, adapted, str(tiny_llama_folder), "CAUSAL_LM")
    saved = _cli_json(invoke, tmp_path / "adapter")
    assert _as_saved(live.to_json(), "LlamaForCausalLM (in memory)", tmp_path / "adapter") == saved
    settings = json.loads(saved)["settings"]["adapter"]
    assert settings["use_rslora"] and settings["rank_pattern"] == {"v_proj": 2} and settings["lora_alpha"] == 6.0
    module = live.analysis.modules[0]  # s = alpha / sqrt(r) with rsLoRA
    assert module.scale == pytest.approx(6.0 / 2.0) and module.rank == 4


def test_live_classifier_with_data_gives_the_cli_data_verdict(tiny_bert_folder, r8_csv, invoke, tmp_path):
    """A random head on a random-init BERT is no better than predicting R8's class frequencies: the data verdict
    (written through a temporary copy of the live adapter) is "collapsed", as the CLI finds for the saved one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder)
    peft_model = _randomized(get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"],
                                                              task_type="SEQ_CLS")))
    live = lowrank.analyze(peft_model, data=str(r8_csv), max_length=32, device="cpu")
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = json.loads(_cli_json(invoke, tmp_path / "adapter", "--data", str(r8_csv), "--max-length", "32"))
    mine = json.loads(_as_saved(live.to_json(), "PeftModelForSequenceClassification (in memory)",
                                tmp_path / "adapter"))
    seconds = (mine["sufficiency"].pop("seconds"), saved["sufficiency"].pop("seconds"))  # wall times
    assert mine == saved and min(seconds) > 0
    assert live.verdict == "collapsed" == saved["sufficiency"]["verdict"]
    assert saved["sufficiency"]["held_out"]["metrics"]["examples"] == 60
    assert saved["trained_in_full"] and saved["trained_in_full"][0]["name"] == "classifier"


def test_to_html_and_markdown_are_the_cli_files(peft_llama, invoke, tmp_path):
    peft_llama.save_pretrained(tmp_path / "adapter")
    report = lowrank.analyze(str(tmp_path / "adapter"), device="cpu")
    report.to_html(tmp_path / "api.html")
    report.to_markdown(tmp_path / "api.md")
    result = invoke("analyze", tmp_path / "adapter", "--device", "cpu", "--html", tmp_path / "cli.html",
                    "--markdown", tmp_path / "cli.md")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "api.md").read_text() == (tmp_path / "cli.md").read_text()
    html = (tmp_path / "api.html").read_text()
    assert html == (tmp_path / "cli.html").read_text()
    assert "from the adapter&#x27;s base_model_name_or_path" in html


def test_no_base_without_a_local_base_model_name_or_path(peft_llama, invoke, tmp_path, r8_csv):
    peft_llama.peft_config["default"].base_model_name_or_path = "some-org/some-model"  # a hub name: not read
    peft_llama.save_pretrained(tmp_path / "adapter")
    report = lowrank.analyze(peft_llama, device="cpu").analysis
    assert report.base is None and report.base_from is None and report.modules[0].amplification is None
    with pytest.raises(LowrankError, match="--data needs --base.*some-org/some-model, is not a local folder"):
        lowrank.analyze(peft_llama, data=str(r8_csv), device="cpu")
    result = invoke("analyze", tmp_path / "adapter", "--data", str(r8_csv))
    assert result.exit_code == 2 and "some-org/some-model" in result.stderr


def test_given_base_and_no_base_metrics(peft_llama, tiny_llama_folder):
    given = lowrank.analyze(peft_llama, base=str(tiny_llama_folder), device="cpu").analysis
    assert given.base_from == "given" and given.modules[0].amplification is not None
    plain = lowrank.analyze(peft_llama, base_metrics=False, device="cpu").analysis
    assert plain.base is None and plain.base_from is None


@pytest.mark.parametrize("model, fragment", [
    ("plain", "LlamaForCausalLM has no LoRA layers"),
    ("layers without config", "holds lowrank LoRA layers but no lowrank_lora_config"),
    ("peft layers without PeftModel", "holds peft LoRA layers but is not a peft PeftModel"),
    (42, "analyze takes a path or a torch model, not int"),
])
def test_bad_models_raise_lowrank_errors(model, fragment, tiny_llama_folder):
    from transformers import AutoModelForCausalLM

    if isinstance(model, str):
        loaded = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
        if model == "layers without config":
            lora.inject(loaded, lora.LoraConfig(r=2, alpha=2.0, targets=lora.Targets.parse("q_proj")))
            delattr(loaded, lora.CONFIG_ATTRIBUTE)
        elif model == "peft layers without PeftModel":  # transformers' own peft integration
            from peft import LoraConfig

            loaded.add_adapter(LoraConfig(r=2, target_modules=["q_proj"]))
        model = loaded
    with pytest.raises(LowrankError, match=fragment):
        lowrank.analyze(model, device="cpu")


def test_suggest_rank_returns_the_peft_config_the_cli_writes(tiny_bert_folder, r8_csv, invoke, tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder)
    config = lowrank.suggest_rank(model, str(r8_csv), rank=4, max_length=32, device="cpu")
    result = invoke("suggest-rank", "--model", tiny_bert_folder, "--data", r8_csv, "--rank", "4", "--max-length", "32",
                    "--device", "cpu", "--out", tmp_path / "lora.json")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "lora.json").read_text())
    assert isinstance(config, LoraConfig) and config.r == written["r"] and config.lora_alpha == written["lora_alpha"]
    assert config.rank_pattern == written["rank_pattern"] and set(config.target_modules) == \
        set(written["target_modules"]) == {f"bert.encoder.layer.{i}.attention.self.{p}" for i in (0, 1)
                                           for p in ("query", "value")}
    with pytest.raises(LowrankError, match="not loaded from a local folder"):
        model.config.name_or_path = "some-org/bert"
        lowrank.suggest_rank(model, str(r8_csv), rank=4)
