"""``lowrank intrinsic-dim`` through click's CliRunner: JSON on stdout, report files, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from lowrank.intrinsic.results import IntrinsicResult
from lowrank_cli.intrinsic_cmd import intrinsic_dim
from lowrank_cli.main import cli

cli.add_command(intrinsic_dim)
QUICK = ["--model", "mlp:64,16,10", "--data", "digits", "--dims", "8,32", "--seeds", "2", "--steps", "20",
         "--bootstrap", "20", "--quiet", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(*args: str):
    return CliRunner().invoke(cli, ["intrinsic-dim", *args])


def test_json_to_stdout_and_nothing_else(tmp_path):
    result = _run(*QUICK, "--full-grid", "--json", "-", "--png", str(tmp_path / "c.png"), "--html", str(tmp_path / "c.html"))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == "lowrank.intrinsic/1" and data["D"] == 64 * 16 + 16 + 16 * 10 + 10
    assert [p["d"] for p in data["curve"]] == [8, 32] and len(data["curve"][0]["scores"]) == 2
    assert data["projection"] == "fastfood" and data["said"] is False and data["baseline_kind"] == "direct"
    assert data["search"] == "grid" and data["grid"] == [8, 32]
    IntrinsicResult.from_dict(data)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "c.html").read_text() and "d90" in result.stderr


def test_adaptive_search_and_one_at_a_time_are_options():
    args = ["--model", "mlp:64,16,10", "--data", "digits", "--dims", "4,8,16,32,64", "--seeds", "2", "--steps", "30",
            "--bootstrap", "50", "--quiet", "--device", "cpu", "--json", "-"]
    adaptive, alone = _run(*args), _run(*args, "--one-at-a-time")
    assert adaptive.exit_code == alone.exit_code == 0, adaptive.stderr + alone.stderr
    first, second = json.loads(adaptive.stdout), json.loads(alone.stdout)
    assert first["search"] == "adaptive" and first["grid"] == [4, 8, 16, 32, 64]
    assert {4, 16, 64} <= {p["d"] for p in first["curve"]} <= {4, 8, 16, 32, 64}
    assert first["curve"] == second["curve"] and first["d90"] == second["d90"]


def test_report_on_stdout_and_json_file_with_global_baseline_and_said(tmp_path):
    out = tmp_path / "r.json"
    result = _run(*QUICK, "--said", "--projection", "sparse", "--baseline", "1.0", "--json", str(out))
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["said"] and data["baseline"] == 1.0 and data["baseline_scores"] == []
    assert "mean test accuracy" in result.stdout and "SAID" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--dims", "8,5000"], "d=5000 is larger than the number of parameters D=1210"),
    (["--projection", "gaussian"], "unknown projection 'gaussian'"),
    (["--dims", "a,b"], "--dims 'a,b'"),
    (["--baseline", "best"], "--baseline 'best'"),
    (["--model", "mlp:64,x"], "sizes must be integers"),
    (["--model", "mlp:10,10"], "takes 10 inputs but digits has 64 pixels"),
    (["--data", "nowhere.npz"], "neither a registry key"),
    (["--direct", "head.*"], "'head.*' matches no parameter"),
])
def test_bad_input_is_one_error_line(args, message):
    result = _run(*QUICK, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.stderr
    assert result.stdout == ""


def test_dataset_without_labels_is_an_error(tmp_path):
    images = tmp_path / "unlabelled.npz"
    np.savez(images, x=np.zeros((20, 64)))
    result = _run(*QUICK, "--data", str(images))
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and "no labels" in result.stderr
    texts = tmp_path / "corpus.txt"
    texts.write_text("some text\n\nmore text\n")
    result = _run(*QUICK, "--model", str(tmp_path), "--data", str(texts))
    assert result.exit_code == 2 and result.stderr.startswith("Error:") and "no labels" in result.stderr


def test_help_names_the_contract_options():
    result = _run("--help")
    for option in ("--model", "--data", "--dims", "--projection", "--said", "--seeds", "--json"):
        assert option in result.stdout


def test_hugging_face_classifier_on_text(tiny_bert_folder, r8_csv):
    result = _run("--model", str(tiny_bert_folder), "--data", str(r8_csv), "--dims", "40", "--seeds", "1",
                  "--steps", "3", "--batch-size", "8", "--max-length", "24", "--said", "--direct", "classifier.*",
                  "--bootstrap", "10", "--quiet", "--device", "cpu", "--json", "-")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["said"] and data["direct_patterns"] == ["classifier.*"] and data["direct_parameters"] == 32 * 8 + 8
    assert data["curve"][0]["d"] == 40 and 0.0 <= data["curve"][0]["mean"] <= 1.0
