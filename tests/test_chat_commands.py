"""Instruction and chat data through the commands (issue 29, item 1): a chat JSONL of real dialogue trains
SmolLM2-135M-Instruct with the loss on the assistant turns only; `analyze --data`, `suggest-rank` and `resize
--data` read the same file; `--loss-on all` is stored in metrics.json and reused by `analyze --data`; plain
prompt/completion trains a model whose tokenizer has no chat template; bad input is one `Error:` line, nothing
written."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from chat_reference import assistant_mask

from lowrank.data.text import load_text_dataset

TINY = ("--steps", "4", "--batch-size", "8", "--max-length", "64", "--quiet")


def _ok(result) -> None:
    assert result.exit_code == 0, result.output + result.stderr


def _rendered_ids(tokenizer, example) -> list[int]:
    messages = [{"role": t.role, "content": t.content} for t in example.turns]
    return tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def small_chat(friends_chat, tmp_path_factory):
    """72 training and 8 test conversations of the Friends chat file (the gradient sample needs 64 examples)."""
    lines = friends_chat.read_text(encoding="utf-8").splitlines()
    path = tmp_path_factory.mktemp("chat") / "small_chat.jsonl"
    path.write_text("\n".join(lines[:72] + lines[100:108]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def all_tokens_run(invoke, tiny_chat_llama_folder, small_chat, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "all"
    _ok(invoke("train", "--model", tiny_chat_llama_folder, "--data", small_chat, "--out", out, "--loss-on", "all",
               *TINY))
    return out


def test_chat_jsonl_trains_smollm2_with_completion_only_loss(invoke, friends_chat, smollm2_tokenizer, tmp_path):
    """The run's step-0 held-out loss (the base model) is the mean cross-entropy over exactly the assistant tokens
    of the template's rendering, computed here independently with the Hugging Face model. (12 training and 6 test
    conversations: SmolLM2's forward and backward passes are the slow part on a CPU.)"""
    from transformers import AutoModelForCausalLM

    from lowrank.assets import resolve_model_path

    lines = friends_chat.read_text(encoding="utf-8").splitlines()
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(lines[:12] + lines[100:106]) + "\n", encoding="utf-8")
    out = tmp_path / "smol"
    _ok(invoke("train", "--model", "smollm2-135m", "--data", data, "--out", out, "--rank", "4", "--steps", "2",
               "--batch-size", "2", "--max-length", "96", "--quiet"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "lm" and metrics["config"]["loss_on"] == "completion"
    assert (out / "adapter_model.safetensors").is_file() and len(metrics["history"]) == 4
    assert all(torch.isfinite(torch.tensor(h.get("train_loss", h.get("loss")))) for h in metrics["history"])
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m"), dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for example in load_text_dataset(str(data)).test_examples:
            ids, learned = (part[:96] for part in assistant_mask(smollm2_tokenizer, example.turns))
            labels = torch.tensor(ids[1:]).masked_fill(~torch.tensor(learned[1:]), -100)
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            total += float(F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum"))
            count += int(sum(learned[1:]))
    base = metrics["history"][0]
    assert base["tokens"] == count
    assert base["loss"] == pytest.approx(total / count, rel=1e-4)


def test_loss_on_all_is_stored_and_reused_by_analyze_data(invoke, all_tokens_run, tiny_chat_llama_folder,
                                                          small_chat, smollm2_tokenizer, tmp_path):
    tests = load_text_dataset(str(small_chat)).test_examples
    every_token = sum(min(len(_rendered_ids(smollm2_tokenizer, e)), 64) - 1 for e in tests)
    metrics = json.loads((all_tokens_run / "metrics.json").read_text())
    assert metrics["config"]["loss_on"] == "all" and metrics["final"]["tokens"] == every_token
    report = tmp_path / "report.json"
    _ok(invoke("analyze", all_tokens_run, "--base", tiny_chat_llama_folder, "--data", small_chat,
               "--max-length", "64", "--json", report))
    sufficiency = json.loads(report.read_text())["sufficiency"]
    assert sufficiency["loss_on"] == "all" and sufficiency["held_out"]["metrics"]["tokens"] == every_token
    assert sufficiency["verdict"] in ("raise r", "adequate", "lower r", "not converged", "collapsed")


def test_suggest_rank_and_resize_read_the_chat_file(invoke, all_tokens_run, tiny_chat_llama_folder, small_chat,
                                                    smollm2_tokenizer, tmp_path):
    lora = tmp_path / "lora.json"
    _ok(invoke("suggest-rank", "--model", tiny_chat_llama_folder, "--data", small_chat, "--rank", "2",
               "--examples", "32", "--max-length", "64", "--out", lora))
    assert json.loads(lora.read_text())["r"] >= 1
    resized = tmp_path / "r2"
    _ok(invoke("resize", all_tokens_run, "--rank", "2", "--out", resized, "--data", small_chat, "--max-length",
               "64", "--json", "-", "--quiet"))
    evaluation = json.loads((resized / "compress_report.json").read_text())["evaluation"]
    assistant = sum(sum(learned[1:64]) for learned in (assistant_mask(smollm2_tokenizer, e.turns)[1] for e in
                                                       load_text_dataset(str(small_chat)).test_examples))
    assert evaluation["metric"] == "perplexity" and evaluation["original"]["tokens"] == assistant


def test_plain_prompt_completion_trains_a_model_whose_tokenizer_has_no_template(invoke, tiny_llama_folder,
                                                                                minilm_tokenizer, friends_chat,
                                                                                tmp_path):
    """MiniLM's tokenizer adds [CLS] ... [SEP]: the completion's tokens and the closing [SEP] are learned."""
    rows = [json.loads(line) for line in friends_chat.read_text(encoding="utf-8").splitlines()[:40]]
    pairs = [{"prompt": r["messages"][-2]["content"] + "\nReply:", "completion": " " + r["messages"][-1]["content"],
              "split": "test" if i < 8 else "train"} for i, r in enumerate(rows)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    out = tmp_path / "run"
    _ok(invoke("train", "--model", tiny_llama_folder, "--data", path, "--out", out, *TINY))
    completion_tokens = sum(len(minilm_tokenizer(p["completion"], add_special_tokens=False)["input_ids"]) + 1
                            for p in pairs[:8])
    assert json.loads((out / "metrics.json").read_text())["final"]["tokens"] == completion_tokens


BAD = {
    "text and messages": lambda chat: [{"text": "hello", "messages": chat}] * 20,
    "malformed turn": lambda chat: [{"messages": chat[:-1] + [{"role": "assistant"}]}] * 20,
    "chat for a tokenizer without a template": lambda chat: [{"messages": chat}] * 20,
}
FRAGMENTS = {"text and messages": "has 'text' and 'messages' columns",
             "malformed turn": "row 1: turn 5 of 'messages' (assistant) has no content",
             "chat for a tokenizer without a template": "has no chat template to render it"}


@pytest.fixture(scope="module")
def plain_adapter(invoke, tiny_llama_folder, tmp_path_factory):
    """A LoRA adapter on the tiny Llama whose (MiniLM) tokenizer has no chat template."""
    folder = tmp_path_factory.mktemp("plain")
    data = folder / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"the market rose {i} points"}) + "\n" for i in range(80)))
    _ok(invoke("train", "--model", tiny_llama_folder, "--data", data, "--out", folder / "run", "--steps", "2",
               "--batch-size", "4", "--max-length", "16", "--quiet"))
    return folder / "run"


@pytest.mark.parametrize("command", ["train", "analyze", "suggest-rank"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_chat_input_is_one_error_line_and_writes_nothing(invoke, tiny_llama_folder, plain_adapter, friends_chat,
                                                            tmp_path, command, case):
    chat = json.loads(friends_chat.read_text(encoding="utf-8").splitlines()[0])["messages"]
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in BAD[case](chat)), encoding="utf-8")
    written = tmp_path / "out"
    args = {"train": ("train", "--model", tiny_llama_folder, "--data", data, "--out", written, *TINY),
            "analyze": ("analyze", plain_adapter, "--base", tiny_llama_folder, "--data", data, "--json", written),
            "suggest-rank": ("suggest-rank", "--model", tiny_llama_folder, "--data", data, "--rank", "2", "--out",
                             written)}[command]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and FRAGMENTS[case] in lines[0], result.stderr
    assert "Traceback" not in result.output and not written.exists()


def test_analyze_loss_on_without_data_is_refused(invoke, plain_adapter, tmp_path):
    result = invoke("analyze", plain_adapter, "--loss-on", "all", "--json", tmp_path / "r.json")
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        "Error: --loss-on says what --data's instruction examples learn; give --data too"]
    assert not (tmp_path / "r.json").exists()
