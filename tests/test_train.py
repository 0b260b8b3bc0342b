"""`lowrank train` end to end on tiny models and real Reuters R8 text: outputs in peft / Hugging Face format,
reproducibility, exact resume after a killed run, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from lowrank import adapters
from lowrank.tasks.loss import loss_and_logits
from lowrank.training.loop import TrainConfig, lr_factor, train
from lowrank.training.setup import prepare

FAST = ("--steps", "6", "--batch-size", "8", "--max-length", "32", "--quiet")


def _ids(n=3):
    return torch.randint(1000, 5000, (n, 12), generator=torch.Generator().manual_seed(0))


def test_lora_adapter_loads_in_peft_with_identical_outputs(invoke, tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "lora"
    result = invoke("train", "--model", tiny_bert_folder, "--data", r8_csv, "--rank", "4", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", "metrics.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and 0.0 <= metrics["final"]["accuracy"] <= 1.0
    assert metrics["final"]["examples"] == 60

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=8)
    peft_model = PeftModel.from_pretrained(base, out).eval()
    ours = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=8)
    adapters.load_adapter(ours, out)
    torch.testing.assert_close(ours.eval()(_ids()).logits, peft_model(_ids()).logits, rtol=1e-5, atol=1e-6)
    trained_b = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in trained_b.items())


def test_full_fine_tune_is_a_hugging_face_folder(invoke, tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "full"
    result = invoke("train", "--model", tiny_bert_folder, "--data", r8_csv, "--method", "full", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    tuned = AutoModelForSequenceClassification.from_pretrained(out)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=8)
    assert tuned.config.num_labels == 8
    changed = (tuned.bert.encoder.layer[0].attention.self.query.weight - base.bert.encoder.layer[0].attention.self.query.weight)
    assert changed.abs().max() > 0
    assert (out / "metrics.json").is_file() and (out / "tokenizer.json").is_file()


def test_language_modelling_lowers_held_out_loss(tiny_llama_folder, tmp_path):
    text = tmp_path / "corpus.txt"
    paragraph = "the quick brown fox jumps over the lazy dog and runs back home again"
    text.write_text("\n\n".join(f"{paragraph} {i % 5}" for i in range(300)))
    config = TrainConfig(model=str(tiny_llama_folder), data=str(text), method="lora", out=tmp_path / "lm",
                         rank=8, targets="all-linear", max_steps=30, batch_size=8, max_length=32, lr=1e-2)
    metrics = train(config)
    before, after = [h for h in metrics["history"] if "perplexity" in h]
    assert metrics["task"] == "lm" and before["step"] == 0 and after["step"] == 30
    assert after["loss"] < before["loss"] - 0.3 and after["perplexity"] < before["perplexity"]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    peft_model = PeftModel.from_pretrained(model, tmp_path / "lm").eval()
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    adapters.load_adapter(ours, tmp_path / "lm")
    torch.testing.assert_close(ours.eval()(_ids()).logits, peft_model(_ids()).logits, rtol=1e-5, atol=1e-5)


def test_language_model_loss_is_transformers_own_with_masked_targets(tiny_llama_folder):
    """The next-token loss (labels shifted, logits left whole) equals the model's own loss given the labels, with
    prompt tokens masked and right padding ignored."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder).eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    labels[2, 9:] = -100
    ours, logits = loss_and_logits(model, {"input_ids": ids, "labels": labels})
    torch.testing.assert_close(ours, model(input_ids=ids, labels=labels).loss, rtol=1e-6, atol=1e-6)
    assert logits.shape == (3, 12, model.config.vocab_size)


@pytest.fixture()
def lm_corpus(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"the quick brown fox jumps over the lazy dog {i % 7} and back" for i in range(200)))
    return text


@pytest.mark.parametrize("method", ["lora", "full"])
def test_activation_checkpointing_gives_the_same_run(tiny_llama_folder, lm_corpus, tmp_path, one_thread, method):
    def run(checkpointing: bool):
        out = tmp_path / f"{method}-{checkpointing}"
        metrics = train(TrainConfig(model=str(tiny_llama_folder), data=str(lm_corpus), method=method, out=out,
                                    targets="all-linear", max_steps=5, batch_size=4, max_length=32, dropout=0.1,
                                    lr=1e-2, checkpointing=checkpointing))
        assert metrics["config"]["checkpointing"] is checkpointing
        weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
        return [h["train_loss"] for h in metrics["history"] if "train_loss" in h], load_file(out / weights)

    (plain_losses, plain), (recomputed_losses, recomputed) = run(False), run(True)
    torch.testing.assert_close(recomputed_losses, plain_losses, rtol=1e-6, atol=1e-6)
    assert len(plain_losses) == 5 and plain.keys() == recomputed.keys()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-5, atol=1e-6)


def test_checkpointing_recomputes_each_layer_and_gradients_reach_the_factors(tiny_llama_folder, lm_corpus, tmp_path,
                                                                           one_thread):
    config = TrainConfig(model=str(tiny_llama_folder), data=str(lm_corpus), method="lora", out=tmp_path / "x",
                         targets="all-linear", batch_size=4, max_length=32, checkpointing=True)
    setup = prepare(config)
    layers = setup.model.model.layers
    calls = [0] * len(layers)
    for index, layer in enumerate(layers):
        # a pre-hook: the recompute stops once it has what the backward pass needs, before the MLP's own hooks
        layer.mlp.register_forward_pre_hook(lambda *_, index=index: calls.__setitem__(index, calls[index] + 1))
    setup.model.train()
    loss_and_logits(setup.model, setup.train.collate(list(range(4))))[0].backward()
    assert calls == [2] * len(layers)  # once forward, once again in the backward pass
    # the first layer's input needs no gradient (frozen embedding); B starts at 0, so only B has one yet
    factors = [p for n, p in setup.model.named_parameters() if "lora_B" in n and ".layers.0." in n]
    assert factors and all(p.grad is not None and p.grad.abs().sum() > 0 for p in factors)


def test_same_seed_same_weights(tiny_bert_folder, r8_csv, tmp_path):
    def run(name):
        config = TrainConfig(model=str(tiny_bert_folder), data=str(r8_csv), method="lora", out=tmp_path / name,
                             rank=2, max_steps=4, batch_size=8, max_length=32, seed=3, dropout=0.1)
        train(config)
        return load_file(tmp_path / name / "adapter_model.safetensors")

    first, second = run("a"), run("b")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_resume_after_kill_matches_uninterrupted_run(tiny_bert_folder, r8_csv, tmp_path):
    args = [sys.executable, "-m", "lowrank_cli.main", "train", "--model", str(tiny_bert_folder), "--data",
            str(r8_csv), "--rank", "4", "--steps", "40", "--batch-size", "8", "--max-length", "32",
            "--eval-samples", "8", "--dropout", "0.1", "--quiet", "--save-every", "3",
            "--lr", "5e-3"]  # given: this tiny model ends at chance, and a resumed run does not back off
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    subprocess.run(args + ["--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(args + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state = killed / "checkpoint" / "state.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists() and not (killed / "adapter_model.safetensors").exists()
    step = torch.load(state, weights_only=True)["step"]
    assert 0 < step < 40

    resumed = subprocess.run(args + ["--out", str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    again = load_file(killed / "adapter_model.safetensors")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert not (killed / "checkpoint").exists()


def test_checkpointing_is_a_train_option(invoke):
    assert "--checkpointing" in invoke("train", "--help").stdout


def test_learning_rate_schedule():
    assert [round(lr_factor(s, 10, 2), 3) for s in range(10)] == [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375,
                                                                  0.25, 0.125]


def _assert_clean_error(result, fragment: str, out: Path) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (("--model", "no-such-model"), "minilm-l6, smollm2-135m"),
    (("--data", "no-such-data"), "reuters-r8"),
    (("--rank", "0"), "rank must be >= 1"),
    (("--rank", "-3"), "rank must be >= 1"),
    (("--targets", "q_proj,v_proj"), "linear layers here: classifier, dense, key, query, value"),
])
def test_bad_input_is_one_error_line(invoke, tiny_bert_folder, r8_csv, tmp_path, args, fragment):
    out = tmp_path / "out"
    settings = {"--model": str(tiny_bert_folder), "--data": str(r8_csv)}
    settings.update(dict(zip(args[::2], args[1::2])))
    flat = [item for pair in settings.items() for item in pair]
    result = invoke("train", *flat, "--out", out, *FAST)
    _assert_clean_error(result, fragment, out)


def test_data_without_needed_columns_names_them(invoke, tiny_bert_folder, tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("sentence,y\nhello,1\n")
    result = invoke("train", "--model", tiny_bert_folder, "--data", data, "--out", tmp_path / "out", *FAST)
    _assert_clean_error(result, "it needs a 'text' column", tmp_path / "out")


def test_classification_data_without_labels_is_refused(invoke, tiny_bert_folder, tmp_path):
    data = tmp_path / "plain.csv"
    data.write_text("text\n" + "\n".join(f"line {i}" for i in range(20)))
    result = invoke("train", "--model", tiny_bert_folder, "--data", data, "--out", tmp_path / "out", *FAST)
    _assert_clean_error(result, "no 'label' column", tmp_path / "out")


def test_non_empty_out_is_refused_and_untouched(invoke, tiny_bert_folder, r8_csv, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("train", "--model", tiny_bert_folder, "--data", r8_csv, "--out", out, *FAST)
    assert result.exit_code == 2 and result.stderr.startswith("Error: ") and "--overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_fused_kernels_leave_a_cpu_run_as_it_was(tiny_llama_folder, lm_corpus, tmp_path, one_thread):
    """--fused is for CUDA (liger-kernel's Triton kernels): on the CPU the run is the plain one, and says so."""
    def run(fused: bool):
        metrics = train(TrainConfig(model=str(tiny_llama_folder), data=str(lm_corpus), method="lora",
                                    out=tmp_path / str(fused),
                                    targets="all-linear", max_steps=3, batch_size=4, max_length=32, lr=1e-2,
                                    fused=fused))
        assert metrics["fused_kernels"] is False and metrics["config"]["fused"] is fused
        return [h["train_loss"] for h in metrics["history"] if "train_loss" in h]

    assert run(True) == run(False)
