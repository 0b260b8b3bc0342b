"""RankCallback in a transformers Trainer run, or in TRL's SFTTrainer with --trl; on the CPU in about a minute.

A causal LM (default: a tiny random-init Llama with MiniLM's tokenizer, saved once under OUT/base; --model FOLDER
for a real one) gets a peft LoRA on q_proj and v_proj and trains on Reuters R8 texts, written as OUT/train.json (a
JSON array: the file a Trainer's dataset is read from, and the one the callback's signals read). Every --every steps
and at each evaluation the Trainer logs the rank metrics (and, on that file, the sufficiency signals); at the end
OUT/lowrank_analysis.json and OUT/lowrank_report.html are written, and the last rank log is printed.

    python examples/trainer_rank_callback.py --out runs/callback
    python examples/trainer_rank_callback.py --out runs/callback-sft --trl     # needs trl and datasets
    lowrank analyze runs/callback/adapter --data runs/callback/train.json       # the saved adapter, same report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer, \
    TrainingArguments

from lowrank.assets import resolve_model_path
from lowrank.data.text import load_text_dataset
from lowrank.integrations.transformers import JSON_FILE, RankCallback
from lowrank.tiny_models import save_tiny_model


class Texts(torch.utils.data.Dataset):
    """Each text's first ``length`` tokens (the collator makes the labels)."""

    def __init__(self, tokenizer, texts, length: int):
        self.ids = [tokenizer(t, truncation=True, max_length=length)["input_ids"] for t in texts]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", help="a local causal LM folder [default: a tiny random-init Llama]")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--trl", action="store_true", help="train with TRL's SFTTrainer")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm-l6"), local_files_only=True)
    base = options.model or str(options.out / "base")
    if options.model is None and not (options.out / "base").is_dir():
        save_tiny_model(options.out / "base", "llama", "causal-lm", tokenizer)
    if options.model is not None:
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    texts = load_text_dataset("reuters-r8").train_texts[:1000]
    (options.out / "train.json").write_text(json.dumps([{"text": t} for t in texts]))

    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    callback = RankCallback(every=options.every, data=str(options.out / "train.json"), examples=64,
                            max_length=options.max_length)
    settings = dict(output_dir=str(options.out), max_steps=options.steps, per_device_train_batch_size=8,
                    learning_rate=2e-3, logging_steps=options.every, eval_strategy="steps", eval_steps=options.every,
                    save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available())
    if options.trl:
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        rows = Dataset.from_list([{"text": t} for t in texts])
        trainer = SFTTrainer(model=model, args=SFTConfig(**settings, max_length=options.max_length),
                             train_dataset=rows.select(range(900)), eval_dataset=rows.select(range(900, 1000)),
                             processing_class=tokenizer)
    else:
        trainer = Trainer(model=model, args=TrainingArguments(**settings),
                          train_dataset=Texts(tokenizer, texts[:900], options.max_length),
                          eval_dataset=Texts(tokenizer, texts[900:], options.max_length),
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    trainer.add_callback(callback)
    trainer.train()
    model.save_pretrained(options.out / "adapter")

    last = [entry for entry in trainer.state.log_history if "lowrank/norm" in entry][-1]
    print(f"step {last['step']}: " + ", ".join(f"{key} {value:.4g}" for key, value in last.items()
                                               if key.startswith("lowrank/") and key.count("/") == 1))
    report = json.loads((options.out / JSON_FILE).read_text())
    print(f"wrote {options.out / JSON_FILE} ({len(report['modules'])} modules; {report['summary']['headline']})")


if __name__ == "__main__":
    main()
