"""Rank advice end to end on a tiny BERT and real Reuters R8 text: `lowrank sweep`, `lowrank analyze --data`,
`lowrank suggest-rank` (its file loads in peft), and their bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

TRAIN = ("--steps", "4", "--batch-size", "8", "--max-length", "32", "--quiet")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_bert_folder, r8_csv):
    from click.testing import CliRunner

    from lowrank_cli.main import _register, cli

    _register()
    out = tmp_path_factory.mktemp("adapter") / "r2"
    result = CliRunner().invoke(cli, ["train", "--model", str(tiny_bert_folder), "--data", str(r8_csv), "--rank", "2",
                                      "--out", str(out), *TRAIN])
    assert result.exit_code == 0, result.output
    return out


def test_analyze_with_data_gives_no_rank_advice_to_an_adapter_no_better_than_class_frequencies(
        invoke, adapter, tiny_bert_folder, r8_csv, tmp_path):
    """Four steps on a random-init BERT: its held-out loss is no better than predicting the class frequencies, so
    the adapter is not at a trained point and its rank is not judged (rank verdicts: tests/test_trained_point.py)."""
    report_path = tmp_path / "report.json"
    result = invoke("analyze", str(adapter), "--base", str(tiny_bert_folder), "--data", str(r8_csv),
                    "--max-length", "32", "--json", str(report_path), "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    model = report["sufficiency"]
    assert model["verdict"] == "collapsed" and model["suggested_r"] == 2 and model["examples"] == 0
    held_out = model["held_out"]
    assert held_out["metrics"]["examples"] == 60 and held_out["metrics"]["loss"] > held_out["constant_loss"]
    assert held_out["constant_loss"] < math.log(8) and model["trend"] is None  # 4 steps: too few for a trend
    assert all(m["verdict"] == "not judged" and m["suggested_rank"] == 2 for m in report["modules"])


def test_analyze_without_data_does_not_judge_lora_ranks(invoke, adapter):
    result = invoke("analyze", str(adapter), "--json", "-")
    report = json.loads(result.stdout)
    assert {m["verdict"] for m in report["modules"]} == {"not judged"}
    assert all(m["suggested_rank"] == 2 for m in report["modules"])
    assert "needs data" in report["summary"]["headline"] and report["sufficiency"] is None


def test_analyze_data_whose_labels_do_not_fit_the_head(invoke, adapter, tiny_bert_folder, tmp_path):
    data = tmp_path / "three-labels.csv"
    data.write_text("text,label\n" + "".join(f"some text number {i},{'abc'[i % 3]}\n" for i in range(30)))
    result = invoke("analyze", str(adapter), "--base", str(tiny_bert_folder), "--data", str(data), "--json",
                    str(tmp_path / "out.json"))
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and len(result.stderr.splitlines()) == 1
    assert "labels" in result.stderr and not (tmp_path / "out.json").exists()


def test_analyze_data_takes_the_base_from_the_adapter_config(invoke, adapter, tiny_bert_folder, r8_csv):
    """The adapter's base_model_name_or_path is the local tiny BERT folder: --data needs no --base (a hub name
    there is refused: tests/test_api.py)."""
    runs = [json.loads(invoke("analyze", str(adapter), "--data", str(r8_csv), "--max-length", "32", "--json", "-",
                              "--device", "cpu", *base).stdout) for base in ((), ("--base", str(tiny_bert_folder)))]
    assert [r["base_from"] for r in runs] == ["base_model_name_or_path", "given"]
    for report in runs:
        report.pop("base_from"), report["sufficiency"].pop("seconds")
    assert runs[0] == runs[1] and runs[0]["base"] == str(tiny_bert_folder)


def test_suggest_rank_writes_a_config_peft_loads(invoke, tiny_bert_folder, r8_csv, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "lora.json"
    result = invoke("suggest-rank", "--model", str(tiny_bert_folder), "--data", str(r8_csv), "--rank", "4",
                    "--max-length", "32", "--examples", "32", "--out", str(out), "--json", str(tmp_path / "e.json"),
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    fields = json.loads(out.read_text())
    evidence = json.loads((tmp_path / "e.json").read_text())
    assert evidence["parameters"] <= evidence["budget"] == 4 * sum(sum(m["shape"]) for m in evidence["modules"])
    ranks = {m["name"]: m["rank"] for m in evidence["modules"]}
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_folder, num_labels=8),
                           LoraConfig(**fields))
    for name, rank in ranks.items():
        layer = model.base_model.model.get_submodule(name)
        assert layer.lora_A["default"].weight.shape[0] == rank
        assert layer.scaling["default"] == pytest.approx(8.0 / rank)  # lowrank's default alpha, 8


@pytest.mark.parametrize("args, fragment", [
    (("--budget", "100", "--rank", "4"), "exactly one of --budget"),
    (("--budget", "10",), "below one rank per module"),
    (("--rank", "4", "--targets", "nosuchmodule"), "match no module"),
])
def test_suggest_rank_bad_input(invoke, tiny_bert_folder, r8_csv, tmp_path, args, fragment):
    out = tmp_path / "lora.json"
    result = invoke("suggest-rank", "--model", str(tiny_bert_folder), "--data", str(r8_csv), "--examples", "8",
                    "--max-length", "32", "--out", str(out), *args)
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and len(result.stderr.splitlines()) == 1
    assert fragment in result.stderr and not out.exists()


def test_sweep_tabulates_ranks_and_seeds(invoke, tiny_bert_folder, r8_csv, tmp_path):
    torch.manual_seed(0)
    result = invoke("sweep", "--model", str(tiny_bert_folder), "--data", str(r8_csv), "--out", str(tmp_path / "s"),
                    "--ranks", "1,2", "--seeds", "0,1", "--no-full", "--steps", "2", "--batch-size", "8",
                    "--max-length", "32", "--eval-samples", "16", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [(row["rank"], row["n"]) for row in table["ranks"]] == [(1, 2), (2, 2)]
    assert table["sufficient_rank"] in (1, 2) and len(table["doubling"]) == 1
    assert all(run["signals"]["examples"] == 240 for run in table["runs"])  # every adapter's gradient signals
    assert "r* =" in result.stdout


def test_a_seed_whose_default_rate_backed_off_stays_in_its_ranks_group():
    from lowrank.advice.sweep import requested_lr

    assert requested_lr({"config": {"lr": 0.005}, "lr_backoffs": []}) == 0.005
    assert requested_lr({"config": {"lr": 0.0025}, "lr_backoffs": [{"lr": 0.005, "step": 6}]}) == 0.005
    assert requested_lr({"config": {"lr": 0.001}}) == 0.001  # a run written before back-offs existed


@pytest.mark.parametrize("content, fragment", [("{not json", "not valid JSON"), ('{"r": 4, "use_dora": true}', "use_dora"),
                                               ('{"lora_alpha": 8}', "integer 'r'")])
def test_train_config_file_bad_input(invoke, tiny_bert_folder, r8_csv, tmp_path, content, fragment):
    config = tmp_path / "lora.json"
    config.write_text(content)
    out = tmp_path / "run"
    result = invoke("train", "--model", str(tiny_bert_folder), "--data", str(r8_csv), "--config", str(config),
                    "--out", str(out), *TRAIN)
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and len(result.stderr.splitlines()) == 1
    assert fragment in result.stderr and not out.exists()


def test_train_config_file_sets_per_module_ranks(invoke, tiny_bert_folder, r8_csv, tmp_path):
    config = tmp_path / "lora.json"
    config.write_text(json.dumps({"r": 2, "lora_alpha": 2, "target_modules": ["query", "value"],
                                  "rank_pattern": {"bert.encoder.layer.0.attention.self.query": 5},
                                  "alpha_pattern": {"bert.encoder.layer.0.attention.self.query": 5}}))
    out = tmp_path / "run"
    result = invoke("train", "--model", str(tiny_bert_folder), "--data", str(r8_csv), "--config", str(config),
                    "--out", str(out), *TRAIN)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["r"] == 2 and saved["rank_pattern"] == {"bert.encoder.layer.0.attention.self.query": 5}


def test_analyze_with_data_on_a_causal_lm_adapter(invoke, tiny_llama_folder, tmp_path):
    """Language modelling: the gradient sample is the first 256 blocks of the training text; the probe scores
    held-out blocks by their mean token loss, without accuracy."""
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"the quick brown fox jumps over the lazy dog number {i % 7}" for i in range(400)))
    out = tmp_path / "lm"
    trained = invoke("train", "--model", str(tiny_llama_folder), "--data", str(text), "--rank", "2", "--targets",
                     "q_proj,v_proj", "--out", str(out), "--steps", "6", "--batch-size", "8", "--max-length", "16",
                     "--lr", "1e-2", "--quiet")
    assert trained.exit_code == 0, trained.output
    result = invoke("analyze", str(out), "--base", str(tiny_llama_folder), "--data", str(text), "--max-length", "16",
                    "--json", "-", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sufficiency"]["examples"] > 64
    assert all(m["sufficiency"]["signal_to_noise"] > 0 for m in report["modules"])
    probe = report["sufficiency"]["probe"]
    assert probe["accuracy"] is None and probe["trained_accuracy"] is None and probe["heldout_examples"] > 0
    assert all(probe[name]["accuracy"] is None and probe[name]["accuracy_se"] is None and probe[name]["loss_se"] > 0
               for name in ("doubling", "halving", "continuation"))
    assert "points" not in report["summary"]["headline"].split("Suggested")[0]


def test_analyze_data_refuses_a_full_model(invoke, tiny_bert_folder, r8_csv):
    result = invoke("analyze", str(tiny_bert_folder), "--base", str(tiny_bert_folder), "--data", str(r8_csv))
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and "judges LoRA adapters" in result.stderr


def test_sweep_refuses_to_reuse_runs_trained_with_other_settings(invoke, tiny_bert_folder, r8_csv, tmp_path):
    common = ("--model", str(tiny_bert_folder), "--data", str(r8_csv), "--out", str(tmp_path / "s"), "--ranks", "1",
              "--seeds", "0", "--no-full", "--batch-size", "8", "--max-length", "32", "--eval-samples", "16",
              "--no-signals", "--quiet", "--device", "cpu")
    assert invoke("sweep", *common, "--steps", "2").exit_code == 0
    result = invoke("sweep", *common, "--steps", "3")
    assert result.exit_code == 2 and "other settings (max_steps)" in result.stderr


def test_analyze_data_refuses_an_adapter_without_its_head(invoke, adapter, tiny_bert_folder, r8_csv, tmp_path):
    import shutil

    copy = tmp_path / "no-head"
    shutil.copytree(adapter, copy)
    settings = json.loads((copy / "adapter_config.json").read_text())
    settings["modules_to_save"] = None
    (copy / "adapter_config.json").write_text(json.dumps(settings))
    result = invoke("analyze", str(copy), "--base", str(tiny_bert_folder), "--data", str(r8_csv))
    assert result.exit_code == 2 and "random head" in result.stderr and len(result.stderr.splitlines()) == 1


def test_analyze_data_with_too_few_examples(invoke, adapter, tiny_bert_folder, tmp_path):
    data = tmp_path / "small.csv"
    rows = [f"news item {i},{'abcdefgh'[i % 8]},{'train' if i < 40 else 'test'}\n" for i in range(60)]
    data.write_text("text,label,split\n" + "".join(rows))
    result = invoke("analyze", str(adapter), "--base", str(tiny_bert_folder), "--data", str(data), "--json",
                    str(tmp_path / "out.json"))
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and len(result.stderr.splitlines()) == 1
    assert "40 training examples" in result.stderr and not (tmp_path / "out.json").exists()


def test_analyze_data_of_the_wrong_task(invoke, adapter, tiny_bert_folder, tmp_path):
    """A plain-text corpus (language modelling) for a classifier adapter."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"paragraph {i} of a story about rank and data" for i in range(200)))
    result = invoke("analyze", str(adapter), "--base", str(tiny_bert_folder), "--data", str(corpus))
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and len(result.stderr.splitlines()) == 1
    assert "no labels" in result.stderr
