"""The table of reports/rank_advice.md for `examples/suggest_rank_validation.sh` outputs: per task and allocation,
held-out accuracy (language models: loss) mean ± sd over seeds, trainable parameters, and the difference from uniform rank paired by seed
(mean ± SE), plus the signal's suggested uniform rank and its cost.

Usage: python examples/suggest_rank_table.py ROOT [ROOT ...]
"""

import json
import statistics
import sys
from pathlib import Path

ARMS = ("uniform", "gradient", "probe", "eva")


def _scores(folder: Path, arm: str) -> dict[int, tuple[float, int]]:
    found = {}
    for metrics_file in sorted(folder.glob(f"{arm}-s*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        final = metrics["final"]
        score = 100 * final["accuracy"] if "accuracy" in final else final["loss"]
        found[metrics["config"]["seed"]] = (score, metrics["trainable_parameters"])
    return found


def main(roots: list[str]) -> None:
    print("| task | allocation | accuracy % or loss (3 seeds) | trainable parameters | paired difference vs uniform | "
          "suggested uniform r | signal time |")
    print("|---|---|---|---|---|---|---|")
    for root in roots:
        for task in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            uniform = _scores(task, "uniform")
            for arm in ARMS:
                scores = _scores(task, arm)
                if not scores:
                    continue
                values = [a for a, _ in scores.values()]
                paired = [scores[s][0] - uniform[s][0] for s in scores if s in uniform]
                digits = 2 if values[0] > 20 else 4  # accuracy in % or a loss
                difference = (f"{statistics.fmean(paired):+.{digits}f} ± "
                              f"{statistics.stdev(paired) / len(paired) ** 0.5:.{digits}f}"
                              if arm != "uniform" and len(paired) > 1 else "")
                evidence = task / f"{arm}-evidence.json"
                extra = ("", "")
                if evidence.is_file():
                    data = json.loads(evidence.read_text())
                    extra = (str(data["global_rank"]), f"{data['seconds']:.1f} s")
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                print(f"| {task.name} | {arm} | {statistics.fmean(values):.{digits}f} ± {sd:.{digits}f} | "
                      f"{next(iter(scores.values()))[1]:,} | {difference} | {extra[0]} | {extra[1]} |")


if __name__ == "__main__":
    main(sys.argv[1:])
