"""Ground truth and verdict signals for `analyze --data`, on one GPU shared by many processes (reports/rank_advice.md).

Each job trains one LoRA adapter with lowrank's defaults (task, rank, seed), then measures on it what the verdict may
read: the probe's held-out differences (lowrank.advice.sufficiency.probe: continuing at r, 2r, r/2 and r/4, scored
after a tenth, two tenths and three tenths of the run's steps) and the older gradient signal-to-noise
(lowrank.advice.sufficiency.measure). One JSON line per adapter.

    python examples/rank_verdict_grid.py --model .carry/minilm-l6 --data-dir .carry --out OUT \\
        --tasks reuters-r8,reuters-r52 --ranks 1,2,4,8,16,32,64,128,256 --seeds 0,1,2 --workers 12 --deadline 480
    python examples/rank_verdict_grid.py --job TASK RANK SEED LR ...   (one job; what the workers run)

Jobs start in order (ranks 1..64 of every task and seed first, task by task) until --deadline seconds have passed;
the results file holds every job that finished, and a second call with the same --out runs only the jobs still
missing. With --lrs, each task's rate is swept first (train only, seed 0, at --lr-ranks; OUT/lr_sweep.jsonl) and
its grid runs at the rate with the best mean held-out metric (OUT/rates.json). Language models (SmolLM2-135M on the
news-lm and friends-lm corpora of examples/gpu_assets.py), reports/rank_advice.md:

    python examples/rank_verdict_grid.py --model /tmp/smollm2 --data-dir .carry/lm --out OUT --tasks news-lm \\
        --lrs 5e-4,1e-3,2e-3,4e-3,8e-3 --max-steps 400 --batch-size 16 --no-signal --workers 6 --deadline 540
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


def run_job(args: argparse.Namespace, task: str, rank: int, seed: int, lr: float | None) -> dict:
    import torch

    from lowrank.advice.sufficiency import probe
    from lowrank.advice.sufficiency.gradient_evidence import model_signal_to_noise
    from lowrank.advice.sufficiency.measure import MeasureConfig, measure
    from lowrank.train_config import TrainConfig
    from lowrank.training.loop import train

    data = task
    if args.data_dir:  # the task's CSV (text) or .npz (images) in the folder
        data = str(next((p for p in (Path(args.data_dir) / f"{task}{ext}" for ext in (".csv", ".npz")) if p.exists()),
                        Path(args.data_dir) / f"{task}.csv"))
    out = Path(args.runs or Path(args.out) / "runs") / task / (f"r{rank}-s{seed}" + (f"-lr{lr:g}" if lr else ""))
    began = time.perf_counter()
    metrics = train(TrainConfig(model=args.model, data=data, method="lora", out=out, rank=rank, seed=seed,
                                overwrite=True, lr=lr, max_train_samples=args.train_samples, max_steps=args.max_steps,
                                max_length=args.max_length, batch_size=args.batch_size,
                                eval_samples=args.train_samples and args.heldout))
    trained = time.perf_counter() - began
    config = metrics["config"]
    if args.no_probe:
        return {"task": task, "rank": rank, "seed": seed, "lr": config["lr"], "alpha": config["alpha"],
                "final": metrics["final"], "steps": metrics["steps"], "train_seconds": trained,
                "collapsed": metrics["collapsed"], "lr_backoffs": metrics["lr_backoffs"]}
    steps = {f: max(1, round(f * metrics["steps"])) for f in PROBE_FRACTIONS}
    marks = tuple(sorted(set(steps.values())))
    setup = probe.load(str(out), args.model, data, marks[-1], config["batch_size"], args.heldout, config["max_length"],
                       config["lr"], config["head_lr"], config["loss_on"], seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = probe.probe(setup, {"same": marks, "doubled": marks, "halved": marks, "quartered": marks}, device, seed)
    signals = None if args.no_signal else measure(MeasureConfig(adapter=str(out), base=args.model, data=data,
                                                                device=device.type)).evidence
    row = {"task": task, "rank": rank, "seed": seed, "lr": config["lr"], "alpha": config["alpha"],
           "final": metrics["final"], "steps": metrics["steps"], "lr_backoffs": metrics["lr_backoffs"],
           "train_losses": [h["train_loss"] for h in metrics["history"] if "train_loss" in h],
           "train_seconds": trained, "probe_seconds": result.seconds,
           "trained_heldout": {"loss": result.trained.loss, "accuracy": result.trained.accuracy},
           "signal_to_noise": signals and model_signal_to_noise(list(signals.values())), "probe": {}}
    for fraction, count in steps.items():
        row["probe"][str(fraction)] = {"steps": count, "same_loss": result.arms["same"][count].loss} | {
            name: None if diff is None else diff.__dict__
            for name, diff in (("doubling", result.doubling(count)), ("halving", result.halving(count)),
                               ("quartering", result.quartering(count)), ("continuation", result.continuation(count)))}
    return row


def run_pool(args: argparse.Namespace, jobs: list[tuple], results: Path, began: float, no_probe: bool) -> int:
    """Run ``jobs`` ((task, rank, seed, lr)) on ``args.workers`` processes, skipping those already in ``results``,
    starting none after the deadline; returns how many were left unstarted."""
    done = set()
    if results.is_file():
        rows = [json.loads(line) for line in results.open()]
        done = {(r["task"], r["rank"], r["seed"], lr) for r in rows for lr in (r["lr"], None)}
    jobs = [job for job in jobs if job not in done]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    common = ["--model", args.model, "--data-dir", args.data_dir, "--out", args.out, "--runs", args.runs,
              "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
              "--heldout", str(args.heldout), "--results", str(results)]
    for flag, value in (("--train-samples", args.train_samples), ("--max-steps", args.max_steps)):
        common += [flag, str(value)] if value else []
    common += ["--no-probe"] if no_probe else []
    common += ["--no-signal"] if args.no_signal else []
    running = []
    with open(Path(args.out) / "jobs.log", "a") as log:
        while jobs or running:
            running = [p for p in running if p.poll() is None]
            if jobs and len(running) < args.workers and time.time() - began < args.deadline:
                task, rank, seed, lr = jobs.pop(0)
                running.append(subprocess.Popen(
                    [sys.executable, __file__, *common, "--job", task, str(rank), str(seed), str(lr)],
                    env=env, stdout=log, stderr=subprocess.STDOUT))
                continue
            if not running:
                break
            time.sleep(1)
    return len(jobs)


def best_rates(sweep: Path, tasks: list[str]) -> dict[str, float]:
    """Per task, the learning rate with the best mean held-out metric over the swept ranks (accuracy, else loss)."""
    rows = [json.loads(line) for line in sweep.open()]
    chosen = {}
    for task in tasks:
        by_rate: dict[float, list[float]] = {}
        for row in (r for r in rows if r["task"] == task):
            final = row["final"]
            by_rate.setdefault(row["lr"], []).append(final["accuracy"] if "accuracy" in final else -final["loss"])
        complete = {lr: v for lr, v in by_rate.items() if len(v) == max(map(len, by_rate.values()))}
        chosen[task] = max(complete, key=lambda lr: sum(complete[lr]) / len(complete[lr]))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--out", required=True, help="results.jsonl, lr_sweep.jsonl, rates.json and jobs.log")
    parser.add_argument("--runs", default="", help="where the adapters go [default: OUT/runs]")
    parser.add_argument("--tasks", default="reuters-r8")
    parser.add_argument("--ranks", default="1,2,4,8,16,32,64")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=1e9)
    parser.add_argument("--lr", type=float, default=None, help="one rate for every task [default: lowrank's]")
    parser.add_argument("--lrs", default="", help="sweep these rates first (train only, seed 0, --lr-ranks) and "
                                                   "run each task's grid at its best")
    parser.add_argument("--lr-ranks", default="4,64")
    parser.add_argument("--train-samples", type=int, default=None, help="a seeded subset (smoke tests)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-probe", action="store_true", help="train only (learning-rate checks)")
    parser.add_argument("--no-signal", action="store_true", help="skip the gradient signal-to-noise")
    parser.add_argument("--heldout", type=int, default=HELDOUT, help="held-out examples the probe scores")
    parser.add_argument("--results", default="")
    parser.add_argument("--job", nargs=4, metavar=("TASK", "RANK", "SEED", "LR"))
    args = parser.parse_args()
    if args.job:
        task, rank, seed, lr = args.job[0], int(args.job[1]), int(args.job[2]), args.job[3]
        row = run_job(args, task, rank, seed, None if lr == "None" else float(lr))
        with open(args.results, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks, ranks = args.tasks.split(","), [int(r) for r in args.ranks.split(",")]
    began = time.time()
    rates = {task: args.lr for task in tasks}
    if args.lrs:
        sweep = [(t, int(r), 0, float(lr)) for t in tasks for r in args.lr_ranks.split(",")
                 for lr in args.lrs.split(",")]
        left = run_pool(args, sweep, out / "lr_sweep.jsonl", began, no_probe=True)
        rates = best_rates(out / "lr_sweep.jsonl", tasks)
        (out / "rates.json").write_text(json.dumps(rates))
        print(f"learning rates: {rates}" + (f" ({left} sweep jobs not started)" if left else ""))
    jobs = [(t, r, int(s), rates[t]) for first in (True, False) for t in tasks for s in args.seeds.split(",")
            for r in ranks if (r <= 64) == first]
    left = run_pool(args, jobs, out / "results.jsonl", began, args.no_probe)
    print(f"{sum(1 for _ in open(out / 'results.jsonl'))} jobs done in {time.time() - began:.0f} s; "
          f"{left} not started")


if __name__ == "__main__":
    main()
