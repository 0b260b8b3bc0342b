"""Instruction examples (:mod:`lowrank.data.instructions`) -> token ids and per-token labels, with the loss on the
completion (prompt and non-assistant tokens masked, as TRL trains by default) or, ``loss_on="all"``, on every token.

Each example is rendered to a string and the spans of its characters that are learned:

- :class:`PromptCompletion`: ``prompt + completion``, tokenized with the tokenizer's special tokens (its BOS, if it
  adds one) and EOS appended; learned: the completion's characters and the EOS.
- :class:`Conversation`: ``tokenizer.apply_chat_template(turns, tokenize=False)``, tokenized without adding special
  tokens (the template writes its own). A learned turn ``i`` spans the characters

      [len(render(turns[:i], add_generation_prompt=True)),  len(render(turns[:i + 1]).rstrip()))

  of the whole rendering: the turn as the template writes it after the generation prompt, its content and the
  end-of-turn token that closes it, without the whitespace before the next turn. Both renderings must begin the
  whole one; a template that rewrites earlier turns once later ones follow is refused.

With ``loss_on="all"`` every character is learned (and the EOS). Token ``t`` is learned when its characters (the
fast tokenizer's offset mapping) overlap a learned span: its label is its id, else :data:`IGNORE_INDEX`. Sequences
are cut to ``max_length`` tokens; an example left with no learned token after its first (the first is never a
target) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

from lowrank.data.batches import IGNORE_INDEX, TokenizedSet
from lowrank.data.instructions import LOSS_ON, Conversation, Example, PromptCompletion
from lowrank.errors import LowrankError


@dataclass(frozen=True)
class Rendered:
    """An example as text, the learned character spans ``[start, end)``, whether the tokenizer adds its special
    tokens (plain text; a chat template writes its own) and whether a learned EOS is appended."""

    text: str
    spans: tuple[tuple[int, int], ...]
    special_tokens: bool
    eos: bool


def render(tokenizer, example: Example, loss_on: str) -> Rendered:
    """The text of ``example`` and its learned spans (see the module docstring)."""
    if loss_on not in LOSS_ON:
        raise LowrankError(f"loss-on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
    if isinstance(example, PromptCompletion):
        text = example.prompt + example.completion
        return Rendered(text, ((0 if loss_on == "all" else len(example.prompt), len(text)),), True, True)
    return _render_chat(tokenizer, example, loss_on)


def _render_chat(tokenizer, example: Conversation, loss_on: str) -> Rendered:
    messages = [{"role": t.role, "content": t.content} for t in example.turns]
    whole = _apply(tokenizer, messages, False, example.origin)
    if loss_on == "all":
        return Rendered(whole, ((0, len(whole)),), False, False)
    if not any(example.trained):
        raise LowrankError(f"{example.origin} has no assistant turn, so with --loss-on completion nothing of it is "
                           "learned; add the assistant's reply, or learn every token with --loss-on all")
    if example.trained[0]:
        raise LowrankError(f"{example.origin} begins with the {example.turns[0].role} turn it learns; a learned turn "
                           "follows the turns it answers (begin with a user or system turn, or --loss-on all)")
    spans = []
    for i, learned in enumerate(example.trained):
        if not learned:
            continue
        before = _apply(tokenizer, messages[:i], True, example.origin)
        through = _apply(tokenizer, messages[: i + 1], False, example.origin)
        turn = f"turn {i + 1} ({example.turns[i].role})"
        if not through.startswith(before):
            raise LowrankError(f"{example.origin}: the chat template of {tokenizer.name_or_path} does not begin "
                               f"{turn} with its generation prompt, so the turn's tokens cannot be told apart; "
                               "--loss-on all learns every token")
        if not whole.startswith(through):
            raise LowrankError(f"{example.origin}: the chat template of {tokenizer.name_or_path} renders {turn} "
                               "differently once later turns follow, so its tokens cannot be located in the "
                               "conversation; --loss-on all learns every token")
        spans.append((len(before), len(through.rstrip())))
    return Rendered(whole, tuple(spans), False, False)


def _apply(tokenizer, messages: list[dict], generation_prompt: bool, origin: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise LowrankError(f"{origin} is a chat example, but the tokenizer of {tokenizer.name_or_path} has no chat "
                           "template to render it; use a model whose tokenizer has one, or give 'prompt' and "
                           "'completion' as plain strings")
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except (TemplateError, ValueError) as error:
        raise LowrankError(f"{origin}: the chat template of {tokenizer.name_or_path} refuses the turns: "
                           f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def tokenize_examples(tokenizer, examples: tuple[Example, ...], max_length: int, loss_on: str) -> TokenizedSet:
    """One sequence per example, cut to ``max_length`` tokens, with its labels (module docstring)."""
    if examples and not tokenizer.is_fast:
        raise LowrankError(f"the tokenizer of {tokenizer.name_or_path} is a slow (Python) tokenizer; instruction "
                           "data needs a fast one (tokenizer.json), whose offsets locate the learned tokens")
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids, targets = [], []
    for example in examples:
        rendered = render(tokenizer, example, loss_on)
        encoded = tokenizer(rendered.text, add_special_tokens=rendered.special_tokens, return_offsets_mapping=True)
        tokens = list(encoded["input_ids"])
        learned = [any(start < end_ and end > start_ for start_, end_ in rendered.spans)
                   for start, end in encoded["offset_mapping"]]
        if rendered.eos and eos is not None:
            if tokens and tokens[-1] == eos:  # the tokenizer appended it already
                learned[-1] = True
            else:
                tokens.append(eos)
                learned.append(True)
        tokens, learned = tokens[:max_length], learned[:max_length]
        if any(learned[1:]):
            ids.append(tuple(tokens))
            targets.append(tuple(t if keep else IGNORE_INDEX for t, keep in zip(tokens, learned)))
    return TokenizedSet(tuple(ids), (), tokenizer.pad_token_id, tuple(targets))
