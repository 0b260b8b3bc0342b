"""The probe behind `analyze --data` (lowrank.advice.sufficiency.probe, lowrank.advice.sufficiency.verdict): the doubled
and halved arms' factors against float64 numpy, the doubled arm's function before training, the verdict on constructed
differences, and `lowrank analyze --data --json` end to end on a LoRA MLP trained on digits."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from lowrank import lora
from lowrank.advice.sufficiency import verdict
from lowrank.advice.sufficiency.probe import Difference, doubled_factors, halved_factors
from lowrank.analysis.results import AnalysisReport
from lowrank.render import markdown, terminal


def _factors(m: int, n: int, r: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``B (m, r)``, ``A (r, n)`` in float64 whose product has well separated singular values 8, 4, 2, 1, ..."""
    generator = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, r, generator=generator, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(n, r, generator=generator, dtype=torch.float64))[0]
    s = 8.0 * 0.5 ** torch.arange(r, dtype=torch.float64)
    return U * s, V.T.contiguous()


@pytest.mark.parametrize("m, n, r, added", [(12, 9, 3, 3), (12, 9, 6, 3)])
def test_doubled_factors_keep_the_update_and_add_zero_columns(m, n, r, added):
    """``B' A' = B A`` to float64 precision; ``r`` new rows of A (capped by ``min(out, in) - r``) drawn within
    kaiming's bound, B's new columns zero."""
    B, A = _factors(m, n, r)
    A2, B2 = doubled_factors(A, B, torch.Generator().manual_seed(1))
    assert A2.shape == (r + added, n) and B2.shape == (m, r + added)
    np.testing.assert_allclose(B2.numpy() @ A2.numpy(), B.numpy() @ A.numpy(), rtol=0, atol=1e-12)
    assert torch.count_nonzero(B2[:, r:]) == 0 and torch.count_nonzero(A2[r:]) == added * n
    assert A2[r:].abs().max() <= 1 / math.sqrt(n)


@pytest.mark.parametrize("r, scale, divisor", [(4, 2.0, 2), (5, 8.0 / math.sqrt(5), 2), (8, 2.0, 4), (7, 1.0, 4)])
def test_halved_factors_are_the_best_rank_half_approximation(r, scale, divisor):
    """``s B' A'`` is the Eckart-Young truncation of ``s B A`` to rank ``r // divisor`` (numpy SVD in float64):
    the halved arm, and with divisor 4 the quartered one."""
    B, A = _factors(10, 14, r, seed=2)
    A2, B2 = halved_factors(A, B, scale, divisor)
    half = r // divisor
    assert A2.shape == (half, 14) and B2.shape == (10, half)
    U, s, Vt = np.linalg.svd(scale * B.numpy() @ A.numpy())
    best = (U[:, :half] * s[:half]) @ Vt[:half]
    np.testing.assert_allclose(scale * B2.numpy() @ A2.numpy(), best, rtol=0, atol=1e-5 * s[0])


def test_the_doubled_arm_computes_the_same_function_before_training():
    """Replacing every layer's factors by the doubled ones (the second capped at min(out, in)) leaves the logits
    unchanged (float32)."""
    torch.manual_seed(0)
    model = nn.Sequential(lora.LoraLayer(nn.Linear(20, 16), 4, 2.0), nn.ReLU(),
                          lora.LoraLayer(nn.Linear(16, 5), 4, 2.0))
    layers = lora.lora_layers(model)
    for layer in layers.values():
        nn.init.normal_(layer.lora_B, std=0.5)
    x = torch.randn(32, 20)
    with torch.no_grad():
        before = model(x)
        generator = torch.Generator().manual_seed(3)
        for layer in layers.values():
            A, B = doubled_factors(layer.lora_A, layer.lora_B, generator)
            layer.lora_A, layer.lora_B = nn.Parameter(A), nn.Parameter(B)
            layer.r = A.shape[0]
        after = model(x)
    assert [layer.r for layer in layers.values()] == [8, 5]  # 2r, and min(out, in) = 5
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def _difference(relative: float, sigmas: float, loss: float = 2.0) -> Difference:
    """A paired difference of ``relative * loss`` at ``sigmas`` standard errors."""
    return Difference(relative * loss, relative * loss / sigmas, None, None)


BETWEEN = _difference((verdict.LOWER_COST + verdict.RAISE_COST) / 2, 10)  # a halving cost that decides nothing


@pytest.mark.parametrize("doubling, halving, expected", [
    (_difference(2 * verdict.RAISE_GAIN, 3 * verdict.RAISE_SE), BETWEEN, "raise r"),
    (_difference(2 * verdict.RAISE_GAIN, 3 * verdict.RAISE_SE), _difference(0.5 * verdict.LOWER_COST, 10), "raise r"),
    (_difference(2 * verdict.RAISE_GAIN, 0.5 * verdict.RAISE_SE), BETWEEN,
     "adequate"),
    (_difference(0.5 * verdict.RAISE_GAIN, 10 * verdict.RAISE_SE), BETWEEN,
     "adequate"),
    (_difference(0.5 * verdict.RAISE_GAIN, 10), _difference(2 * verdict.RAISE_COST, 10), "raise r"),  # uses all its rank
    (None, _difference(2 * verdict.RAISE_COST, 10), "raise r"),
    (_difference(-verdict.RAISE_GAIN, 10), _difference(0.5 * verdict.LOWER_COST, 10), "lower r"),
    (_difference(0.5 * verdict.RAISE_GAIN, 10), _difference(-0.01, 10), "lower r"),
    (None, BETWEEN, "adequate"),
    (None, _difference(0.5 * verdict.LOWER_COST, 10), "lower r"),
    (_difference(verdict.FIRST_GAIN + 0.001, 3 * verdict.RAISE_SE), None, "raise r"),  # r = 1: the gain alone
    (_difference(verdict.FIRST_GAIN + 0.001, 0.5 * verdict.RAISE_SE), None, "adequate"),
    (_difference(2 * verdict.RAISE_GAIN, 3 * verdict.RAISE_SE), None, "raise r"),
    (None, None, "adequate"),
])
def test_judge_reads_the_relative_differences(doubling, halving, expected):
    """Raise r needs the gain above RAISE_GAIN of the loss (FIRST_GAIN without a halved arm) and beyond RAISE_SE
    standard errors (and wins over a cheap halving); lower r needs halving to cost under LOWER_COST; a missing arm
    gives neither; without a quartered arm (r <= 2) lower r reads the halving alone."""
    assert verdict.judge(doubling, halving, None, 2.0) == expected


@pytest.mark.parametrize("quartering, expected", [
    (None, "lower r"),
    (_difference(0.5 * verdict.LOWER_QUARTER, 10), "lower r"),
    (_difference(2 * verdict.LOWER_QUARTER, 10), "adequate"),  # the top quarter alone loses: no margin for r/2
])
def test_lower_r_needs_the_quartered_margin_where_it_was_measured(quartering, expected):
    halving = _difference(0.5 * verdict.LOWER_COST, 10)
    assert verdict.may_lower(halving, 2.0) and not verdict.may_lower(_difference(2 * verdict.LOWER_COST, 10), 2.0)
    assert verdict.judge(_difference(0.0, 1), halving, quartering, 2.0) == expected


@pytest.mark.parametrize("gain, se, unfinished", [
    (2.7, 0.59, True),    # make demo's 100-step adapter
    (1.9, 0.73, False),   # the largest gain of the 234 fully trained calibration adapters (0.3 of the run)
    (1.6, 0.47, False),   # the most standard errors among them
    (1.4, 0.2, False),    # many standard errors, too few points
    (2.0, 0.8, False),    # enough points, within 3 standard errors
    (None, None, False),  # a language model: no accuracy
])
def test_a_continuation_that_still_gains_accuracy_means_training_had_not_finished(gain, se, unfinished):
    reason = verdict.unfinished(Difference(0.01, 0.002, gain, se))
    assert (reason is not None) == unfinished
    assert reason is None or f"{gain:.1f} points" in reason
    assert verdict.unfinished(None) is None


def test_run_settings_read_metrics_json_or_fall_back_to_defaults(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 200, "config": {"lr": 3e-3, "head_lr": 5e-3,
                                                                                 "batch_size": 16}}))
    settings = verdict.run_settings(tmp_path, 1.0, 2.0)
    assert (settings.lr, settings.head_lr, settings.batch_size, settings.steps, settings.from_metrics) == (
        3e-3, 5e-3, 16, 200, True)
    assert settings.probe_steps == round(verdict.PROBE_FRACTION * 200)
    fallback = verdict.run_settings(tmp_path / "missing", 1.0, 2.0)
    assert (fallback.lr, fallback.head_lr, fallback.steps, fallback.from_metrics) == (
        1.0, 2.0, verdict.UNKNOWN_RUN_STEPS, False)


def test_default_rates_follow_the_task():
    from lowrank.tasks.defaults import DEFAULT_HEAD_LR, DEFAULT_IMAGE_LR, DEFAULT_LR

    assert verdict.default_rates("mlp:64,32,10", None) == (DEFAULT_IMAGE_LR["lora"],
                                                           max(DEFAULT_IMAGE_LR["lora"], DEFAULT_HEAD_LR))
    lr = DEFAULT_LR[("lora", "classification")]
    assert verdict.default_rates("minilm-l6", None) == (lr, max(lr, DEFAULT_HEAD_LR))
    assert verdict.default_rates("minilm-l6", "CAUSAL_LM")[0] == DEFAULT_LR[("lora", "lm")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A rank-2 LoRA adapter on a near-random MLP base (one step of full training), 3 epochs on digits."""
    from click.testing import CliRunner

    from lowrank.train_config import TrainConfig
    from lowrank.training.loop import train
    from lowrank_cli.main import _register, cli

    folder = tmp_path_factory.mktemp("probe")
    train(TrainConfig(model="mlp:64,32,10", data="digits", method="full", out=folder / "base", max_steps=1))
    _register()
    result = CliRunner().invoke(cli, ["train", "--model", str(folder / "base"), "--data", "digits", "--rank", "2",
                                      "--out", str(folder / "r2"), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder


def test_the_probe_at_a_learning_rate_of_zero_keeps_the_same_and_doubled_arms_at_the_trained_scores(trained,
                                                                                                    one_thread):
    from lowrank.advice.sufficiency import probe

    setup = probe.load(str(trained / "r2"), str(trained / "base"), "digits", 3, 32, 200, 128, 1e-2, 1e-2,
                       "completion")
    arms = {"same": (3,), "doubled": (3,), "halved": (3,), "quartered": (3,)}
    result = probe.probe(setup, arms, torch.device("cpu"), lr_scale=0.0)
    for arm in ("same", "doubled"):
        torch.testing.assert_close(result.arms[arm][3].losses, result.trained.losses, rtol=1e-5, atol=1e-6)
    assert result.doubling(3).loss == pytest.approx(0.0, abs=1e-6) and result.halving(3).loss > 1e-3
    assert "quartered" not in result.arms and result.quartering(3) is None  # r = 2 has no rank r/4


def test_the_quartered_arm_starts_from_the_rank_quarter_truncation(trained, tmp_path, one_thread):
    """At r = 4 the quartered arm is the update cut to rank 1: at a learning rate of zero its held-out losses are
    those of the model with every module's factors replaced by that truncation. An arm whose ``only_if`` test is
    false on the arms scored before it (analyze's: the halving cost leaves "lower r" in question) is not run."""
    from click.testing import CliRunner

    from lowrank import lora
    from lowrank.advice.sufficiency import probe
    from lowrank_cli.main import cli

    result = CliRunner().invoke(cli, ["train", "--model", str(trained / "base"), "--data", "digits", "--rank", "4",
                                      "--out", str(tmp_path / "r4"), "--quiet"])
    assert result.exit_code == 0, result.output
    setup = probe.load(str(tmp_path / "r4"), str(trained / "base"), "digits", 3, 32, 200, 128, 1e-2, 1e-2,
                       "completion")
    measured = probe.probe(setup, {"same": (3,), "quartered": (3,)}, torch.device("cpu"), lr_scale=0.0)
    for layer in lora.lora_layers(setup.model).values():
        A, B = probe.halved_factors(layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling, 4)
        layer.lora_A, layer.lora_B, layer.r = torch.nn.Parameter(A), torch.nn.Parameter(B), 1
    expected = probe.score(setup.model, setup.heldout, torch.device("cpu"))
    torch.testing.assert_close(measured.arms["quartered"][3].losses, expected.losses, rtol=1e-5, atol=1e-6)
    assert measured.quartering(3).loss == pytest.approx(float((expected.losses - measured.trained.losses).mean()),
                                                        abs=1e-6)
    seen = []
    setup = probe.load(str(tmp_path / "r4"), str(trained / "base"), "digits", 3, 32, 200, 128, 1e-2, 1e-2,
                       "completion")  # the factors above were replaced: load the adapter again
    skipped = probe.probe(setup, {"same": (3,), "halved": (3,), "quartered": (3,)}, torch.device("cpu"),
                          lr_scale=0.0, only_if={"quartered": lambda scores: seen.append(set(scores)) or False})
    assert seen == [{"same", "halved"}] and "quartered" not in skipped.arms and skipped.quartering(3) is None
    assert skipped.halving(3).loss == pytest.approx(
        probe.probe(setup, {"same": (3,), "halved": (3,)}, torch.device("cpu"), lr_scale=0.0).halving(3).loss)


def test_analyze_data_records_the_probe_and_its_verdict(invoke, trained, tmp_path, one_thread):
    result = invoke("analyze", trained / "r2", "--base", trained / "base", "--data", "digits", "--device", "cpu",
                    "--json", "-", "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    data, metrics = report["sufficiency"], json.loads((trained / "r2" / "metrics.json").read_text())
    probe = data["probe"]
    assert probe["steps"] == round(verdict.PROBE_FRACTION * metrics["steps"]) and probe["run_steps_from_metrics"]
    assert (probe["rank"], probe["run_steps"], probe["lr"], probe["batch_size"], probe["lr_scale"]) == (
        2, metrics["steps"], metrics["config"]["lr"], metrics["config"]["batch_size"], verdict.PROBE_LR_SCALE)
    assert probe["heldout_examples"] == metrics["final"]["examples"]  # digits has fewer than HELDOUT_EXAMPLES
    assert probe["trained_loss"] == pytest.approx(metrics["final"]["loss"], rel=1e-4)
    differences = {}
    for name in ("doubling", "halving", "continuation"):
        d = probe[name]
        assert d["relative"] == pytest.approx(d["loss"] / probe["loss"]) and d["loss_se"] > 0
        assert d["accuracy"] is not None and d["accuracy_se"] >= 0
        differences[name] = Difference(d["loss"], d["loss_se"], d["accuracy"], d["accuracy_se"])
    assert probe["quartering"] is None  # r = 2: no quartered arm
    assert data["verdict"] == verdict.judge(differences["doubling"], differences["halving"], None, probe["loss"])
    assert data["suggested_r"] == {"raise r": 4, "adequate": 2, "lower r": 1}[data["verdict"]]
    assert (data["raise_above"], data["lower_below"], data["raise_se"], data["raise_above_first"],
            data["lower_quarter"]) == (verdict.RAISE_GAIN, verdict.LOWER_COST, verdict.RAISE_SE, verdict.FIRST_GAIN,
                                       verdict.LOWER_QUARTER)
    assert data["signal_to_noise"] > 0 and probe["seconds"] > 0
    assert all(m["verdict"] == data["verdict"] and "evidence only" in m["evidence"] for m in report["modules"])
    headline = report["summary"]["headline"]
    assert headline.startswith(f"Data verdict: {data['verdict']}: doubling r ")
    assert f"over a continuation of {probe['steps']} steps" in headline
    assert f"Suggested r = {data['suggested_r']}." in headline
    record = AnalysisReport.from_dict(report)
    assert record.to_dict() == report
    older = {**report, "sufficiency": {k: v for k, v in data.items() if k not in ("probe", "raise_se")}}
    assert AnalysisReport.from_dict(older).sufficiency.probe is None  # reports written before the probe still load
    page = (tmp_path / "r.html").read_text()
    assert "What more rank would buy" in page and page.count("<img") == 3  # spectra, rank per layer, the probe
    paragraph = f"each rank trained {probe['steps']} more steps of {probe['batch_size']} examples"
    assert paragraph in markdown.render(record) and paragraph in page
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    terminal.render(record, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert paragraph in " ".join(line.strip(" │") for line in text.splitlines())
