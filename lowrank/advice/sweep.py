"""``lowrank sweep``: the ground truth for rank advice. Train a grid of LoRA ranks (and full fine-tuning) over
several seeds with :func:`lowrank.training.loop.train`, measure each adapter's sufficiency evidence, and tabulate the
held-out metric per rank (mean +- sd, r*, doubling and halving verdicts; :mod:`lowrank.advice.ground_truth`).

Runs go to ``out/lora-r{r}-s{seed}`` and ``out/full-s{seed}``; a run whose ``metrics.json`` exists is not trained
again, so an interrupted sweep resumes. ``jobs > 1`` trains that many runs at once, each in its own process (one
GPU shared: a small model leaves it mostly idle) with ``cpu_count / jobs`` CPU threads, its output in
``out/logs/<run>.log``. A run that fails or is killed stops the sweep once the runs in flight end: one
:class:`LowrankError` names the run, its log and the log's last line; the finished runs stay and are reused. The
table goes to ``out/sweep.json``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from lowrank import devices
from lowrank.advice.sufficiency.gradient_evidence import CALIBRATED_EXAMPLES
from lowrank.errors import LowrankError
from lowrank.options import option
from lowrank.outputs import write_text_atomic
from lowrank.progress import ProgressCallback, report
from lowrank.advice import ground_truth
from lowrank.train_config import TrainConfig

SCHEMA = "lowrank.sweep/1"


@dataclass(frozen=True)
class SweepConfig:
    """A rank grid x seeds on one model and dataset; every other training setting comes from ``base``.

    Args:
        base: the training settings shared by all runs (its ``method``, ``rank``, ``seed``, ``out`` and ``lr``
            are set per run).
        ranks: LoRA ranks of the grid (default 1, 2, 4, ..., 64).
        seeds: training seeds (default 0, 1, 2).
        full: also fully fine-tune at every seed.
        lora_lr, full_lr: learning rates (default: the trainer's defaults).
        jobs: runs trained at once (separate processes).
        signals: measure each adapter's sufficiency evidence (``signals.json`` beside it).
        signal_examples: training examples in the gradient sample.
    """

    base: TrainConfig
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    seeds: tuple[int, ...] = (0, 1, 2)
    full: bool = option(True, "Also fully fine-tune at every seed.", flag="--full/--no-full")
    lora_lr: float | None = option(None, "LoRA learning rate. [default: lowrank train's]")
    full_lr: float | None = option(None, "Full fine-tuning learning rate. [default: lowrank train's]")
    jobs: int = option(1, "Runs trained at once (processes).")
    signals: bool = option(True, "Measure each adapter's sufficiency signals (gradient outside its subspace).",
                           flag="--signals/--no-signals")
    signal_examples: int = CALIBRATED_EXAMPLES

    def __post_init__(self) -> None:
        if not self.ranks or min(self.ranks) < 1 or len(set(self.ranks)) != len(self.ranks):
            raise LowrankError(f"ranks must be distinct and >= 1, got {self.ranks}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise LowrankError(f"seeds must be distinct, got {self.seeds}")
        if self.jobs < 1 or self.signal_examples < 1:
            raise LowrankError("jobs and signal examples must be >= 1")

    def runs(self) -> list[TrainConfig]:
        """Every run of the grid, full fine-tuning first at each seed."""
        out = Path(self.base.out)
        runs = []
        for seed in self.seeds:
            if self.full:
                runs.append(replace(self.base, method="full", seed=seed, lr=self.full_lr, out=out / f"full-s{seed}",
                                    overwrite=True, resume=False))
            for r in sorted(self.ranks):
                runs.append(replace(self.base, method="lora", rank=r, seed=seed, lr=self.lora_lr,
                                    out=out / f"lora-r{r}-s{seed}", overwrite=True, resume=False))
        return runs


REUSE_KEYS = ("model", "data", "method", "rank", "seed", "epochs", "max_steps", "batch_size",
              "max_length", "max_train_samples", "loss_on")
REUSE_DEFAULTS = {"loss_on": "completion"}  # runs written before a setting existed trained as its default


def _check_reusable(config: TrainConfig, metrics: dict) -> None:
    """A finished run is reused only if it was trained with this run's settings (and learning rate, when given)."""
    saved = metrics.get("config", {})
    keys = REUSE_KEYS + (("lr",) if config.lr is not None else ())
    differ = [key for key in keys if saved.get(key, REUSE_DEFAULTS.get(key)) != (
        str(getattr(config, key)) if key in ("model", "data") else getattr(config, key))]
    if differ:
        raise LowrankError(f"{config.out} holds a run trained with other settings ({', '.join(differ)}); "
                           "give the sweep another --out")


def _run_one(config: TrainConfig, signals: bool, examples: int, threads: int) -> str:
    """Train one run and measure its signals (in a worker process); returns the run folder."""
    import torch

    from lowrank.advice.sufficiency.measure import MeasureConfig, measure
    from lowrank.training.loop import train

    torch.set_num_threads(threads)
    out = Path(config.out)
    if (out / "metrics.json").is_file():
        _check_reusable(config, json.loads((out / "metrics.json").read_text()))
    else:
        train(config)
    if signals and config.method == "lora" and not (out / "signals.json").is_file():
        device = devices.choose_available(config.device)
        result = measure(MeasureConfig(adapter=str(out), base=config.model, data=config.data, examples=examples,
                                       max_length=config.max_length, seed=config.seed, device=device,
                                       loss_on=config.loss_on))
        record = {"examples": result.examples, "seconds": result.seconds,
                  "modules": {name: {**vars(s), "doubling_gain": s.doubling_gain,
                                     "signal_to_noise": s.signal_to_noise}
                              for name, s in result.evidence.items()}}
        write_text_atomic(out / "signals.json", json.dumps(record, indent=1) + "\n")
    return str(out)


def run_sweep(config: SweepConfig, progress: ProgressCallback | None = None) -> dict:
    """Train every run (skipping finished ones), then write and return the table (:func:`tabulate`)."""
    out = Path(config.base.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = config.runs()
    threads = max(1, (os.cpu_count() or 1) // config.jobs)
    report(progress, "sweep", 0, len(runs))
    if config.jobs == 1:
        for done, run in enumerate(runs, 1):
            try:
                _run_one(run, config.signals, config.signal_examples, threads)
            except LowrankError:
                raise
            except Exception as error:  # noqa: BLE001 - any other failure of one run: logged, named, one line
                log = run_log(run)
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(traceback.format_exc())
                raise LowrankError(f"run {run.out.name} failed ({type(error).__name__}: {error}); its log: {log}; "
                                   "the finished runs are kept and reused when the sweep runs again") from None
            report(progress, "sweep", done, len(runs), run.out.name)
    else:
        _run_in_processes(runs, config, threads, progress)
    table = tabulate(out)
    write_text_atomic(out / "sweep.json", json.dumps(table, indent=1) + "\n")
    return table


def run_log(run: TrainConfig) -> Path:
    """Where a run trained in its own process writes its output: ``out/logs/<run>.log`` beside the run folders."""
    return Path(run.out).parent / "logs" / f"{Path(run.out).name}.log"


def _run_logged(run: TrainConfig, signals: bool, examples: int, threads: int) -> None:
    """A worker process: its stdout and stderr go to the run's log, headed by the run's name and process id."""
    log = run_log(run)
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("w")
    handle.write(f"lowrank sweep: run {Path(run.out).name} (pid {os.getpid()})\n")
    handle.flush()
    os.dup2(handle.fileno(), 1)
    os.dup2(handle.fileno(), 2)
    sys.stdout = sys.stderr = open(handle.fileno(), "w", buffering=1, closefd=False)
    _run_one(run, signals, examples, threads)


def _run_in_processes(runs: list[TrainConfig], config: SweepConfig, threads: int,
                      progress: ProgressCallback | None) -> None:
    """Train ``runs`` ``config.jobs`` at a time, one process each; after a failure start no more, let the runs in
    flight end, then raise one error naming the first failed run."""
    context = multiprocessing.get_context("spawn")
    pending, running, failed, done = list(runs), {}, [], 0
    while pending or running:
        while pending and not failed and len(running) < config.jobs:
            run = pending.pop(0)
            process = context.Process(target=_run_logged, args=(run, config.signals, config.signal_examples, threads))
            process.start()
            running[process] = run
        time.sleep(0.2)
        for process in [p for p in running if not p.is_alive()]:
            run = running.pop(process)
            process.join()
            if process.exitcode == 0:
                done += 1
                report(progress, "sweep", done, len(runs), Path(run.out).name)
            else:
                failed.append((run, process.exitcode))
        if failed and not running:
            run, code = failed[0]
            raise LowrankError(f"run {Path(run.out).name} {_ending(code)}; its log: {run_log(run)}"
                               f"{_last_line(run_log(run))}; the finished runs are kept and reused when the sweep "
                               "runs again")


def _ending(exitcode: int) -> str:
    return f"was killed (signal {-exitcode})" if exitcode < 0 else f"failed (exit status {exitcode})"


def _last_line(log: Path) -> str:
    """The log's last non-empty line (a traceback's exception), as `` (...)``; empty when there is none."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return f" ({lines[-1]})" if len(lines) > 1 else ""


def _read_runs(folder: Path) -> list[dict]:
    runs = []
    for metrics_file in sorted(folder.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        signals_file = metrics_file.parent / "signals.json"
        runs.append({"run": metrics_file.parent.name, "method": metrics["method"],
                     "rank": metrics["config"]["rank"] if metrics["method"] == "lora" else None,
                     "seed": metrics["config"]["seed"], "lr": requested_lr(metrics), "task": metrics["task"],
                     "final": metrics["final"], "trainable_parameters": metrics["trainable_parameters"],
                     "signals": json.loads(signals_file.read_text()) if signals_file.is_file() else None})
    if not runs:
        raise LowrankError(f"{folder} holds no finished run (*/metrics.json)")
    return runs


def requested_lr(metrics: dict) -> float:
    """The rate a run was started at: its first rate when the default backed off (lowrank.training.rate_backoff),
    so that the seeds of one rank stay one group however many of them backed off."""
    backoffs = metrics.get("lr_backoffs") or []
    return backoffs[0]["lr"] if backoffs else metrics["config"]["lr"]


def tabulate(*folders: str | Path) -> dict:
    """The sweep table of the finished runs in ``folders`` (one task; several folders merge learning-rate grids).

    Per LoRA rank, the runs are grouped by learning rate and the rate with the best mean is kept: ground truth
    compares each rank at its own best rate, so a rank that diverges at one rate is not judged by that rate.
    """
    runs = [run for folder in folders for run in _read_runs(Path(folder))]
    metric = "loss" if runs[0]["task"] == "lm" else "accuracy"
    sign = 1.0 if metric == "accuracy" else -1.0
    groups: dict[tuple[str, int | None, float], list[float]] = {}
    for run in runs:
        groups.setdefault((run["method"], run["rank"], run["lr"]), []).append(run["final"][metric])
    best: dict[tuple[str, int | None], tuple[float, ground_truth.RankScores]] = {}
    for (method, rank, lr), values in groups.items():
        scores = ground_truth.RankScores(rank or 0, tuple(values))
        if (method, rank) not in best or sign * scores.mean > sign * best[(method, rank)][1].mean:
            best[(method, rank)] = (lr, scores)
    lora = sorted((rank, lr, scores) for (method, rank), (lr, scores) in best.items() if method == "lora")
    grid = [scores for _, _, scores in lora]
    full = best.get(("full", None))
    table = {"schema": SCHEMA, "metric": metric, "runs": runs,
             "ranks": [{"rank": r, "lr": lr, "mean": g.mean, "sd": g.sd, "n": len(g.scores)} for r, lr, g in lora],
             "full": {"lr": full[0], "mean": full[1].mean, "sd": full[1].sd, "n": len(full[1].scores)}
             if full else None}
    if grid:
        table["sufficient_rank"] = ground_truth.sufficient_rank(grid, metric)
        table["doubling"] = [vars(s) for s in ground_truth.doubling(grid, metric)]
        table["halving"] = [vars(s) for s in ground_truth.halving(grid, metric)]
    return table
