"""Checks of the rows of a local data file, made before anything is tokenized: every ``text`` is a string that is
not just a number (a numeric column is almost always the wrong column), and when the file has a ``label`` column,
every row has a label. Messages name the file, the row (1-based, header not counted) and the value."""

from __future__ import annotations

from pathlib import Path

from lowrank.errors import LowrankError

SHOWN = 3  # rows named in a message


def check_rows(rows: list[dict], path: Path) -> None:
    """Raise LowrankError for a non-string or numeric ``text`` column, or missing labels."""
    wrong = [(i, r.get("text")) for i, r in enumerate(rows, start=1) if not isinstance(r.get("text"), str)]
    if wrong:
        kinds = sorted({type(v).__name__ for _, v in wrong})
        raise LowrankError(f"{path}: 'text' must be a string in every row, but {len(wrong)} of {len(rows)} rows "
                           f"hold {' or '.join(kinds)} values (rows {_first(wrong)})")
    if all(_is_number(r["text"]) for r in rows):
        raise LowrankError(f"{path}: the 'text' column holds only numbers (e.g. {rows[0]['text']!r}); it should "
                           "hold the text to train on")
    if any("label" in r for r in rows):
        missing = [(i, r.get("label")) for i, r in enumerate(rows, start=1)
                   if r.get("label") is None or str(r.get("label")).strip() == ""]
        if missing:
            raise LowrankError(f"{path}: {len(missing)} of {len(rows)} rows have no label (rows "
                               f"{_first(missing)}); give every row a label, or drop the 'label' column for "
                               "language modelling")


def _first(items: list[tuple[int, object]]) -> str:
    shown = ", ".join(str(i) for i, _ in items[:SHOWN])
    return shown + (", ..." if len(items) > SHOWN else "")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
