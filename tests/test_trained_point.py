"""Is an adapter at a trained point? The loss-trend (lowrank.advice.sufficiency.trained_point) and collapse
(lowrank.tasks.collapse) checks on synthetic histories, and `lowrank train` / `lowrank analyze --data` on real LoRA
runs of an MLP on digits that collapsed, stopped while the loss was falling, or trained."""

from __future__ import annotations

import json
import math
import random

import pytest

from lowrank.advice.sufficiency.trained_point import loss_trend
from lowrank.tasks.collapse import collapse, constant_loss, majority_share
from lowrank.analysis.results import AnalysisReport
from lowrank.training.loop import lr_factor


def _history(curve, steps: int, noise: float, seed: int = 0) -> list[dict]:
    """A metrics.json history under the trainer's schedule (6% warmup, linear decay to 0): an evaluation at step 0,
    then ``curve(tau) + N(0, noise)`` at each step, ``tau`` the share of the learning rate spent before it."""
    rng = random.Random(seed)
    rates = [1e-3 * lr_factor(s, steps, round(0.06 * steps)) for s in range(steps)]
    spent = [sum(rates[:s]) / sum(rates) for s in range(steps)]
    return [{"step": 0, "loss": curve(0.0), "accuracy": 0.1}] + [
        {"step": s + 1, "train_loss": curve(spent[s]) + rng.gauss(0.0, noise), "lr": rates[s]} for s in range(steps)]


def test_a_loss_falling_with_the_learning_rate_spent_is_still_falling():
    """Linear decay flattens the end of the curve in steps; in learning-rate time the loss still falls at its pace."""
    trend = loss_trend(_history(lambda tau: 2.0 - 1.5 * tau, 100, 0.1))
    assert trend.falling and 0.2 < trend.drop < 0.35 and trend.sigmas > 3
    assert trend.steps == 100 and trend.last_steps[1] == 100 and trend.earlier_steps[1] + 1 == trend.last_steps[0]


def test_a_loss_that_levelled_off_is_finished_however_significant_its_last_drop():
    trend = loss_trend(_history(lambda tau: 0.1 + 1.9 * math.exp(-tau / 0.2), 500, 0.05))
    assert not trend.falling and trend.drop < 0.05 and trend.sigmas > 3
    assert "standard errors" in trend.describe() and trend.to_dict()["falling"] is False


def test_a_large_drop_within_the_scatter_is_not_called_falling():
    trend = loss_trend(_history(lambda tau: 2.0 - 1.5 * tau, 100, 3.0))
    assert not trend.falling and trend.sigmas < 3


def test_too_few_steps_give_no_trend_and_evaluations_do_not_count():
    assert loss_trend(_history(lambda tau: 2.0 - tau, 20, 0.1)) is None
    history = _history(lambda tau: 2.0 - 1.5 * tau, 100, 0.1)
    with_evaluations = history[:50] + [{"step": 49, "loss": 9.0, "accuracy": 0.0}] + history[50:]
    assert loss_trend(with_evaluations) == loss_trend(history)


def test_baselines_of_the_constant_predictor():
    assert constant_loss([0, 0, 1, 1, 2, 2]) == pytest.approx(math.log(3))
    assert constant_loss([4, 4, 4]) == 0.0
    assert majority_share([0, 0, 1], [0, 1, 1, 1]) == 0.25


def test_collapse_of_a_classifier():
    entropy = math.log(6)
    reason = collapse({"loss": 1.7918, "accuracy": 0.245}, entropy, 0.245)
    assert "1.79" in reason and "24.5%" in reason and "class frequencies" in reason
    assert collapse({"loss": 0.99 * entropy, "accuracy": 0.5}, entropy, 0.245) is not None  # within 2%
    assert collapse({"loss": 0.3, "accuracy": 0.245}, entropy, 0.245) is not None  # the majority class only
    assert collapse({"loss": 0.97 * entropy, "accuracy": 0.25}, entropy, 0.245) is None
    assert collapse({"loss": 0.3, "accuracy": 0.9}, entropy, 0.245) is None


def test_collapse_of_a_language_model_and_a_diverged_run():
    assert "base model's 3.2" in collapse({"loss": 3.25, "perplexity": 25.8}, base_loss=3.2)
    assert collapse({"loss": 3.1, "perplexity": 22.2}, base_loss=3.2) is None
    assert "diverged" in collapse({"loss": float("nan"), "accuracy": 0.5}, math.log(6), 0.2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """mlp:64,32,10 after one step of full training on digits: a near-random base network folder."""
    from lowrank.train_config import TrainConfig
    from lowrank.training.loop import train

    out = tmp_path_factory.mktemp("mlp") / "base"
    train(TrainConfig(model="mlp:64,32,10", data="digits", method="full", out=out, max_steps=1))
    return out


def _train(invoke, base, out, *args):
    result = invoke("train", "--model", base, "--data", "digits", "--rank", "2", "--out", out, "--quiet", *args)
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "metrics.json").read_text())


def _analyze(invoke, base, adapter, *args):
    result = invoke("analyze", adapter, "--base", base, "--data", "digits", "--device", "cpu", *args)
    assert result.exit_code == 0, result.output
    return result


def test_a_run_at_a_learning_rate_of_10_collapses_and_gets_no_rank_advice(invoke, base, tmp_path, one_thread):
    out = tmp_path / "lr10"
    trained, metrics = _train(invoke, base, out, "--lr", "10", "--steps", "30")
    warnings = [line for line in trained.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "the run collapsed: held-out loss" in warnings[0] and "--lr" in warnings[0]
    assert "class frequencies" in metrics["collapsed"]
    report = json.loads(_analyze(invoke, base, out, "--json", "-", "--markdown", tmp_path / "r.md", "--html",
                                 tmp_path / "r.html").stdout)
    data = report["sufficiency"]
    assert data["verdict"] == "collapsed" and data["suggested_r"] == 2 and data["signal_to_noise"] is None
    assert data["probe"] is None
    assert "class frequencies" in data["state_evidence"] and data["held_out"]["collapsed"] == data["state_evidence"]
    assert data["held_out"]["metrics"]["loss"] > data["held_out"]["constant_loss"]
    assert {m["verdict"] for m in report["modules"]} == {"not judged"}
    assert all(m["suggested_rank"] == 2 and m["sufficiency"] is None for m in report["modules"])
    assert report["summary"]["headline"].startswith("Data verdict: collapsed: lower the learning rate (held-out")
    assert "collapsed: lower the learning rate" in (tmp_path / "r.md").read_text()
    html = (tmp_path / "r.html").read_text()
    assert "collapsed: lower the learning rate" in html and "What more rank would buy" not in html


def test_a_run_stopped_while_its_loss_falls_is_not_converged(invoke, base, tmp_path, one_thread):
    out = tmp_path / "short"
    trained, metrics = _train(invoke, base, out, "--steps", "40", "--epochs", "10", "--batch-size", "256")
    assert metrics["collapsed"] is None and "Warning" not in trained.stderr
    report = json.loads(_analyze(invoke, base, out, "--json", "-").stdout)
    data = report["sufficiency"]
    assert data["verdict"] == "not converged" and data["suggested_r"] == 2 and data["held_out"]["collapsed"] is None
    assert data["probe"] is None
    assert data["trend"]["falling"] and data["trend"]["drop"] > 0.15 and data["trend"]["sigmas"] > 3
    assert {m["verdict"] for m in report["modules"]} == {"not judged"}
    assert report["summary"]["headline"].startswith("Data verdict: not converged: train longer (the training loss")
    assert "not converged: train longer" in _analyze(invoke, base, out).stdout
    assert AnalysisReport.from_dict(report).to_dict() == report


def test_an_adapter_that_the_probe_still_improves_is_not_converged(invoke, base, tmp_path, one_thread):
    """60 steps at 1e-3 leave the loss level (no falling trend) far from trained. metrics.json is made to say the
    run used 0.1, so the probe continues at 0.01: the same-rank arm then gains 11.7 points of held-out accuracy
    (SE 2.6), and the verdict is "not converged" with no rank advice."""
    out = tmp_path / "slow"
    _train(invoke, base, out, "--lr", "1e-3", "--steps", "60")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["config"].update(lr=0.1, head_lr=0.1)
    (out / "metrics.json").write_text(json.dumps(metrics))
    report = json.loads(_analyze(invoke, base, out, "--json", "-").stdout)
    data = report["sufficiency"]
    assert data["verdict"] == "not converged" and data["suggested_r"] == 2 and not data["trend"]["falling"]
    gain = data["probe"]["continuation"]
    assert gain["accuracy"] > 1.5 and gain["accuracy"] > 3 * gain["accuracy_se"]
    assert data["state_evidence"].startswith("continuing it at a tenth of its learning rate raised held-out accuracy")
    assert {m["verdict"] for m in report["modules"]} == {"not judged"}
    assert report["summary"]["headline"].startswith("Data verdict: not converged: train longer (continuing it")
    assert AnalysisReport.from_dict(report).to_dict() == report


def test_a_trained_run_gets_a_rank_verdict_with_its_check(invoke, base, tmp_path, one_thread):
    out = tmp_path / "trained"
    trained, metrics = _train(invoke, base, out)
    assert metrics["collapsed"] is None and "Warning" not in trained.stderr
    report = json.loads(_analyze(invoke, base, out, "--json", "-").stdout)
    data = report["sufficiency"]
    assert data["verdict"] in ("raise r", "adequate", "lower r") and data["state_evidence"] is None
    assert data["held_out"]["metrics"]["accuracy"] > data["held_out"]["majority"] and not data["trend"]["falling"]
    assert data["examples"] == 256 and data["suggested_r"] == {"raise r": 4, "adequate": 2, "lower r": 1}[
        data["verdict"]]
    assert data["probe"]["doubling"] is not None and data["probe"]["halving"] is not None
    for module in report["modules"]:  # the probe decides (tests/test_probe.py); the gradient signals are evidence
        signals = module["sufficiency"]
        assert module["verdict"] == data["verdict"] and len(signals["gain_curve"]) == 4
        assert 0.0 <= signals["outside_fraction"] <= 1.0 and signals["doubling_gain"] > 0.0


def test_a_default_rate_that_collapses_backs_off_until_the_run_trains(invoke, base, tmp_path, one_thread,
                                                                      monkeypatch):
    """A default rate of 0.4 blows this LoRA up (training loss 151 over steps 4-6 against 2.33 before training;
    held out 2.5% with --lr 0.4), so does 0.2 (19.3); 0.1 trains (69%). Given with --lr, the rate is kept and the
    collapse reported."""
    from lowrank.training import setup

    monkeypatch.setattr(setup, "DEFAULT_IMAGE_LR", {"lora": 0.4, "full": 3e-3})
    trained, metrics = _train(invoke, base, tmp_path / "auto", "--steps", "30")
    assert [b["lr"] for b in metrics["lr_backoffs"]] == [0.4, 0.2]
    assert all("blew the model up" in b["reason"] and b["step"] == 6 for b in metrics["lr_backoffs"])
    assert [b["head_lr"] for b in metrics["lr_backoffs"]] == [0.4, 0.2] and metrics["config"]["head_lr"] == 0.1
    assert metrics["config"]["lr"] == 0.1 and metrics["collapsed"] is None and metrics["final"]["accuracy"] > 0.5
    notes = [line for line in trained.stderr.splitlines() if line.startswith("Note: at learning rate")]
    assert len(notes) == 2 and "Warning:" not in trained.stderr and "0.2, chosen by lowrank" in notes[1]
    kept, given = _train(invoke, base, tmp_path / "given", "--steps", "30", "--lr", "0.4")
    assert given["lr_backoffs"] == [] and given["config"]["lr"] == 0.4 and given["collapsed"]
    assert "Warning: the run collapsed" in kept.stderr


def test_a_default_rate_that_collapses_quietly_trains_again_at_half_the_rate(invoke, tmp_path, one_thread):
    """mnist-5k in negative (255 - pixel) for an MLP trained on mnist-5k: at the MLP default (1e-2) LoRA r = 2 with
    seed 0 starts confidently wrong (loss 33) and ends at chance (held-out loss ln 10) without ever blowing up; it
    is trained again at 5e-3, which learns. Given with --lr, the rate is kept and the collapse reported."""
    import numpy as np

    from lowrank.data.images import _mnist_5k_path
    from lowrank.train_config import TrainConfig
    from lowrank.training.loop import train

    table = np.loadtxt(_mnist_5k_path(), delimiter=",", dtype=np.float64)
    np.savez_compressed(tmp_path / "inverted.npz", x=(255 - table[:, :-1]).astype(np.uint8),
                        y=table[:, -1].astype(np.int64))
    base = tmp_path / "base"
    train(TrainConfig(model="mlp:784,200,200,10", data="mnist-5k", method="full", out=base, epochs=10))
    args = ["train", "--model", base, "--data", tmp_path / "inverted.npz", "--rank", "2", "--seed", "0", "--quiet"]
    result = invoke(*args, "--out", tmp_path / "auto")
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert result.exit_code == 0 and [b["lr"] for b in metrics["lr_backoffs"]] == [1e-2]
    assert metrics["lr_backoffs"][0]["reason"].startswith("the run collapsed: held-out loss")
    assert metrics["config"]["lr"] == 5e-3 and metrics["collapsed"] is None and metrics["final"]["accuracy"] > 0.5
    kept = invoke(*args, "--out", tmp_path / "given", "--lr", "1e-2")
    given = json.loads((tmp_path / "given" / "metrics.json").read_text())
    assert given["lr_backoffs"] == [] and given["collapsed"] and "Warning: the run collapsed" in kept.stderr


def test_backing_off_stops_after_two_halvings_and_reports_the_collapse(invoke, base, tmp_path, one_thread,
                                                                      monkeypatch):
    from lowrank.training import rate_backoff, setup

    monkeypatch.setattr(setup, "DEFAULT_IMAGE_LR", {"lora": 40.0, "full": 3e-3})
    trained, metrics = _train(invoke, base, tmp_path / "auto", "--steps", "30")
    assert len(metrics["lr_backoffs"]) == rate_backoff.MAX_BACKOFFS and metrics["config"]["lr"] == 10.0
    assert metrics["collapsed"] and "Warning: the run collapsed" in trained.stderr


def test_a_tiny_held_out_sample_does_not_make_a_trained_base_back_off(invoke, tmp_path, one_thread):
    """From a well-trained base the held-out loss of one example can be far below the training loss (0.02 against
    0.14), and the training loss may rise at first (to 0.24 over steps 5-8): the loss before training counts the
    class frequencies' (2.30) too, so the default rate is kept."""
    from lowrank.train_config import TrainConfig
    from lowrank.training.loop import train

    base = tmp_path / "base"
    train(TrainConfig(model="mlp:64,32,10", data="digits", method="full", out=base, epochs=10))
    _, metrics = _train(invoke, base, tmp_path / "lora", "--eval-samples", "1", "--steps", "40")
    assert metrics["lr_backoffs"] == [] and metrics["history"][0]["loss"] < 0.5 * metrics["history"][1]["train_loss"]
