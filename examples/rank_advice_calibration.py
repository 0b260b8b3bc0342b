"""Calibrate and check analyze's sufficiency verdicts against retraining (reports/rank_advice.md).

Each argument is TASK=FOLDERS[@SIGNAL_FOLDERS]: sweep folders (`lowrank sweep` outputs, several for a learning-rate
grid) give the ground truth, each rank at its best learning rate; adapters' signals come from signals.json beside
each run, or from SIGNAL_FOLDERS (runs of the same rank, seed and rate re-trained with signals measured, or
signals2.json files measured later). Prints the per-rank ground truth with every adapter's signal-to-noise, the
thresholds fitted on all tasks, the confusion table, and leave-one-task-out checks; --json FILE writes the cases.

Usage: python examples/rank_advice_calibration.py [--json FILE] TASK=FOLDER[,FOLDER...][@FOLDER,...] ...
"""

import json
import sys
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path

from lowrank.advice.calibration import Case, Thresholds, confusion, fit, leave_one_task_out
from lowrank.advice.sufficiency import (LOWER_BELOW, RAISE_ABOVE, Signals, model_doubling_gain,
                                        model_signal_to_noise)
from lowrank.advice.sweep import tabulate

VERDICTS = ("raise r", "adequate", "lower r")
FIELDS = {f.name for f in fields(Signals)}


def _signals(run: Path) -> list[Signals] | None:
    for name in ("signals2.json", "signals.json"):
        path = run / name
        if path.is_file():
            modules = json.loads(path.read_text())["modules"].values()
            if all("noise_energy" in m for m in modules):
                return [Signals(**{k: v for k, v in m.items() if k in FIELDS}) for m in modules]
    return None


def _signal_runs(folders: list[str]) -> dict[tuple[int, int, float], list[Signals]]:
    found = {}
    for folder in folders:
        for metrics_file in Path(folder).glob("lora-*/metrics.json"):
            metrics = json.loads(metrics_file.read_text())
            signals = _signals(metrics_file.parent)
            if signals:
                config = metrics["config"]
                found[(config["rank"], config["seed"], config["lr"])] = signals
    return found


def cases_of(task: str, truth: list[str], signal_folders: list[str]) -> tuple[dict, list[Case], dict]:
    table = tabulate(*truth)
    best_lr = {row["rank"]: row["lr"] for row in table["ranks"]}
    raise_truth = {s["rank"]: s["beyond_noise"] for s in table["doubling"]}
    lower_truth = {s["rank"]: s["beyond_noise"] for s in table["halving"]}
    signals = _signal_runs(truth + signal_folders)
    cases, gains = [], {}
    for (rank, seed, lr), found in sorted(signals.items()):
        if lr == best_lr.get(rank):
            cases.append(Case(task, rank, seed, model_signal_to_noise(found), raise_truth.get(rank),
                              lower_truth.get(rank)))
            gains[(rank, seed)] = model_doubling_gain(found)
    return table, cases, gains


def markdown_confusion(table: dict[str, Counter]) -> str:
    lines = ["| retraining says | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for truth in ("doubling helps", "neither", "halving keeps"):
        if truth in table:
            lines.append(f"| {truth} | " + " | ".join(str(table[truth][v]) for v in VERDICTS) + " |")
    return "\n".join(lines)


def _step(steps: dict, rank: int, scale: float, yes: str, no: str) -> str:
    if rank not in steps:
        return ""
    return f"{scale * steps[rank]['difference']:+.2f} ({yes if steps[rank]['beyond_noise'] else no})"


def main(arguments: list[str]) -> None:
    json_path = None
    if arguments[:1] == ["--json"]:
        json_path, arguments = arguments[1], arguments[2:]
    everything, tables = [], {}
    for argument in arguments:
        task, _, folders = argument.partition("=")
        truth, _, signal_folders = folders.partition("@")
        table, cases, gains = cases_of(task, truth.split(","), signal_folders.split(",") if signal_folders else [])
        everything += cases
        tables[task] = {key: value for key, value in table.items() if key != "runs"}
        scale = 100 if table["metric"] == "accuracy" else 1
        print(f"\n### {task} ({table['metric']}; r* = {table['sufficient_rank']})\n")
        print("| r | lr | mean ± sd | doubling r | halving r | signal/noise per seed | doubling gain |")
        print("|---|---|---|---|---|---|---|")
        doubling = {s["rank"]: s for s in table["doubling"]}
        halving = {s["rank"]: s for s in table["halving"]}
        for row in table["ranks"]:
            r = row["rank"]
            ratios = ", ".join(f"{c.statistic:.2f}" for c in cases if c.rank == r)
            gain = ", ".join(f"{g:.4f}" for (rank, _), g in gains.items() if rank == r)
            print(f"| {r} | {row['lr']:g} | {scale * row['mean']:.2f} ± {scale * row['sd']:.2f} | "
                  f"{_step(doubling, r, scale, 'helps', 'noise')} | {_step(halving, r, scale, 'keeps', 'hurts')} | "
                  f"{ratios} | {gain} |")
        if table["full"]:
            full = table["full"]
            print(f"| full | {full['lr']:g} | {scale * full['mean']:.2f} ± {scale * full['sd']:.2f} | | | | |")
    thresholds = fit(everything)
    used = Thresholds(RAISE_ABOVE, LOWER_BELOW)
    print(f"\n### All tasks: fitted raise above {thresholds.raise_above:.3f}, lower below "
          f"{thresholds.lower_below:.3f}; lowrank uses {used.raise_above:g} and {used.lower_below:g}\n")
    print(markdown_confusion(confusion(everything, used)))
    held_out = leave_one_task_out(everything)
    for task, (fitted, table) in held_out.items():
        print(f"\n### {task} held out: raise above {fitted.raise_above:.3f}, lower below {fitted.lower_below:.3f}\n")
        print(markdown_confusion(table))
    if json_path:
        held = {task: asdict(fitted) for task, (fitted, _) in held_out.items()}
        Path(json_path).write_text(json.dumps({"tasks": tables, "cases": [asdict(c) for c in everything],
                                               "fitted": asdict(thresholds), "held_out": held}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
