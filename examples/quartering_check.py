"""Would a margin make "lower r" safe? The probe's quartered arm against retraining (reports/rank_advice.md).

"Lower r" reads the halving cost ``h`` (the update cut to r/2 and continued); on some tasks a rank-r/2 adapter trained
from scratch does worse than that truncation. The quartering cost ``q`` (cut to r/4) asks whether even the top
quarter of the rank carries the held-out value, which leaves the retrained r/2 a factor of two of slack:

    lower r  when  h < T  and  q < Q

Each argument is TASK=GROUND_TRUTH=QUARTERING: the task's calibration grid (examples/rank_verdict_grid.py results,
which give what retraining said: halving kept the metric, or lost beyond 2 SE) and a grid of the same adapters run
again with the quartered arm (its ``probe.<fraction>.halving`` and ``.quartering``). Prints, for each T and Q, how
often "lower r" fires where the retrained r/2 kept the metric and where it lost, pooled over the tasks.

    python examples/quartering_check.py fashion-mirror=reports/rank_advice/verdict/fashion-mirror.jsonl=\\
        reports/rank_advice/verdict/quartering/fashion-mirror.jsonl ...
"""

import argparse
import json

from rank_verdict_calibration import load

HALVING = (0.005, 0.01, 0.015, 0.02, 0.03)
QUARTERING = (0.02, 0.03, 0.05, float("inf"))


def measured(task: str, truth: str, quartering: str, fraction: str) -> list[tuple[bool, bool, float, float | None]]:
    """(kept, lost, h, q) of every adapter at r >= 2 that both grids hold."""
    cases = {(c.rank, c.seed): c for c in load(task, truth, fraction)[1]}
    found = []
    for line in open(quartering):
        row = json.loads(line)
        case, probe = cases.get((row["rank"], row["seed"])), row["probe"][fraction]
        if case is None or probe["halving"] is None or not (case.kept or case.lost):
            continue
        quarter = probe.get("quartering")
        found.append((bool(case.kept), bool(case.lost), probe["halving"]["loss"] / probe["same_loss"],
                      None if quarter is None else quarter["loss"] / probe["same_loss"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fraction", default="0.2")
    parser.add_argument("tasks", nargs="+", metavar="TASK=GROUND_TRUTH=QUARTERING")
    args = parser.parse_args()
    cases = [c for item in args.tasks for c in measured(*item.split("="), args.fraction)]
    kept, lost = [c for c in cases if c[0]], [c for c in cases if c[1]]
    both = sum(1 for c in cases if c[0] and c[1])
    print(f"{len(kept)} adapters whose halved rank kept the metric, {len(lost)} whose halved rank lost "
          f"({both} both)\n")
    print("| h below | " + " | ".join(f"q below {q:g}" for q in QUARTERING) + " |")
    print("|---|" + "---|" * len(QUARTERING))
    for t in HALVING:
        cells = []
        for q in QUARTERING:
            fires = lambda c: c[2] < t and (c[3] is None or c[3] < q)  # noqa: E731
            cells.append(f"{sum(map(fires, kept))}/{len(kept)} kept, {sum(map(fires, lost))}/{len(lost)} lost")
        print(f"| {t:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
