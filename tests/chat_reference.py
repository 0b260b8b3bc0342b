"""An independent reference for SmolLM2-135M-Instruct's chat template: its rendering of each turn is
``<|im_start|>ROLE\\nCONTENT<|im_end|>\\n`` (with a default system turn when the conversation has none), so the
tokens a completion-only loss learns are those inside ``CONTENT<|im_end|>`` of each assistant turn, located by
string search in the rendering and mapped to tokens through the tokenizer's offsets."""

from __future__ import annotations


def assistant_mask(tokenizer, turns) -> tuple[list[int], list[bool]]:
    """The ids of the template's rendering of ``turns`` (objects with ``role`` and ``content``) and, per token,
    whether it lies inside an assistant turn's content or its closing ``<|im_end|>``."""
    messages = [{"role": t.role, "content": t.content} for t in turns]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    spans, at = [], 0
    for turn in turns:
        block = f"<|im_start|>{turn.role}\n{turn.content}<|im_end|>"
        start = rendered.index(block, at)
        at = start + len(block)
        if turn.role == "assistant":
            spans.append((start + len("<|im_start|>assistant\n"), at))
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    learned = [any(a <= s and e <= b for a, b in spans) for s, e in encoded["offset_mapping"]]
    return list(encoded["input_ids"]), learned
