"""Load a lowrank-trained adapter in peft and in lowrank on the same base model and compare their outputs.

Usage: python examples/peft_roundtrip.py ADAPTER_DIR MODEL [TEXT]
MODEL is a registry key (minilm-l6, smollm2-135m) or a local folder; prints the largest logit difference.
"""

from __future__ import annotations

import sys

import torch
from peft import PeftModel

from lowrank import adapters, assets


def main(adapter_dir: str, model_name: str, text: str) -> None:
    config = adapters.read_adapter_config(adapter_dir)
    if config.task_type == "SEQ_CLS":
        num_labels = _num_labels(adapter_dir)
        load = lambda: assets.load_classifier(model_name, num_labels)  # noqa: E731
    else:
        load = lambda: assets.load_causal_lm(model_name)  # noqa: E731
    base, tokenizer = load()
    peft_model = PeftModel.from_pretrained(base, adapter_dir).eval()
    ours, _ = load()
    adapters.load_adapter(ours, adapter_dir)
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        a = peft_model(**batch).logits
        b = ours.eval()(**batch).logits
    print(f"peft vs lowrank on {tuple(a.shape)} logits: max |difference| = {(a - b).abs().max().item():.3e}, "
          f"max |logit| = {a.abs().max().item():.2f}")


def _num_labels(adapter_dir: str) -> int:
    from safetensors import safe_open

    with safe_open(f"{adapter_dir}/{adapters.WEIGHTS_FILE}", "pt") as handle:
        heads = [k for k in handle.keys() if k.endswith(("classifier.weight", "score.weight"))]
        return handle.get_slice(heads[0]).get_shape()[0]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "oil prices rose sharply after opec said")
