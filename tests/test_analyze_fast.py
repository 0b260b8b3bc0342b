"""``lowrank analyze --fast``: full deltas sketched, their exact energy ranks (float64 numpy) inside the reported
intervals, the verdict honest about straddling, amplification's ||dW||_F exact, intruders skipped with a note,
LoRA untouched, old JSON still parsed, intervals rendered, and the CLI flag."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from test_analysis import peft_adapter, save_base, tiny

from lowrank.analysis.sketched_measures import possible_verdicts
from lowrank.analysis.results import AnalysisReport, ModuleAnalysis
from lowrank.analysis.run import AnalyzeConfig, analyze
from lowrank.render.markdown import render as to_markdown
from lowrank_cli.analyze_cmd import analyze as analyze_command
from lowrank_cli.main import cli

cli.add_command(analyze_command)
SHAPES = {"layers.0.mlp": (480, 340), "layers.0.attn": (340, 340), "layers.1.mlp": (340, 500), "layers.1.k": (40, 340)}


def exact_rank(s: np.ndarray, tau: float) -> int:
    cum = np.cumsum(s**2)
    return int(np.argmax(cum >= tau * cum[-1])) + 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Deltas of decaying, noisy and planted-plus-noise spectra (float32 files), and their float64 deltas."""
    folder = tmp_path_factory.mktemp("fast")
    g = torch.Generator().manual_seed(0)
    base, tuned, deltas = {}, {}, {}
    for i, (name, (m, n)) in enumerate(SHAPES.items()):
        w0 = torch.randn(m, n, generator=g)
        if i == 0:
            u, _ = torch.linalg.qr(torch.randn(m, n, generator=g))
            v, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
            delta = (u * 0.9 ** torch.arange(n)) @ v.T
        elif i == 2:
            delta = torch.randn(m, 6, generator=g) @ torch.randn(6, n, generator=g) + torch.randn(m, n, generator=g)
        else:
            delta = torch.randn(m, n, generator=g)
        base[f"{name}.weight"], tuned[f"{name}.weight"] = w0, w0 + delta
        deltas[name] = (tuned[f"{name}.weight"].double() - w0.double()).numpy()
    save_file(base, folder / "base.safetensors")
    save_file(tuned, folder / "tuned.safetensors")
    return folder, deltas


def _config(folder, **options) -> AnalyzeConfig:
    return AnalyzeConfig(str(folder / "tuned.safetensors"), base=str(folder / "base.safetensors"), **options)


def test_exact_energy_ranks_lie_inside_the_fast_intervals(pair):
    folder, deltas = pair
    for seed in range(3):
        report = analyze(_config(folder, fast=True, seed=seed))
        for m in report.modules:
            s = np.linalg.svd(deltas[m.name], compute_uv=False)
            assert m.route == ("exact" if m.name == "layers.1.k" else "sketch")  # p / 4 < 64: exact
            for level, (lo, hi) in m.energy_rank_bounds.items():
                assert lo <= exact_rank(s, float(level)) <= hi and m.energy_rank[level] == hi
            sb = np.array(m.singular_values)
            assert np.all(sb <= s[: len(sb)] * (1 + 1e-6))  # the sketch's values are lower bounds
            assert m.frobenius_norm == pytest.approx(np.linalg.norm(s), rel=1e-6)
            assert m.num_singular_values == min(m.shape)
            assert m.intruders is None and m.amplification is not None
            assert m.amplification.delta_norm == pytest.approx(m.frobenius_norm)
            if m.route == "sketch":
                assert m.sketch_size >= 64 and m.energy_at_rank <= float((s[:16] ** 2).sum() / (s**2).sum()) + 1e-9
        assert any("--fast" in note for note in report.notes) and report.settings["fast"]


def test_decaying_spectrum_is_pinned_and_verdicts_say_when_they_straddle(pair):
    folder, _ = pair
    report = analyze(_config(folder, fast=True, base_metrics=False, reference_rank=48))
    modules = {m.name: m for m in report.modules}
    lo, hi = modules["layers.0.mlp"].energy_rank_bounds["0.9"]
    assert hi - lo <= max(2, 0.1 * hi)  # 0.9^i decays: the adaptive sketch narrows k90
    noisy = modules["layers.0.attn"]  # pure noise: k90 far in the unsketched tail
    assert noisy.energy_rank_bounds["0.9"][0] <= 48 < noisy.energy_rank_bounds["0.9"][1]
    assert noisy.verdict == "raise r" and "may be 'adequate'" in noisy.evidence
    assert possible_verdicts(16, [20, 30], [40, 50]) == ["raise r"]
    assert possible_verdicts(16, [3, 20], [6, 40]) == ["raise r", "adequate", "lower r"]
    exact = {m.name: m for m in analyze(_config(folder, base_metrics=False)).modules}
    assert exact["layers.0.mlp"].route == "exact" and exact["layers.0.mlp"].energy_rank_bounds["0.9"][0] == \
        exact["layers.0.mlp"].energy_rank_bounds["0.9"][1] == exact["layers.0.mlp"].energy_rank["0.9"]
    assert "k90" in to_markdown(report) and f"{lo}-{hi}" in to_markdown(report) or lo == hi
    assert f"{noisy.energy_rank_bounds['0.9'][0]}-{noisy.energy_rank_bounds['0.9'][1]}" in to_markdown(report)


def test_json_round_trip_and_old_reports_still_parse(pair):
    folder, _ = pair
    report = analyze(_config(folder, fast=True, base_metrics=False))
    data = json.loads(json.dumps(report.to_dict()))
    assert AnalysisReport.from_dict(data) == report
    old = dict(data["modules"][0])
    for key in ("route", "energy_rank_bounds", "sketch_size"):
        old.pop(key)
    parsed = ModuleAnalysis.from_dict(old)
    assert parsed.route == "exact" and parsed.energy_rank_bounds is None


def test_lora_adapters_are_unaffected(tmp_path):
    model = tiny("llama")
    save_base(model, tmp_path / "base")
    peft_adapter(tmp_path / "adapter", model, 4, ["q_proj", "v_proj"])
    config = dict(checkpoint=str(tmp_path / "adapter"), base=str(tmp_path / "base"))
    fast, exact = analyze(AnalyzeConfig(**config, fast=True)), analyze(AnalyzeConfig(**config))
    assert [m.to_dict() for m in fast.modules] == [m.to_dict() for m in exact.modules]
    assert all(m.route == "exact" and m.intruders is not None for m in fast.modules)


def test_cli_fast_flag(pair):
    folder, _ = pair
    result = CliRunner().invoke(cli, ["analyze", str(folder / "tuned.safetensors"), "--base",
                                      str(folder / "base.safetensors"), "--fast", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {m["route"] for m in data["modules"]} == {"sketch", "exact"} and data["settings"]["fast"]
    terminal = CliRunner().invoke(cli, ["analyze", str(folder / "tuned.safetensors"), "--base",
                                        str(folder / "base.safetensors"), "--fast", "--no-base-metrics"])
    assert terminal.exit_code == 0 and "--fast" in terminal.stdout
    assert "--fast" in CliRunner().invoke(cli, ["analyze", "--help"]).stdout
