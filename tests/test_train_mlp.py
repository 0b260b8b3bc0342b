"""`lowrank train` on image data with fully connected networks: a full run from an mlp: spec writes a loadable MLP
folder, LoRA on top of it trains only the hidden layers' factors and the head and reloads with identical logits,
and bad input is one `Error:` line."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lowrank import adapters
from lowrank.errors import LowrankError
from lowrank.mlp import build_mlp, load_mlp, save_mlp
from lowrank.tasks.defaults import DEFAULT_IMAGE_LR
from lowrank.tasks.evaluate import evaluate
from lowrank.tasks.images import load_image_task
from lowrank.training.loop import TrainConfig, train

FAST = ("--batch-size", "32", "--quiet")


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """mlp:64,32,10 fully trained on digits for 2 epochs (90 steps)."""
    out = tmp_path_factory.mktemp("mlp") / "full"
    train(TrainConfig(model="mlp:64,32,10", data="digits", method="full", out=out, epochs=2, batch_size=32))
    return out


def test_full_run_from_a_spec_writes_a_loadable_folder_above_chance(invoke, tmp_path, one_thread):
    out = tmp_path / "full"
    result = invoke("train", "--model", "mlp:64,32,10", "--data", "digits", "--method", "full", "--out", out,
                    "--steps", "60", "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "metrics.json"}
    assert json.loads((out / "config.json").read_text()) == {"model_type": "lowrank-mlp", "sizes": [64, 32, 10]}
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = metrics["history"][0], metrics["final"]
    assert metrics["task"] == "classification" and metrics["steps"] == 60 and after["examples"] == 359
    assert before["accuracy"] < 0.2 and after["accuracy"] > 0.5
    assert metrics["examples_per_second"] > 0 and metrics["config"]["lr"] == DEFAULT_IMAGE_LR["full"]
    model, _, test = load_image_task(str(out), "digits")
    reloaded = evaluate(model, test, 64, torch.device("cpu"), bf16=False)
    assert reloaded["accuracy"] == after["accuracy"]


def test_lora_on_a_saved_mlp_reloads_with_identical_logits(base_folder, tmp_path, one_thread):
    out = tmp_path / "lora"
    metrics = train(TrainConfig(model=str(base_folder), data="digits", method="lora", rank=2, targets="layers.0",
                                out=out, max_steps=30, batch_size=32, seed=2))
    assert metrics["config"]["targets"] == ["layers.0"]
    assert metrics["trainable_parameters"] == 2 * (64 + 32) + 32 * 10 + 10
    settings = json.loads((out / "adapter_config.json").read_text())
    assert settings["base_model_name_or_path"] == str(base_folder)
    assert settings["modules_to_save"] == ["layers.1"] and settings["target_modules"] == ["layers.0"]
    saved = load_file(out / "adapter_model.safetensors")
    assert set(saved) == {"base_model.model.layers.0.lora_A.weight", "base_model.model.layers.0.lora_B.weight",
                          "base_model.model.layers.1.weight", "base_model.model.layers.1.bias"}
    assert saved["base_model.model.layers.0.lora_B.weight"].abs().sum() > 0

    trained = load_mlp(base_folder)
    adapters.load_adapter(trained, out)
    _, _, test = load_image_task(str(base_folder), "digits")
    # the same loss to the last bit as the model in memory at the end of training
    assert evaluate(trained, test, 32, torch.device("cpu"), bf16=False) == metrics["final"]
    base = load_mlp(base_folder)
    assert torch.equal(trained.layers[0].base_layer.weight, base.layers[0].weight)
    assert torch.equal(trained.layers[0].base_layer.bias, base.layers[0].bias)
    assert not torch.equal(trained.layers[1].weight, base.layers[1].weight)
    assert metrics["config"]["head_lr"] == DEFAULT_IMAGE_LR["lora"] and len(metrics["history"]) > 30


def test_lora_auto_targets_every_hidden_layer_and_freezes_its_weights(tmp_path, one_thread):
    folder = tmp_path / "base3"
    folder.mkdir()
    save_mlp(build_mlp("mlp:64,16,16,10", seed=0), folder)
    out = tmp_path / "lora3"
    metrics = train(TrainConfig(model=str(folder), data="digits", method="lora", rank=3, out=out, max_steps=10,
                                batch_size=32))
    assert metrics["config"]["targets"] == ["layers.0", "layers.1"]
    trained, _, _ = load_image_task(str(folder), "digits", adapter=str(out))
    base = load_mlp(folder)
    for i in (0, 1):
        assert torch.equal(trained.layers[i].base_layer.weight, base.layers[i].weight)
        assert trained.layers[i].lora_B.abs().sum() > 0
    assert not torch.equal(trained.layers[2].weight, base.layers[2].weight)


@pytest.mark.parametrize("model, data, message", [
    ("mlp:784,32,10", "digits", "takes 784 inputs but data digits has 64 pixels"),
    ("mlp:64,32,5", "digits", "has 5 outputs but data digits has 10 classes"),
])
def test_a_network_that_does_not_fit_the_images_is_one_error_line(invoke, tmp_path, model, data, message):
    result = invoke("train", "--model", model, "--data", data, "--out", tmp_path / "x", *FAST)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert not (tmp_path / "x").exists()


def test_activation_checkpointing_of_an_mlp_is_one_error_line(invoke, tmp_path):
    result = invoke("train", "--model", "mlp:64,32,10", "--data", "digits", "--checkpointing", "--out",
                    tmp_path / "x", *FAST)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: ")
    assert "--checkpointing is for transformer models" in lines[0] and not (tmp_path / "x").exists()


@pytest.mark.parametrize("config_text, message", [
    ('{"model_type": "lowrank-mlp", "sizes": [64, "many", 10]}', "sizes must be a list of at least two positive"),
    ('{"model_type": "lowrank-mlp", "sizes": [64, 32, 10]', "is not valid JSON"),
    ('{"model_type": "lowrank-mlp", "sizes": [64, 16, 10]}', "does not hold an mlp of sizes [64, 16, 10]"),
])
def test_a_corrupt_mlp_folder_is_one_error_line(invoke, base_folder, tmp_path, config_text, message):
    folder = tmp_path / "corrupt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((base_folder / "model.safetensors").read_bytes())
    (folder / "config.json").write_text(config_text)
    result = invoke("train", "--model", folder, "--data", "digits", "--out", tmp_path / "x", *FAST)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


def test_lora_needs_a_hidden_layer_and_mlps_do_not_model_language(tmp_path):
    with pytest.raises(LowrankError, match="no hidden layer"):
        train(TrainConfig(model="mlp:64,10", data="digits", method="lora", out=tmp_path / "a", max_steps=1))
    with pytest.raises(LowrankError, match="--task lm needs a causal language model"):
        train(TrainConfig(model="mlp:64,10", data="digits", method="full", task="lm", out=tmp_path / "b"))
