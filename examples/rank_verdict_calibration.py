"""Calibrate and check analyze's probe verdict against retraining (reports/rank_advice.md).

Each argument is TASK=RESULTS, a results.jsonl written by examples/rank_verdict_grid.py (one line per adapter: task,
rank, seed, held-out metric after training, the probe's differences), or TASK=RESULTS=PROBES where PROBES is a grid of
the same adapters run again with the quartered arm (examples/quartering_check.py): its probe replaces the first
one's for the adapters it holds, the retraining ground truth stays the first grid's. Prints, in Markdown: per rank
the retraining ground truth (mean +- sd over seeds, doubling and halving beyond noise) beside every adapter's probe
numbers; the
thresholds fitted on all tasks and their confusion table; each task judged with thresholds fitted on the others
(leave one task out), with the four rates the verdict is held to; and how often the verdict disagrees with the
data-free rule "raise r when r <= 32". Adapters whose same-rank continuation says training had not finished
(``verdict.unfinished``) are left out: ``analyze --data`` gives them no rank verdict. --json FILE writes the cases.

Usage: python examples/rank_verdict_calibration.py [--json FILE] [--fraction F] TASK=RESULTS[=PROBES] ...
(F: the shipped scoring point)
"""

import argparse
import json
from collections import defaultdict
from dataclasses import asdict

from calibration import (Case, Thresholds, confusion, fit, leave_one_task_out, nested_leave_one_task_out, rates,
                         verdict)
from lowrank.advice import ground_truth
from lowrank.advice.sufficiency.probe import Difference
from lowrank.advice.sufficiency import verdict as shipped

VERDICTS = ("raise r", "adequate", "lower r")


def load(task: str, path: str, fraction: str, probes: str = "") -> tuple[list[dict], list[Case]]:
    rows = [json.loads(line) for line in open(path)]
    if probes:
        again = {(row["rank"], row["seed"]): row["probe"] for row in map(json.loads, open(probes))}
        rows = [row | {"probe": again.get((row["rank"], row["seed"]), row["probe"])} for row in rows]
    metric = "accuracy" if "accuracy" in rows[0]["final"] else "loss"
    scores = defaultdict(list)
    for row in rows:
        scores[row["rank"]].append(row["final"][metric] * (100 if metric == "accuracy" else 1))
    grid = [ground_truth.RankScores(r, tuple(v)) for r, v in sorted(scores.items())]
    helped = {s.rank: s.beyond_noise for s in ground_truth.doubling(grid, metric)}
    halving = {s.rank: s for s in ground_truth.halving(grid, metric)}
    floor = 100 * ground_truth.ACCURACY_FLOOR if metric == "accuracy" else None
    cases, judged = [], []
    for row in rows:
        probe = row["probe"][fraction]
        continuation = probe["continuation"]
        if continuation and shipped.unfinished(Difference(**continuation)):
            continue  # analyze calls it "not converged" and gives no rank verdict
        judged.append(row)
        same = probe["same_loss"]
        gain, cost, quarter = probe["doubling"], probe["halving"], probe.get("quartering")
        step = halving.get(row["rank"])
        kept = None if step is None else step.difference >= -max(step.se, floor or 0.0)
        cases.append(Case(task, row["rank"], row["seed"],
                          gain and gain["loss"] / same, gain and gain["loss_se"] / same, cost and cost["loss"] / same,
                          helped.get(row["rank"]), kept, None if step is None else step.difference < -2 * step.se,
                          quarter and quarter["loss"] / same))
    return judged, cases


def describe(t: Thresholds) -> str:
    """The rule in words: its thresholds."""
    first = "" if t.first_gain is None else f" ({t.first_gain:g} at r = 1)"
    quarter = "" if t.lower_quarter == float("inf") else f" and quartering cost < {t.lower_quarter:g}"
    return (f"raise gain > {t.raise_gain:g}{first} or halving cost > {t.raise_cost:g}, lower below "
            f"{t.lower_cost:g}{quarter}")


def table(cases: list[Case], t: Thresholds) -> str:
    lines = ["| retraining says | " + " | ".join(VERDICTS) + " |", "|---|---|---|---|"]
    for truth, counts in sorted(confusion(cases, t).items()):
        lines.append(f"| {truth} | " + " | ".join(str(counts.get(v, 0)) for v in VERDICTS) + " |")
    return "\n".join(lines)


def rate_line(cases: list[Case], t: Thresholds) -> str:
    r = rates(cases, t)
    parts = [("raise when doubling helped", r.raise_when_helped), ("no raise when it did not", r.no_raise_when_not),
             ("lower when halving kept", r.lower_when_kept), ("lower when halving lost", r.lower_when_lost)]
    return "; ".join(f"{name} {a}/{b}" + (f" ({100 * a / b:.0f}%)" if b else "") for name, (a, b) in parts)


def pooled_lines(judged: list[tuple[list[Case], Thresholds]], title: str = "Pooled over held-out tasks") -> str:
    """The four rates summed over the tasks, each task's cases judged with its own thresholds, and how
    often the verdict disagrees with the data-free rule "raise r when r <= 32"."""
    per_task = [rates(cases, t) for cases, t in judged]
    names = ("helped", "not", "kept", "lost")
    fields = ("raise_when_helped", "no_raise_when_not", "lower_when_kept", "lower_when_lost")
    counts = [tuple(map(sum, zip(*(getattr(r, field) for r in per_task)))) for field in fields]
    said = [(case, verdict(case, t)) for cases, t in judged for case in cases]
    differs = sum((v == "raise r") != (case.rank <= 32) for case, v in said)
    return (f"{title}: " + "; ".join(f"{k} {a}/{b}" for k, (a, b) in zip(names, counts)) + "\n\n"
            f"Disagreement with 'raise r when r <= 32': {differs} of {len(said)} adapters\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    parser.add_argument("--fraction", default=str(shipped.PROBE_FRACTION))
    parser.add_argument("tasks", nargs="+", metavar="TASK=RESULTS[=PROBES]")
    args = parser.parse_args()
    sources = [item.split("=", 2) for item in args.tasks]
    cases, rows = [], {}
    for source in sources:
        rows[source[0]], found = load(*source[:2], args.fraction, *source[2:])
        cases += found
    fitted = fit(cases)
    unfinished = sum(1 for source in sources for _ in open(source[1])) - len(cases)
    print(f"{len(cases)} adapters; {unfinished} left out that the probe's continuation calls not converged (no rank "
          "verdict)\n")
    print(f"## Fitted on all tasks: {describe(fitted)}\n")
    print(table(cases, fitted) + "\n\n" + rate_line(cases, fitted) + "\n")
    for task in rows:
        print(f"### {task}: per rank\n\n| r | mean ± sd | doubling helps | halving keeps | g % per seed | h % per seed "
              "| q % per seed | verdict per seed |\n|---|---|---|---|---|---|---|---|")
        by_rank = defaultdict(list)
        for case, row in zip([c for c in cases if c.task == task], rows[task]):
            by_rank[case.rank].append((case, row))
        for rank, items in sorted(by_rank.items()):
            accs = [100 * row["final"].get("accuracy", 0) for _, row in items]
            mean = sum(accs) / len(accs)
            sd = (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
            first = items[0][0]
            fmt = lambda xs: ", ".join("-" if x is None else f"{100 * x:+.2f}" for x in xs)
            print(f"| {rank} | {mean:.2f} ± {sd:.2f} | {first.helped} | {first.kept} | {fmt(c.gain for c, _ in items)} "
                  f"| {fmt(c.cost for c, _ in items)} | {fmt(c.quarter for c, _ in items)} "
                  f"| {', '.join(verdict(c, fitted) for c, _ in items)} |")
        print()
    rule = Thresholds(shipped.RAISE_GAIN, shipped.RAISE_COST, shipped.LOWER_COST, shipped.FIRST_GAIN,
                      shipped.LOWER_QUARTER)
    print(f"## The shipped rule ({describe(rule)}, scored at {shipped.PROBE_FRACTION} of the run) on each task\n")
    for task in rows:
        print(f"- {task}: {rate_line([c for c in cases if c.task == task], rule)}")
    both = sum(1 for c in cases if c.kept and c.lost)
    print("\n" + pooled_lines([([c for c in cases if c.task == task], rule) for task in rows], "Pooled") +
          f"\nAdapters whose halved rank both kept the metric (within max(SE, floor)) and lost beyond 2 SE: {both}\n")
    print("## Leave one task out\n")
    held = []
    for task, (t, own) in leave_one_task_out(cases).items():
        held.append((own, t))
        print(f"### {task} held out: {describe(t)}\n\n{table(own, t)}\n\n{rate_line(own, t)}\n")
    if held:
        print(pooled_lines(held))
    fractions = sorted({f for task_rows in rows.values() for f in task_rows[0]["probe"]})
    cases_at = {f: [c for source in sources for c in load(*source[:2], f, *source[2:])[1]] for f in fractions}
    nested = nested_leave_one_task_out(cases_at)
    if nested:
        print("## Leave one task out, the scoring point chosen on the other tasks too\n")
        print("| held-out task | scoring point | rule | rates |\n|---|---|---|---|")
        for task, (fraction, t, own) in nested.items():
            print(f"| {task} | {fraction} | {describe(t)} | {rate_line(own, t)} |")
        print("\n" + pooled_lines([(own, t) for _, t, own in nested.values()]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"fitted": asdict(fitted), "cases": [asdict(c) for c in cases]}, handle, indent=1)


if __name__ == "__main__":
    main()
