"""peft's EVA rank allocation (arXiv 2410.07170; peft's init_lora_weights="eva") for the same targets and total
rank, written as a LoraConfig JSON that `lowrank train --config` takes: the comparison in reports/rank_advice.md
trains EVA's allocation with lowrank's ordinary initialization, so only the allocation differs from suggest-rank's.

EVA redistributes a budget of total rank (r per module, up to rho * r for one module) by the explained variance of
each layer's inputs; it does not weigh modules by parameter count.

Usage: python examples/eva_allocation.py MODEL DATA RANK OUT.json [--rho 2] [--examples 2048]
"""

import argparse
import json

import torch
from peft import EvaConfig, LoraConfig
from peft.tuners.lora.eva import get_eva_state_dict

from lowrank import assets
from lowrank.data.batches import tokenize_classification
from lowrank.data.text import load_text_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("model", "data", "rank", "out"):
        parser.add_argument(name)
    parser.add_argument("--rho", type=float, default=2.0)
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--targets", default="query,value")
    args = parser.parse_args()
    dataset = load_text_dataset(args.data)
    model, tokenizer = assets.load_classifier(args.model, dataset.num_labels)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    data = tokenize_classification(tokenizer, dataset.train_texts[: args.examples],
                                   dataset.train_labels[: args.examples], 128)
    batches = []
    for start in range(0, len(data), 32):
        batch = data.collate(list(range(start, min(start + 32, len(data)))))
        batches.append({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    r = int(args.rank)
    config = LoraConfig(r=r, lora_alpha=r, target_modules=args.targets.split(","), init_lora_weights="eva",
                        eva_config=EvaConfig(rho=args.rho))
    state = get_eva_state_dict(model, batches, config, show_progress_bar=False)
    ranks = {name.removeprefix("base_model.model."): int(tensor.shape[0]) for name, tensor in state.items()}
    pattern = {name: k for name, k in ranks.items() if k != r}
    fields = {"r": r, "lora_alpha": r, "target_modules": sorted(ranks), "rank_pattern": pattern,
              "alpha_pattern": dict(pattern)}
    with open(args.out, "w") as handle:
        json.dump(fields, handle, indent=1)
    print(json.dumps(ranks))


if __name__ == "__main__":
    main()
