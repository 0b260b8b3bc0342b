"""RankCallback (lowrank/integrations/transformers.py) in real transformers.Trainer runs of a tiny random-init Llama
on the CPU: rank logs at the scheduled steps and evaluations, through the Trainer's logging; the final JSON is
``lowrank analyze`` of the saved adapter; training is unchanged; bad input fails before the first step."""

from __future__ import annotations

import json
import time

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

import lowrank
from lowrank.data.text import load_text_dataset
from lowrank.errors import LowrankError
from lowrank.integrations.transformers import HTML_FILE, JSON_FILE, RankCallback

MODULES = [f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")]


class Texts(torch.utils.data.Dataset):
    """Language-modelling examples: each text's first 32 tokens, as inputs and labels."""

    def __init__(self, tokenizer, texts):
        self.ids = [tokenizer(t, truncation=True, max_length=32)["input_ids"] for t in texts]

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": torch.tensor(self.ids[i]), "labels": torch.tensor(self.ids[i])}


def _collate(batch):
    width = max(len(x["input_ids"]) for x in batch)
    out = {"input_ids": torch.zeros(len(batch), width, dtype=torch.long),
           "labels": torch.full((len(batch), width), -100), "attention_mask": torch.zeros(len(batch), width,
                                                                                         dtype=torch.long)}
    for i, x in enumerate(batch):
        n = len(x["input_ids"])
        out["input_ids"][i, :n], out["labels"][i, :n], out["attention_mask"][i, :n] = x["input_ids"], x["labels"], 1
    return out


class Reporter(TrainerCallback):
    """Stands where a report_to integration stands (added with the Trainer, before RankCallback): what it is sent."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs)))


@pytest.fixture(scope="module")
def texts():
    return load_text_dataset("reuters-r8").train_texts[:440]


def _peft_llama(folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            lora_dropout=0.1, task_type="CAUSAL_LM"))


def _trainer(model, tokenizer, texts, out, callbacks=(), steps=6, eval_steps: int | None = 3):
    args = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=5e-3,
                             logging_steps=2, report_to=[], save_strategy="no",
                             eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps, use_cpu=True, seed=0,
                             disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=Texts(tokenizer, texts[:400]),
                   eval_dataset=Texts(tokenizer, texts[400:]), data_collator=_collate, callbacks=list(callbacks))


def test_trainer_run_logs_on_schedule_and_writes_what_lowrank_analyze_writes(
        tiny_llama_folder, minilm_tokenizer, texts, invoke, tmp_path):
    reporter = Reporter()
    model = _peft_llama(tiny_llama_folder)
    trainer = _trainer(model, minilm_tokenizer, texts, tmp_path / "out", [reporter])
    trainer.add_callback(RankCallback(every=2))
    trainer.train()
    history = trainer.state.log_history
    rank_logs = {entry["step"]: entry for entry in history if "lowrank/norm" in entry}
    assert sorted(rank_logs) == [2, 3, 4, 6]  # every 2 steps, and the evaluation at step 3
    assert [s for s, e in reporter.logs if "lowrank/norm" in e] == [2, 3, 4, 6]  # what report_to receives
    assert {e["step"] for e in history if "loss" in e} == {2, 4, 6}  # the Trainer's own logs are all still there
    last = rank_logs[6]
    for name in MODULES:
        assert 1 <= last[f"lowrank/{name}/k90"] <= 4 and 1 < last[f"lowrank/{name}/effective_rank"] <= 4
    assert rank_logs[2]["lowrank/norm"] < rank_logs[4]["lowrank/norm"] < last["lowrank/norm"]  # B grows from 0
    report = lowrank.analyze(model, device="cpu").analysis  # the last log is the final weights' analysis
    assert {m.name: m.effective_rank for m in report.modules} == \
        {n: last[f"lowrank/{n}/effective_rank"] for n in MODULES}
    assert last["lowrank/norm"] == pytest.approx(sum(m.frobenius_norm ** 2 for m in report.modules) ** 0.5)
    assert last["lowrank/max_k90"] == max(m.energy_rank["0.9"] for m in report.modules)

    model.save_pretrained(tmp_path / "adapter")
    result = invoke("analyze", tmp_path / "adapter", "--json", "-", "--device", "cpu")
    assert result.exit_code == 0, result.output
    written = (tmp_path / "out" / JSON_FILE).read_text()
    assert json.loads(written)["checkpoint"] == "PeftModelForCausalLM (in memory)"
    assert written.replace('"PeftModelForCausalLM (in memory)"', json.dumps(str(tmp_path / "adapter")), 1) == \
        result.stdout
    assert "<h1>lowrank analyze</h1>" in (tmp_path / "out" / HTML_FILE).read_text()


def test_signals_on_data_are_logged_and_training_is_unchanged(tiny_llama_folder, minilm_tokenizer, texts, tmp_path):
    """With data the callback loads the base model for the gradient signals; the run's weights are bit-identical to
    a run without the callback (its random draws do not touch training's streams: dropout, data order)."""
    data = tmp_path / "train.json"  # the training texts as a JSON array, a file a Trainer's dataset is read from
    data.write_text(json.dumps([{"text": t} for t in texts[:400]]))
    plain = _peft_llama(tiny_llama_folder)
    _trainer(plain, minilm_tokenizer, texts, tmp_path / "plain", steps=3, eval_steps=None).train()
    watched = _peft_llama(tiny_llama_folder)
    trainer = _trainer(watched, minilm_tokenizer, texts, tmp_path / "watched", steps=3, eval_steps=None)
    trainer.add_callback(RankCallback(every=2, data=str(data), examples=64, max_length=32))
    trainer.train()
    logs = [e for e in trainer.state.log_history if "lowrank/signal_to_noise" in e]
    assert [e["step"] for e in logs] == [2]  # then step 3 trains, drawing dropout masks after the measurement
    for entry in logs:
        assert entry["lowrank/signal_to_noise"] > 0 and entry["lowrank/doubling_gain"] > 0
        assert all(0 <= entry[f"lowrank/{n}/outside_fraction"] <= 1 for n in MODULES)
    for (name, a), b in zip(plain.named_parameters(), watched.parameters()):
        assert torch.equal(a, b), name


def test_off_schedule_steps_return_at_once():
    """Off its schedule on_step_end touches nothing (it is given no model and no arguments here) and does one
    modulo: 19,900 calls in under 50 ms (2.5 us each, loop included: generous for a loaded CPU)."""
    callback, state, control = RankCallback(every=200), TrainerState(), TrainerControl()
    began = time.perf_counter()
    for step in range(1, 20_001):
        if step % 200:
            state.global_step = step
            assert callback.on_step_end(None, state, control) is None
    elapsed = time.perf_counter() - began
    assert elapsed < 0.05, elapsed
    assert not state.log_history and not control.should_log


@pytest.mark.parametrize("case, fragment", [
    ("no lora", "LlamaForCausalLM has no LoRA layers"),
    ("unlabelled data for a classifier", "has no labels, but the adapter in PeftModelForSequenceClassification"),
    ("labels that do not fit the head", "has 3 labels, but the classifier being trained has 8 outputs"),
])
def test_bad_input_fails_before_the_first_step_and_writes_nothing(
        case, fragment, tiny_llama_folder, tiny_bert_folder, minilm_tokenizer, texts, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    data = tmp_path / "data.csv"
    if case == "no lora":
        model, data = AutoModelForCausalLM.from_pretrained(tiny_llama_folder), None
    else:
        model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder),
                               LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
        data.write_text("text\n" + "".join(f"some text {i}\n" for i in range(90)) if case.startswith("unlabelled")
                        else "text,label\n" + "".join(f"some text {i},{'abc'[i % 3]}\n" for i in range(90)))
    trainer = _trainer(model, minilm_tokenizer, texts, tmp_path / "out", steps=2)
    trainer.add_callback(RankCallback(every=1, data=str(data) if data else None, examples=64, max_length=32))
    with pytest.raises(LowrankError, match=fragment):
        trainer.train()
    assert trainer.state.global_step == 0
    assert not (tmp_path / "out" / JSON_FILE).exists() and not (tmp_path / "out" / HTML_FILE).exists()


def test_sft_trainer(tiny_llama_folder, minilm_tokenizer, texts, tmp_path):
    """TRL's SFTTrainer (when TRL is installed) logs the same rank metrics and writes the report."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    model = _peft_llama(tiny_llama_folder)
    config = trl.SFTConfig(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=8,
                           learning_rate=5e-3, logging_steps=2, report_to=[], save_strategy="no", use_cpu=True,
                           max_length=32, disable_tqdm=True, eos_token="[SEP]")  # the WordPiece tokenizer has no EOS
    trainer = trl.SFTTrainer(model=model, args=config, processing_class=minilm_tokenizer,
                             train_dataset=datasets.Dataset.from_dict({"text": list(texts[:200])}))
    trainer.add_callback(RankCallback(every=2))
    trainer.train()
    assert [e["step"] for e in trainer.state.log_history if "lowrank/norm" in e] == [2, 4]
    assert json.loads((tmp_path / "out" / JSON_FILE).read_text())["schema"] == "lowrank.analysis/1"
