"""Instruction data files (lowrank.data.instructions through lowrank.data.text): prompt/completion and chat messages
as JSONL or CSV, the learned turns of each format, and one clear error per malformed row."""

from __future__ import annotations

import csv
import json

import pytest

from lowrank.data.instructions import Conversation, PromptCompletion, Turn
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is it a date?"},
        {"role": "assistant", "content": "Sounds like a date to me."}, {"role": "user", "content": "Really?"},
        {"role": "assistant", "content": "Two people, one dinner."}]


def _jsonl(tmp_path, rows: list[dict], name: str = "d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_messages_learn_the_assistant_turns_and_keep_the_split(tmp_path):
    rows = [{"messages": CHAT, "split": "test" if i < 2 else "train"} for i in range(6)]
    data = load_text_dataset(str(_jsonl(tmp_path, rows)))
    assert data.is_instruction and not data.has_labels and (data.size("train"), data.size("test")) == (4, 2)
    example = data.train_examples[0]
    assert isinstance(example, Conversation) and example.turns[2] == Turn("assistant", "Sounds like a date to me.")
    assert example.trained == (False, False, True, False, True)
    assert data.train_texts == () and example.origin == f"{tmp_path / 'd.jsonl'} row 3"


def test_csv_messages_are_json_text_and_read_as_jsonl_does(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages"])
        for _ in range(10):
            writer.writerow([json.dumps(CHAT)])
    from_csv = load_text_dataset(str(path))
    from_jsonl = load_text_dataset(str(_jsonl(tmp_path, [{"messages": CHAT}] * 10)))
    assert [e.turns for e in from_csv.train_examples] == [e.turns for e in from_jsonl.train_examples]
    assert from_csv.size("train") == 9 and from_csv.size("test") == 1  # the seeded 90/10 split


def test_prompt_completion_strings_and_conversational_lists(tmp_path):
    plain = load_text_dataset(str(_jsonl(tmp_path, [{"prompt": "Q: 2+2?\nA:", "completion": " 4"}] * 10)))
    assert plain.train_examples[0] == PromptCompletion("Q: 2+2?\nA:", " 4", plain.train_examples[0].origin)
    rows = [{"prompt": CHAT[:2], "completion": CHAT[2:3]}] * 10
    chat = load_text_dataset(str(_jsonl(tmp_path, rows, "c.jsonl"))).train_examples[0]
    assert isinstance(chat, Conversation) and chat.trained == (False, False, True)


def test_csv_prompt_completion(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion,split\n" + "".join(f"say {i}:, {i},{'test' if i < 2 else 'train'}\n"
                                                          for i in range(8)))
    data = load_text_dataset(str(path))
    assert data.test_examples[0].prompt == "say 0:" and data.test_examples[0].completion == " 0"


BAD = {
    "text and messages": ([{"text": "a", "messages": CHAT}], "has 'text' and 'messages' columns"),
    "text in one row, messages in another": ([{"text": "a"}, {"messages": CHAT}], "has 'text' and 'messages'"),
    "prompt and messages": ([{"prompt": "a", "completion": "b", "messages": CHAT}],
                            "'prompt' and 'completion' and 'messages'"),
    "prompt without completion": ([{"prompt": "a"}], "has a 'prompt' column but no 'completion'"),
    "label beside messages": ([{"messages": CHAT, "label": "x"}], "'label' goes with 'text'"),
    "no known column": ([{"question": "a", "answer": "b"}], "needs a 'text' column"),
    "messages not a list": ([{"messages": 3}], "row 1: 'messages' must be a list of turns"),
    "messages empty": ([{"messages": []}], "row 1: 'messages' is an empty list"),
    "turn not an object": ([{"messages": ["hi"]}], "turn 1 of 'messages' must be an object"),
    "turn without role": ([{"messages": [{"content": "hi"}]}], "turn 1 of 'messages' has no role"),
    "turn without content": ([{"messages": [CHAT[1], {"role": "assistant"}]}],
                             "turn 2 of 'messages' (assistant) has no content"),
    "turn with null content": ([{"messages": [{"role": "user", "content": None}]}], "(user) has no content"),
    "turn with empty content": ([{"messages": [CHAT[1], {"role": "assistant", "content": "  "}]}],
                                "(assistant) has empty content"),
    "turn with content parts": ([{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}],
                                "has content of type list"),
    "empty completion": ([{"prompt": "Q?", "completion": ""}], "row 1: the completion is empty"),
    "empty completion turns": ([{"prompt": CHAT[1:2], "completion": []}], "the completion is an empty list"),
    "empty prompt turns": ([{"prompt": [], "completion": CHAT[2:3]}], "the prompt is an empty list"),
    "mixed prompt and completion": ([{"prompt": "Q?", "completion": CHAT[2:3]}],
                                    "must both be strings or both be lists"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_instruction_data_is_one_clear_error(tmp_path, case):
    rows, fragment = BAD[case]
    with pytest.raises(LowrankError) as raised:
        load_text_dataset(str(_jsonl(tmp_path, rows)))
    assert fragment in str(raised.value) and "d.jsonl" in str(raised.value)


def test_csv_messages_that_are_not_json(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('messages\n"[{""role"": ""user""}"\n')
    with pytest.raises(LowrankError, match="row 1: 'messages' is not a JSON list of turns"):
        load_text_dataset(str(path))
