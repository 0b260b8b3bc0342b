"""Instruction data: the rows of a local file in the ``prompt`` + ``completion`` or ``messages`` format -> examples,
checked before anything is tokenized (:mod:`lowrank.data.chat` tokenizes them).

A data file holds one of three formats, told by its columns: ``text`` (+ ``label``), ``prompt`` + ``completion``,
or ``messages``; columns of two formats in one file are refused.

- ``prompt`` + ``completion`` as strings: the completion follows the prompt as plain text (:class:`PromptCompletion`).
  As lists of turns (conversational): the turns are rendered by the tokenizer's chat template and the
  completion's turns are learned (:class:`Conversation`).
- ``messages``: a list of turns ``{"role": ..., "content": ...}``, rendered by the chat template; the assistant
  turns are learned.

A turn needs a non-empty string ``role`` and non-empty string ``content``; a completion must not be empty. A CSV
cell holding a list holds it as JSON text. Messages name the file and the row (1-based, header not counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lowrank.errors import LowrankError
from lowrank.jsonfile import parse_json

FORMATS = {"text": ("text",), "prompt/completion": ("prompt", "completion"), "messages": ("messages",)}
ASSISTANT = "assistant"
LOSS_ON = ("completion", "all")  # what instruction data learns: the completion / assistant turns, or every token
LOSS_ON_HELP = ("Instruction data (prompt/completion, messages): the loss on the completion / assistant turns "
                "only (prompt and other turns masked), or on all tokens. Plain text learns every token.")
DATA_FILES = ("a local .csv/.jsonl file with text[,label], prompt + completion, or messages (chat turns, "
              "rendered by the tokenizer's chat template), or a .txt file")  # what --data's help says a file holds


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class PromptCompletion:
    """Plain text: ``prompt + completion``, the completion learned. ``origin`` names the file and row."""

    prompt: str
    completion: str
    origin: str


@dataclass(frozen=True)
class Conversation:
    """Turns for the chat template; ``trained[i]``: turn ``i`` is learned (the assistant turns of ``messages``, the
    completion's turns of a conversational prompt/completion). ``origin`` names the file and row."""

    turns: tuple[Turn, ...]
    trained: tuple[bool, ...]
    origin: str


Example = PromptCompletion | Conversation


def data_format(columns: set[str], path: Path) -> str:
    """The format a file's columns say: ``"text"``, ``"prompt/completion"`` or ``"messages"``.

    Raises LowrankError for columns of two formats, a prompt without a completion (or the reverse), a ``label``
    beside an instruction format, or none of the formats."""
    found = [name for name, keys in FORMATS.items() if columns & set(keys)]
    if len(found) > 1:
        shown = " and ".join(f"'{k}'" for name in found for k in FORMATS[name] if k in columns)
        raise LowrankError(f"{path} has {shown} columns; a data file holds one format: 'text' (+ 'label'), "
                           "'prompt' + 'completion', or 'messages'")
    if not found:
        raise LowrankError(f"{path} has columns {sorted(map(str, columns))}; it needs a 'text' column (and 'label' "
                           "for classification), 'prompt' + 'completion', or 'messages'")
    name = found[0]
    missing = [k for k in FORMATS[name] if k not in columns]
    if missing:
        present = next(k for k in FORMATS[name] if k in columns)
        raise LowrankError(f"{path} has a '{present}' column but no '{missing[0]}'")
    if name != "text" and "label" in columns:
        raise LowrankError(f"{path}: 'label' goes with 'text' (classification), not with {name} data")
    return name


def read_examples(rows: list[dict], path: Path, fmt: str) -> list[Example]:
    """One example per row of a ``"prompt/completion"`` or ``"messages"`` file."""
    read = _messages_example if fmt == "messages" else _prompt_completion_example
    return [read(row, f"{path} row {number}") for number, row in enumerate(rows, start=1)]


def _messages_example(row: dict, origin: str) -> Conversation:
    turns = _turns(row.get("messages"), origin, "messages")
    if not turns:
        raise LowrankError(f"{origin}: 'messages' is an empty list")
    return Conversation(turns, tuple(t.role == ASSISTANT for t in turns), origin)


def _prompt_completion_example(row: dict, origin: str) -> Example:
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion.strip():
            raise LowrankError(f"{origin}: the completion is empty; every example needs a completion to learn")
        return PromptCompletion(prompt, completion, origin)
    if isinstance(prompt, list) and isinstance(completion, list):
        before, after = _turns(prompt, origin, "prompt"), _turns(completion, origin, "completion")
        if not before:
            raise LowrankError(f"{origin}: the prompt is an empty list; give the turns the completion answers")
        if not after:
            raise LowrankError(f"{origin}: the completion is an empty list; every example needs a completion to learn")
        return Conversation(before + after, (False,) * len(before) + (True,) * len(after), origin)
    raise LowrankError(f"{origin}: 'prompt' and 'completion' must both be strings or both be lists of turns, got "
                       f"{type(prompt).__name__} and {type(completion).__name__}")


def _turns(value, origin: str, column: str) -> tuple[Turn, ...]:
    """A list of ``{"role", "content"}`` objects (or its JSON text) -> turns; raises for anything else."""
    if isinstance(value, str):
        value = parse_json(value, f"{origin}: '{column}' is not a JSON list of turns")
    if not isinstance(value, list):
        raise LowrankError(f"{origin}: '{column}' must be a list of turns {{\"role\", \"content\"}}, got "
                           f"{type(value).__name__}")
    turns = []
    for index, turn in enumerate(value, start=1):
        where = f"{origin}: turn {index} of '{column}'"
        if not isinstance(turn, dict):
            raise LowrankError(f"{where} must be an object with 'role' and 'content', got {type(turn).__name__}")
        role, content = turn.get("role"), turn.get("content")
        if not isinstance(role, str) or not role.strip():
            raise LowrankError(f"{where} has no role (a non-empty string such as 'user' or 'assistant')")
        if not isinstance(content, str):
            shown = "no content" if content is None else f"content of type {type(content).__name__}"
            raise LowrankError(f"{where} ({role}) has {shown}; content must be a non-empty string")
        if not content.strip():
            raise LowrankError(f"{where} ({role}) has empty content")
        turns.append(Turn(role, content))
    return tuple(turns)
