"""Pack the offline assets for the GPU machine, which has no models or data: MiniLM-L6 re-saved in fp16 (about
45 MB, loaded as fp32 there) and the registry text sets as CSV files with a split column, each text cut to its first
2,000 characters (about 400 tokens: more than the 128 that training reads) to fit the 64 MiB a call carries.

Usage: python examples/gpu_assets.py [FOLDER] [DATA ...]   (default .carry, reuters-r8 reuters-r52 20newsgroups)
"""

import csv
import sys
from pathlib import Path

import torch

from lowrank import assets
from lowrank.data.text import load_text_dataset

MAX_CHARS = 2000


def pack_model(folder: Path) -> None:
    model, tokenizer = assets.load_classifier("minilm-l6", 2)
    base = model.base_model.to(torch.float16)  # the encoder only: heads are new per task
    base.save_pretrained(folder / "minilm-l6")
    tokenizer.save_pretrained(folder / "minilm-l6")


def pack_data(folder: Path, name: str) -> None:
    data = load_text_dataset(name)
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "split"])
        for split, texts, labels in (("train", data.train_texts, data.train_labels),
                                     ("test", data.test_texts, data.test_labels)):
            writer.writerows((text[:MAX_CHARS], data.label_names[label], split) for text, label in zip(texts, labels))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ".carry")
    target.mkdir(parents=True, exist_ok=True)
    pack_model(target)
    for key in sys.argv[2:] or ["reuters-r8", "reuters-r52", "20newsgroups"]:
        pack_data(target, key)
