"""``lowrank analyze`` through click's CliRunner: outputs, ``--json -``, and every bad input of issue 3.

Each bad input must give exit status 2, exactly one stderr line starting with ``Error:``, no traceback, no output
file, and unchanged input files (hashed before and after).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file
from test_analysis import peft_adapter, planted_pair, save_base, tiny

from lowrank_cli.analyze_cmd import analyze
from lowrank_cli.main import cli

cli.add_command(analyze)


def _run(*args: str):
    return CliRunner().invoke(cli, ["analyze", *args])


def _hashes(*roots: Path) -> dict[str, str]:
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    model = tiny("llama")
    save_base(model, folder / "base")
    peft_adapter(folder / "adapter", model, 4, ["q_proj", "v_proj"])
    planted_pair(folder / "pair", {"model.layers.0.self_attn.q_proj": 3}, shape=(32, 32))
    return folder


def test_terminal_report_by_default(workspace):
    result = _run(str(workspace / "adapter"), "--base", str(workspace / "base"))
    assert result.exit_code == 0, result.output
    assert "Summary" in result.stdout and "self_attn.q_proj" in result.stdout


def test_print_report_adds_the_terminal_report_to_written_files(workspace, tmp_path):
    plain = _run(str(workspace / "adapter"), "--base", str(workspace / "base"))
    result = _run(str(workspace / "adapter"), "--base", str(workspace / "base"), "--json", str(tmp_path / "r.json"),
                  "--print-report")
    assert result.exit_code == 0, result.output
    assert result.stdout == plain.stdout and json.loads((tmp_path / "r.json").read_text())["modules"]
    refused = _run(str(workspace / "adapter"), "--json", "-", "--print-report")
    assert refused.exit_code == 2 and "Error: --print-report with --json -" in refused.output


def test_json_dash_writes_only_json_to_stdout(workspace):
    result = _run(str(workspace / "adapter"), "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == "lowrank.analysis/1" and len(data["modules"]) == 4


def test_all_output_files(workspace, tmp_path):
    out = {name: tmp_path / f"report.{name}" for name in ("json", "md", "html")}
    result = _run(str(workspace / "pair" / "tuned.safetensors"), "--base", str(workspace / "pair" / "base.safetensors"),
                  "--against", str(workspace / "pair" / "tuned.safetensors"), "--json", str(out["json"]),
                  "--markdown", str(out["md"]), "--html", str(out["html"]))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    data = json.loads(out["json"].read_text())
    (comparison,) = data["comparisons"]
    assert comparison["phi"] == pytest.approx(1.0) and max(comparison["principal_angles_deg"]) < 1e-3
    assert out["md"].read_text().startswith("# lowrank analyze")
    assert "data:image/png;base64," in out["html"].read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json", "report.md"]


def test_help_lists_the_contract_options():
    result = CliRunner().invoke(cli, ["analyze", "--help"])
    assert result.exit_code == 0
    for option in ("--base", "--against", "--json", "--markdown", "--html", "--allow-pickle", "--dtype", "--k"):
        assert option in result.stdout


class _Payload:
    """Unpickling this calls ``open(path, 'w')``: the file appears only if pickle code runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _copy_adapter(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def _edit_tensors(folder: Path, edit) -> None:
    tensors = load_file(folder / "adapter_model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "adapter_model.safetensors")


def _case(name: str, workspace: Path, tmp: Path) -> tuple[list[str], str]:
    """Build one bad input under ``tmp``; return the CLI arguments and a regex the error line must match."""
    adapter, base = workspace / "adapter", str(workspace / "base")
    if name == "missing path":
        return [str(tmp / "nowhere")], "does not exist"
    if name == "empty folder":
        (tmp / "empty").mkdir()
        return [str(tmp / "empty"), "--base", base], "holds no model weights"
    if name in ("truncated safetensors", "corrupt safetensors"):
        data = (workspace / "pair" / "tuned.safetensors").read_bytes()
        (tmp / "bad.safetensors").write_bytes(data[: len(data) // 2] if name.startswith("truncated") else b"\x07" * 64)
        return [str(tmp / "bad.safetensors"), "--base", str(workspace / "pair" / "base.safetensors")], "not a valid"
    if name == "truncated adapter":
        folder = _copy_adapter(adapter, tmp / "a")
        data = (folder / "adapter_model.safetensors").read_bytes()
        (folder / "adapter_model.safetensors").write_bytes(data[:-100])
        return [str(folder)], "safetensors"
    if name == "malformed adapter_config.json":
        folder = _copy_adapter(adapter, tmp / "a")
        (folder / "adapter_config.json").write_text('{"r": 4, "lora_alpha": ')
        return [str(folder)], "adapter_config.json is not valid JSON"
    if name == "adapter_config.json without r":
        folder = _copy_adapter(adapter, tmp / "a")
        config = json.loads((folder / "adapter_config.json").read_text())
        del config["r"]
        (folder / "adapter_config.json").write_text(json.dumps(config))
        return [str(folder)], "has rank 4 but adapter_config.json gives r=8"  # peft's default r
    if name == "lora_A without lora_B":
        folder = _copy_adapter(adapter, tmp / "a")
        _edit_tensors(folder, lambda t: t.pop("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"))
        return [str(folder)], "v_proj.*lora_B"
    if name == "NaN adapter weights":
        folder = _copy_adapter(adapter, tmp / "a")
        _edit_tensors(folder, lambda t: t["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"].fill_(
            float("nan")))
        return [str(folder)], "NaN"
    if name == "NaN full weights":
        tensors = load_file(workspace / "pair" / "tuned.safetensors")
        next(iter(tensors.values()))[0, 0] = float("nan")
        save_file(tensors, tmp / "nan.safetensors")
        return [str(tmp / "nan.safetensors"), "--base", str(workspace / "pair" / "base.safetensors")], "NaN"
    if name == "pickle checkpoint":
        (tmp / "model").mkdir()
        (tmp / "model" / "pytorch_model.bin").write_bytes(pickle.dumps({"w.weight": _Payload(tmp / "pwned")}))
        return [str(tmp / "model"), "--base", base], "pickle file.*--allow-pickle"
    if name == "pickle checkpoint, opted in":
        (tmp / "evil.bin").write_bytes(pickle.dumps({"w.weight": _Payload(tmp / "pwned")}))
        return [str(tmp / "evil.bin"), "--base", base, "--allow-pickle"], "could not be loaded safely"
    if name == "pickle base":
        (tmp / "base.pt").write_bytes(pickle.dumps({"w.weight": _Payload(tmp / "pwned")}))
        return [str(adapter), "--base", str(tmp / "base.pt")], "pickle file"
    if name == "base with other shapes":
        from transformers import LlamaConfig, LlamaForCausalLM

        LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=48, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp / "other")
        return [str(adapter), "--base", str(tmp / "other")], r"shape \[32, 32\].*\[48, 48\]"
    if name == "full model against a base with other shapes":
        save_file({"model.layers.0.self_attn.q_proj.weight": torch.zeros(32, 16)}, tmp / "small.safetensors")
        return [str(workspace / "pair" / "tuned.safetensors"), "--base", str(tmp / "small.safetensors")], "shape"
    raise AssertionError(name)


CASES = ["missing path", "empty folder", "truncated safetensors", "corrupt safetensors", "truncated adapter",
         "malformed adapter_config.json", "adapter_config.json without r", "lora_A without lora_B",
         "NaN adapter weights", "NaN full weights", "pickle checkpoint", "pickle checkpoint, opted in", "pickle base",
         "base with other shapes", "full model against a base with other shapes"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_error_line_and_touches_nothing(case, workspace, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args, pattern = _case(case, workspace, inputs)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    before = _hashes(workspace, inputs)
    result = _run(*args, "--json", str(outputs / "r.json"), "--html", str(outputs / "r.html"),
                  "--markdown", str(outputs / "r.md"))
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), (case, result.stderr)
    assert re.search(pattern, lines[0]), (case, lines[0])
    assert "Traceback" not in result.output and result.stdout == ""
    assert list(outputs.iterdir()) == []
    assert _hashes(workspace, inputs) == before
    assert not (inputs / "pwned").exists()


def test_unwritable_output_is_refused_before_any_work(workspace, tmp_path):
    result = _run(str(workspace / "adapter"), "--html", str(tmp_path / "no" / "such" / "r.html"))
    assert result.exit_code == 2 and result.stderr.startswith("Error: --html")
