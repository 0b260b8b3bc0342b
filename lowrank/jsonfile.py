"""Reading JSON (a file's object, or any JSON text), with bad input turned into one clear :class:`LowrankError`."""

from __future__ import annotations

import json
from pathlib import Path

from lowrank.errors import LowrankError


def parse_json(text: str, failure: str):
    """``json.loads(text)``; invalid JSON raises LowrankError ``"<failure>: <the decoder's message>"``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LowrankError(f"{failure}: {error}") from None


def read_json_object(path: str | Path) -> dict:
    """The JSON object in ``path``; raises LowrankError for an unreadable file, invalid JSON (nesting deeper than
    Python's recursion limit included) or a non-object."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise LowrankError(f"cannot read {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LowrankError(f"{path} is not valid JSON: {error}") from None
    except RecursionError:
        raise LowrankError(f"{path} is not valid JSON for lowrank: it is nested too deeply") from None
    if not isinstance(raw, dict):
        raise LowrankError(f"{path} must hold a JSON object")
    return raw
