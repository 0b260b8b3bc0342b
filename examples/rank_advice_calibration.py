"""Calibrate and check analyze's sufficiency verdicts against retraining (reports/rank_advice.md).

Reads sweep folders (`lowrank sweep` outputs with signals.json per adapter), groups them by task, keeps each rank at
its best learning rate, and prints: the per-rank ground truth, every adapter's doubling gain against what doubling
and halving did, the thresholds fitted on all tasks, the confusion table, and leave-one-task-out checks.

Usage: python examples/rank_advice_calibration.py TASK=FOLDER[,FOLDER...] [TASK=...]
"""

import sys
from collections import Counter

from lowrank.advice.calibration import Case, confusion, fit, leave_one_task_out
from lowrank.advice.sufficiency import model_doubling_gain, Signals
from lowrank.training.sweep import tabulate

VERDICTS = ("raise r", "adequate", "lower r")


def cases_of(task: str, folders: list[str]) -> tuple[dict, list[Case]]:
    table = tabulate(*folders)
    best_lr = {row["rank"]: row["lr"] for row in table["ranks"]}
    raise_truth = {s["rank"]: s["beyond_noise"] for s in table["doubling"]}
    lower_truth = {s["rank"]: s["beyond_noise"] for s in table["halving"]}
    cases = []
    for run in table["runs"]:
        if run["method"] != "lora" or run["lr"] != best_lr[run["rank"]] or not run["signals"]:
            continue
        signals = [Signals(**{k: v for k, v in m.items() if k != "doubling_gain"})
                   for m in run["signals"]["modules"].values()]
        cases.append(Case(task, run["rank"], run["seed"], model_doubling_gain(signals),
                          raise_truth.get(run["rank"]), lower_truth.get(run["rank"])))
    return table, sorted(cases, key=lambda c: (c.rank, c.seed))


def markdown_confusion(table: dict[str, Counter]) -> str:
    lines = ["| retraining says | " + " | ".join(VERDICTS) + " |", "|---|" + "---|" * len(VERDICTS)]
    for truth in ("doubling helps", "neither", "halving keeps"):
        if truth in table:
            lines.append(f"| {truth} | " + " | ".join(str(table[truth][v]) for v in VERDICTS) + " |")
    return "\n".join(lines)


def main(arguments: list[str]) -> None:
    everything = []
    for argument in arguments:
        task, _, folders = argument.partition("=")
        table, cases = cases_of(task, folders.split(","))
        everything += cases
        metric = table["metric"]
        scale = 100 if metric == "accuracy" else 1
        print(f"\n### {task} ({metric}; r* = {table['sufficient_rank']})\n")
        print("| r | lr | mean ± sd | doubling r | halving r | gains (per seed) |\n|---|---|---|---|---|---|")
        dbl = {s["rank"]: s for s in table["doubling"]}
        hlv = {s["rank"]: s for s in table["halving"]}
        for row in table["ranks"]:
            r = row["rank"]
            d = f"{scale * dbl[r]['difference']:+.2f} ({'helps' if dbl[r]['beyond_noise'] else 'noise'})" if r in dbl else ""
            h = f"{scale * hlv[r]['difference']:+.2f} ({'keeps' if hlv[r]['beyond_noise'] else 'hurts'})" if r in hlv else ""
            gains = ", ".join(f"{c.gain:.4f}" for c in cases if c.rank == r)
            print(f"| {r} | {row['lr']:g} | {scale * row['mean']:.2f} ± {scale * row['sd']:.2f} | {d} | {h} | {gains} |")
        if table["full"]:
            full = table["full"]
            print(f"| full | {full['lr']:g} | {scale * full['mean']:.2f} ± {scale * full['sd']:.2f} | | | |")
    thresholds = fit(everything)
    print(f"\n### All tasks: raise above {thresholds.raise_above:.4f}, lower below {thresholds.lower_below:.4f}\n")
    print(markdown_confusion(confusion(everything, thresholds)))
    for task, (fitted, table) in leave_one_task_out(everything).items():
        print(f"\n### {task} held out: raise above {fitted.raise_above:.4f}, lower below {fitted.lower_below:.4f}\n")
        print(markdown_confusion(table))


if __name__ == "__main__":
    main(sys.argv[1:])
