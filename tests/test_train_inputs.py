"""`lowrank train` refuses bad input with one `Error:` line before any work (issue 14, part 2): a model folder
without tokenizer files, a tokenizer whose vocabulary does not fit the model, missing labels, empty or non-UTF-8
data, a text column of numbers, a rank above min(out, in), a max length above the model's positions. Nothing is
written: the --out folder does not appear."""

from __future__ import annotations

import json
import shutil

import pytest

from lowrank.tiny_models import tiny_model

FAST = ("--steps", "2", "--batch-size", "4", "--max-length", "32", "--quiet")


def _assert_clean_error(result, fragment: str, out) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and not out.exists()


@pytest.fixture(scope="module")
def good_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "good.csv"
    path.write_text("text,label\n" + "\n".join(f"the market rose {i} points,{'ab'[i % 2]}" for i in range(40)))
    return path


def _data(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


BAD_DATA = {
    "empty": ("empty.csv", b"", "holds no rows"),
    "blank lines only": ("blank.txt", b"\n\n\n", "holds no rows"),
    "not UTF-8": ("latin1.csv", "text,label\ncafé crème,a\n".encode("latin-1") * 5, "is not UTF-8 text (byte 0xe9"),
    "numbers as text (CSV)": ("numbers.csv", b"text,label\n" + b"".join(b"%d,a\n" % i for i in range(20)),
                              "the 'text' column holds only numbers"),
    "numbers as text (JSONL)": ("numbers.jsonl", "\n".join(json.dumps({"text": i, "label": "a"})
                                                            for i in range(20)).encode(), "rows hold int values"),
    "null text": ("null.jsonl", "\n".join(json.dumps({"text": None if i == 2 else "words", "label": "a"})
                                          for i in range(20)).encode(), "(rows 3)"),
    "missing labels": ("nolabel.csv", b"text,label\n" + b"".join(b"some words %d,%s\n" % (i, b"a" if i % 4 else b"")
                                                                 for i in range(20)), "5 of 20 rows have no label"),
    "missing label key": ("nokey.jsonl", "\n".join(json.dumps({"text": "words", **({"label": "a"} if i else {})})
                                                   for i in range(20)).encode(), "1 of 20 rows have no label"),
    "unseen test label": ("unseen.csv", b"text,label,split\n" + b"".join(b"w %d,a,train\n" % i for i in range(9))
                          + b"w,b,test\n", "test labels ['b'] never occur in the training split"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_file_is_one_error_line(invoke, tiny_bert_folder, tmp_path, case):
    name, content, fragment = BAD_DATA[case]
    out = tmp_path / "out"
    result = invoke("train", "--model", tiny_bert_folder, "--data", _data(tmp_path, name, content), "--out", out,
                    *FAST)
    _assert_clean_error(result, fragment, out)


def test_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    from lowrank.data.text import load_text_dataset

    path = _data(tmp_path, "bom.csv", b"\xef\xbb\xbftext,label\n" + b"".join(b"w %d,a\n" % i for i in range(20)))
    assert load_text_dataset(str(path)).num_labels == 1


def test_model_folder_without_tokenizer(invoke, tiny_bert_folder, good_csv, tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_bert_folder / name, folder / name)
    out = tmp_path / "out"
    result = invoke("train", "--model", folder, "--data", good_csv, "--out", out, *FAST)
    _assert_clean_error(result, "has no tokenizer files", out)


def test_tokenizer_of_another_model(invoke, tiny_bert_folder, minilm_tokenizer, good_csv, tmp_path):
    folder = tmp_path / "small-vocab"
    tiny_model("bert", "classification", vocab_size=100, num_labels=2).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    result = invoke("train", "--model", folder, "--data", good_csv, "--out", out, *FAST)
    _assert_clean_error(result, "but the model's embedding has 100 rows", out)


@pytest.mark.parametrize("args, fragment", [
    (("--rank", "33"), "rank 33 is above min(out, in) = 32 of module bert.encoder.layer.0.attention.self.query"),
    (("--max-length", "129"), "--max-length 129 is above the 128 positions the model has"),
])
def test_absurd_sizes(invoke, tiny_bert_folder, good_csv, tmp_path, args, fragment):
    out = tmp_path / "out"
    result = invoke("train", "--model", tiny_bert_folder, "--data", good_csv, "--out", out, "--steps", "2",
                    "--quiet", *args)
    _assert_clean_error(result, fragment, out)


def test_largest_valid_sizes_train(invoke, tiny_bert_folder, good_csv, tmp_path):
    out = tmp_path / "out"
    result = invoke("train", "--model", tiny_bert_folder, "--data", good_csv, "--out", out, "--steps", "1",
                    "--batch-size", "4", "--rank", "32", "--max-length", "128", "--quiet")
    assert result.exit_code == 0, result.output
