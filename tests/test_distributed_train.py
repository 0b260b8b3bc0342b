"""`lowrank train --nproc 2` on the CPU (gloo): DDP and FSDP2, LoRA and full fine-tuning, end with one process's
weights and metrics; a run killed on one rank exits with one `Error:` line and resumes on another sharding. (Bad
input on several processes: tests/test_distributed_analyze.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from lowrank.training.loop import TrainConfig, train

DRIVER = Path(__file__).parent / "fault_driver.py"


@pytest.fixture(scope="module")
def still_bert(tiny_bert_folder, tmp_path_factory, minilm_tokenizer):
    """The tiny BERT classifier without dropout: random masks differ between one process and two."""
    folder = tmp_path_factory.mktemp("still-bert")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    model.save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


def _one_process(out: Path, **settings) -> dict:
    torch.set_num_threads(1)
    return train(TrainConfig(out=out, batch_size=8, max_length=32, **settings))


def _launch(tmp_path: Path, *args, entry=("-m", "lowrank_cli")) -> subprocess.CompletedProcess:
    command = [sys.executable, *entry, "train", "--nproc", "2", "--batch-size", "8", "--max-length", "32",
               "--quiet", *map(str, args)]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)


def _same_result(one: Path, two: Path, weights: str) -> None:
    mine, theirs = load_file(one / weights), load_file(two / weights)
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(theirs[key], mine[key], rtol=1e-5, atol=1e-6)
    first, second = (json.loads((folder / "metrics.json").read_text()) for folder in (one, two))
    assert second["final"] == pytest.approx(first["final"], rel=1e-6)
    assert [h.get("train_loss", 0.0) for h in second["history"]] == pytest.approx(
        [h.get("train_loss", 0.0) for h in first["history"]], rel=1e-5)


def test_full_fine_tuning_under_ddp_and_fsdp_ends_as_one_process(tiny_llama_folder, r8_csv, tmp_path):
    """Language modelling, two micro-batches a step (gradients reduced once) and an evaluation mid-run."""
    settings = dict(model=str(tiny_llama_folder), data=str(r8_csv), method="full", max_steps=4, grad_accum=2,
                    eval_every=2, eval_samples=16)
    _one_process(tmp_path / "one", **settings)
    for mode in ("ddp", "fsdp"):
        result = _launch(tmp_path, "--model", tiny_llama_folder, "--data", r8_csv, "--method", "full", "--steps", 4,
                         "--grad-accum", 2, "--eval-every", 2, "--eval-samples", 16, "--parallel", mode,
                         "--out", mode)
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / mode / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
        _same_result(tmp_path / "one", tmp_path / mode, "model.safetensors")


def test_lora_killed_on_one_rank_ends_with_one_error_and_resumes_sharded(still_bert, r8_csv, tmp_path):
    """LoRA under DDP, rank 1 killed at step 5; resumed from the step-3 checkpoint under FSDP2, it ends as one
    uninterrupted process. 41 training examples in batches of 8 end each epoch in a batch of 1 (rank 1 holds none
    of it: weight 0), and 20 held-out examples make 3 evaluation batches (rank 1 repeats one at weight 0)."""
    settings = ("--model", still_bert, "--data", r8_csv, "--rank", 4, "--steps", 8, "--save-every", 3,
                "--train-samples", 41, "--eval-samples", 20, "--lr", 5e-3)  # given: a resumed run does not back off
    _one_process(tmp_path / "whole", model=str(still_bert), data=str(r8_csv), method="lora", rank=4, max_steps=8,
                 save_every=3, max_train_samples=41, eval_samples=20, lr=5e-3)
    killed = _launch(tmp_path, *settings, "--out", "run", entry=(str(DRIVER), "step", "5", "kill@1"))
    errors = [line for line in killed.stderr.splitlines() if line.strip()]
    assert killed.returncode != 0
    assert errors == ["Error: rank 1: stopped by signal 9"], killed.stderr
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["checkpoint"]

    resumed = _launch(tmp_path, *settings, "--out", "run", "--parallel", "fsdp", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "metrics.json"]
    _same_result(tmp_path / "whole", tmp_path / "run", "adapter_model.safetensors")
