"""lowrank.RankLogs (lowrank/analysis/training_logs.py) in a plain PyTorch loop over lowrank's own LoRA layers: read
once before training, it logs the weights of each later moment, equal to lowrank.analyze of the model then."""

from __future__ import annotations

import pytest
import torch

import lowrank
from lowrank import lora
from lowrank.data.batches import tokenize_lm
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError


def test_logs_follow_a_plain_training_loop(tiny_llama_folder, minilm_tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    config = lora.LoraConfig(r=4, alpha=8.0, targets=lora.Targets.parse("q_proj,v_proj"))
    lora.inject(model, config, torch.Generator().manual_seed(0))
    lora.mark_trainable(model)
    rank_logs = lowrank.RankLogs(model)  # before the first step: B = 0
    blocks = tokenize_lm(minilm_tokenizer, load_text_dataset("reuters-r8").train_texts[:64], 32)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    norms = []
    for step in range(1, 7):
        batch = blocks.collate(list(range(4 * step, 4 * step + 4)))
        model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 3 == 0:
            logs = rank_logs.measure()
            report = lowrank.analyze(model, base_metrics=False, device="cpu").analysis
            assert {k: v for k, v in logs.items() if k.endswith("/effective_rank")} == \
                {f"lowrank/{m.name}/effective_rank": m.effective_rank for m in report.modules}
            assert logs["lowrank/max_k90"] == max(m.energy_rank["0.9"] for m in report.modules) <= 4
            norms.append(logs["lowrank/norm"])
    assert 0 < norms[0] < norms[1]  # the update grew between the two logs
    assert len([k for k in logs if k.startswith("lowrank/model.")]) == 4 * 3  # 4 modules x (effective rank, k90, norm)


def test_data_is_checked_before_training(tiny_llama_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_folder)
    lora.inject(model, lora.LoraConfig(r=2, alpha=2.0, targets=lora.Targets.parse("q_proj")))
    with pytest.raises(LowrankError, match="unknown dataset 'no-such-data'"):
        lowrank.RankLogs(model, data="no-such-data")
    model.config.name_or_path = "some-org/llama"
    with pytest.raises(LowrankError, match=r"base_model_name_or_path \(some-org/llama\) is not a local folder"):
        lowrank.RankLogs(model, data="reuters-r8")
