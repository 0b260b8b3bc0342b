"""Ground truth and verdict signals for `analyze --data`, on one GPU shared by many processes (reports/rank_advice.md).

Each job trains one LoRA adapter with lowrank's defaults (task, rank, seed), then measures on it what the verdict may
read: the probe's held-out differences (lowrank.advice.probe: continuing at r, 2r and r/2, scored after a tenth, two
tenths and three tenths of the run's steps) and the older gradient signal-to-noise (lowrank.advice.measure). One JSON line per adapter.

    python examples/rank_verdict_grid.py --model .carry/minilm-l6 --data-dir .carry --out OUT \\
        --tasks reuters-r8,reuters-r52 --ranks 1,2,4,8,16,32,64,128,256 --seeds 0,1,2 --workers 12 --deadline 480
    python examples/rank_verdict_grid.py --job TASK RANK SEED ...   (one job; what the workers run)

Jobs start in order (ranks 1..64 of every task and seed first) until --deadline seconds have passed; the results
file holds every job that finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PROBE_FRACTIONS = (0.1, 0.2, 0.3)
HELDOUT = 1000


def run_job(args: argparse.Namespace, task: str, rank: int, seed: int) -> dict:
    import torch

    from lowrank.advice import probe
    from lowrank.advice.measure import MeasureConfig, measure
    from lowrank.advice.sufficiency import model_signal_to_noise
    from lowrank.training.config import TrainConfig
    from lowrank.training.loop import train

    data = str(Path(args.data_dir) / f"{task}.csv") if args.data_dir else task
    out = Path(args.runs or Path(args.out) / "runs") / task / f"r{rank}-s{seed}"
    began = time.perf_counter()
    metrics = train(TrainConfig(model=args.model, data=data, method="lora", out=out, rank=rank, seed=seed,
                                overwrite=True, lr=args.lr, max_train_samples=args.train_samples,
                                max_length=args.max_length, batch_size=args.batch_size,
                                eval_samples=args.train_samples and HELDOUT))
    trained = time.perf_counter() - began
    config = metrics["config"]
    if args.no_probe:
        return {"task": task, "rank": rank, "seed": seed, "lr": config["lr"], "alpha": config["alpha"],
                "final": metrics["final"], "steps": metrics["steps"], "train_seconds": trained}
    steps = {f: max(1, round(f * metrics["steps"])) for f in PROBE_FRACTIONS}
    marks = tuple(sorted(set(steps.values())))
    setup = probe.load(str(out), args.model, data, marks[-1], config["batch_size"], HELDOUT, config["max_length"],
                       config["lr"], config["head_lr"], config["loss_on"], seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = probe.probe(setup, {"same": marks, "doubled": marks, "halved": marks}, device, seed)
    signals = measure(MeasureConfig(adapter=str(out), base=args.model, data=data, device=device.type)).signals
    row = {"task": task, "rank": rank, "seed": seed, "lr": config["lr"], "alpha": config["alpha"],
           "final": metrics["final"], "steps": metrics["steps"],
           "train_losses": [h["train_loss"] for h in metrics["history"] if "train_loss" in h],
           "train_seconds": trained, "probe_seconds": result.seconds,
           "trained_heldout": {"loss": result.trained.loss, "accuracy": result.trained.accuracy},
           "signal_to_noise": model_signal_to_noise(list(signals.values())), "probe": {}}
    for fraction, count in steps.items():
        row["probe"][str(fraction)] = {"steps": count, "same_loss": result.arms["same"][count].loss} | {
            name: None if diff is None else diff.__dict__
            for name, diff in (("doubling", result.doubling(count)), ("halving", result.halving(count)),
                               ("continuation", result.continuation(count)))}
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--out", required=True, help="results.jsonl and jobs.log")
    parser.add_argument("--runs", default="", help="where the adapters go [default: OUT/runs]")
    parser.add_argument("--tasks", default="reuters-r8")
    parser.add_argument("--ranks", default="1,2,4,8,16,32,64")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=1e9)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--train-samples", type=int, default=None, help="a seeded subset (smoke tests)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-probe", action="store_true", help="train only (learning-rate checks)")
    parser.add_argument("--job", nargs=3, metavar=("TASK", "RANK", "SEED"))
    args = parser.parse_args()
    if args.job:
        task, rank, seed = args.job[0], int(args.job[1]), int(args.job[2])
        row = run_job(args, task, rank, seed)
        with open(Path(args.out) / "results.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    ranks = [int(r) for r in args.ranks.split(",")]
    jobs = [(t, r, s) for first in (True, False) for s in args.seeds.split(",") for t in args.tasks.split(",")
            for r in ranks if (r <= 64) == first]
    began, running = time.time(), []
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    common = ["--model", args.model, "--data-dir", args.data_dir, "--out", args.out, "--runs", args.runs,
              "--max-length", str(args.max_length), "--batch-size", str(args.batch_size)] + (["--lr", str(args.lr)] if args.lr else []) + (
        ["--train-samples", str(args.train_samples)] if args.train_samples else []) + (
        ["--no-probe"] if args.no_probe else [])
    log = open(Path(args.out) / "jobs.log", "a")
    while jobs or running:
        running = [p for p in running if p.poll() is None]
        if jobs and len(running) < args.workers and time.time() - began < args.deadline:
            task, rank, seed = jobs.pop(0)
            running.append(subprocess.Popen([sys.executable, __file__, *common, "--job", task, str(rank), seed],
                                            env=env, stdout=log, stderr=subprocess.STDOUT))
            continue
        if not running:
            break
        time.sleep(1)
    print(f"{sum(1 for _ in open(Path(args.out) / 'results.jsonl'))} jobs done in {time.time() - began:.0f} s; "
          f"{len(jobs)} not started")


if __name__ == "__main__":
    main()
